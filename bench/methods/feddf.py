"""FedDF (Lin, Kong, Stich & Jaggi, "Ensemble Distillation for Robust Model Fusion in Federated
Learning", NeurIPS 2020; reference code epfml/federated-learning-public-code, codes/FedDF-code,
pcode/aggregation/noise_knowledge_transfer.py): FedAvg, then the server distils the ensemble of
the clients' models into the averaged model on unlabelled public data.

Per round the server (1) averages the reported models of each architecture (sample-weighted:
FedAvg; the reference's `use_fedavg_as_start`), (2) computes every reported model's softened
predictions on the public images and averages them (the ensemble teacher: with equal weights the
reference's mean of the KLs, `avg_losses`, has the gradients of the KL to the mean), and (3)
trains each architecture's model from its average to that teacher with T^2 KL(teacher ||
softmax(student / T)) for `distill_epochs` passes over the public split (labels unused) at
`distill_lr` (reference: Adam 1e-3, T = 1, batch 128, up to 10^4 steps with cosine decay and
early stopping on a validation set; here the configured optimizer and batch size for a fixed
number of passes, as no server validation split exists).

Heterogeneous clients (`architectures`, the reference's per-architecture prototypes): every
architecture has a server model, distilled from the ensemble of *all* reported models; a client
receives its architecture's. The configured model is the global one; it is distilled every round
even when no client uses it, so the server model is always the ensemble's student.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from bench.engine.federation import MAIN, Client, Update
from bench.methods import Method, hparam, register
from bench.methods.distillation import ARCHITECTURE, architecture, fit_to_targets, predict, soft_kl, softened


@register
@dataclass(kw_only=True)
class FedDF(Method):
    """FedDF: FedAvg, then ensemble distillation of the clients' models into the server model on unlabelled public data."""

    name = "feddf"
    requires = ("public_split",)
    mean_of_updates = "the server distils the ensemble of the clients' individual models on the public split"
    architectures: tuple = hparam([], "client models, client i gets entry i mod length (names or model sections; [] = every client the configured model)",
                                  items=ARCHITECTURE)
    temperature: float = hparam(1.0, "softmax temperature T of the distillation (reference: 1)", exclusiveMinimum=0)
    distill_epochs: int = hparam(1, "passes over the public split distilling each server model per round (0 = FedAvg)", minimum=0)
    distill_lr: float = hparam(0.001, "learning rate of the server's distillation (reference: Adam 1e-3)", exclusiveMinimum=0)

    def client_architecture(self, client):
        return architecture(self.architectures, client)

    def personalized(self, fed):
        return any(c.arch != MAIN for c in fed.clients)

    def prototypes(self, fed) -> dict[str, torch.Tensor]:
        """The server models of the architectures other than the configured one, once aggregated."""
        return fed.server.get("prototypes", {})

    def start_state(self, fed, client):
        """A client of another architecture starts from that architecture's server model."""
        prototype = self.prototypes(fed).get(client.arch)
        return super().start_state(fed, client) if prototype is None else prototype

    def current(self, fed, arch: str) -> torch.Tensor:
        """An architecture's server model before this round's aggregation."""
        return fed.global_state if arch == MAIN else self.prototypes(fed).get(arch, fed.initial_states[arch])

    def upload(self, fed, client, fit):
        if client.arch == MAIN:
            return super().upload(fed, client, fit)
        return Update(client.id, client.num_samples, fit, extra={"state": fed.layout_of(client).gather(fed.model_of(client))})

    def aggregate(self, fed, updates):
        groups = reported_by_architecture(fed, updates)
        averages = {arch: weighted_average(states, sizes) for arch, (states, sizes) in groups.items()}
        servers = {arch: averages[arch] if arch in averages else self.current(fed, arch) for arch in fed.layouts}
        if self.distill_epochs:
            teacher = self.ensemble(fed, groups)
            servers = {arch: self.distil(fed, arch, state, teacher, i) for i, (arch, state) in enumerate(servers.items())}
        fed.server["prototypes"] = {arch: state for arch, state in servers.items() if arch != MAIN}
        return servers[MAIN]

    def ensemble(self, fed, groups) -> torch.Tensor:
        """The mean of every reported model's softened predictions on the public split."""
        probs = []
        for arch, (states, _) in groups.items():
            model, layout = fed.models[arch], fed.layouts[arch]
            for state in states:
                layout.scatter(model, state)
                probs.append(softened(predict(model, fed, fed.public), self.temperature))
        return torch.stack(probs).mean(0)

    def distil(self, fed, arch: str, start: torch.Tensor, teacher: torch.Tensor, index: int) -> torch.Tensor:
        """The architecture's server model after distilling the teacher into it from `start`."""
        model, layout = fed.models[arch], fed.layouts[arch]
        layout.scatter(model, start)
        server = Client(len(fed.clients) + index, fed.public, fed.public[:0], arch=arch)  # the server trains, in its own seed streams
        fit_to_targets(fed, server, teacher, lambda logits, probs: soft_kl(logits, probs, self.temperature), self.distill_epochs,
                       lr=self.distill_lr)
        return layout.gather(model)

    def download_bytes(self, fed, client):
        return fed.layout_of(client).nbytes()

    def upload_bytes(self, fed, client, update):
        return fed.layout_of(client).nbytes()


def reported_by_architecture(fed, updates) -> dict[str, tuple[list[torch.Tensor], list[int]]]:
    """The reported states and sample counts, grouped by the reporting clients' architectures."""
    groups: dict[str, tuple[list[torch.Tensor], list[int]]] = {}
    for row, update in enumerate(updates.items):
        arch = fed.clients[update.client].arch
        states, sizes = groups.setdefault(arch, ([], []))
        states.append(updates.states[row] if arch == MAIN else update.extra["state"])
        sizes.append(update.num_samples)
    return groups


def weighted_average(states: list[torch.Tensor], sizes: list[int]) -> torch.Tensor:
    weights = torch.tensor(sizes, dtype=states[0].dtype, device=states[0].device)
    return (weights / weights.sum()) @ torch.stack(states)
