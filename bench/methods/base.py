"""The method interface: FedAvg's behaviour at every hook; a method overrides only what differs.

Per round the engine calls, for every client: `receive` (load the starting model into the one
shared model object), `train` (local optimisation, using `local_loss`), `upload` (snapshot what
is sent); then `aggregate` once (the server's new global state) and `keep` for every client
(what stays with it); then evaluates `global_model` and each `client_model`. `setup` runs once
before round 1. All mutable state goes into `fed.server` and `client.state`, which the engine
checkpoints; a method instance holds only its hyper-parameters, declared as dataclass fields
with `hparam(default, help, **json_schema_bounds)`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn

from bench.engine.federation import Client, Federation, FitResult, Update, Updates
from bench.engine.trainer import Batch, ExtraLoss

_JSON_TYPES = {bool: "boolean", int: "integer", float: "number", str: "string"}


def hparam(default: Any, help: str, **bounds: Any) -> Any:
    """Declare a hyper-parameter: default, one-line help, JSON-schema bounds (minimum=0, ...)."""
    return dataclasses.field(default=default, metadata={"help": help, "bounds": bounds})


@dataclass(kw_only=True)
class Method:
    name: ClassVar[str] = ""
    has_global_model: ClassVar[bool] = True  # False: no server model to evaluate (local-only)

    # ---- declaration -------------------------------------------------------------------
    @classmethod
    def hparams(cls) -> dict[str, dataclasses.Field]:
        return {f.name: f for f in dataclasses.fields(cls)}

    @classmethod
    def hparam_schema(cls) -> dict:
        """JSON schema of the `method` config section for this method."""
        props: dict[str, dict] = {"name": {"const": cls.name}}
        for name, f in cls.hparams().items():
            number = "number" if isinstance(f.default, float) else _JSON_TYPES[type(f.default)]
            props[name] = {"type": number, "default": f.default, "description": f.metadata["help"], **f.metadata["bounds"]}
        return {"type": "object", "properties": props, "additionalProperties": False}

    @classmethod
    def summary(cls) -> str:
        return (cls.__doc__ or "").strip().splitlines()[0]

    def config(self) -> dict:
        return {"name": self.name, **dataclasses.asdict(self)}

    # ---- what stays with the clients ---------------------------------------------------
    def personal_layers(self, fed: Federation) -> torch.Tensor:
        """Boolean mask over layers that are neither aggregated nor overwritten by the global model."""
        return fed.layout.no_layers()

    def personalized(self, fed: Federation) -> bool:
        """Whether each client's own model differs from the global one (evaluated per client)."""
        return bool(self.personal_layers(fed).any())

    # ---- once ---------------------------------------------------------------------------
    def setup(self, fed: Federation) -> None:
        """Before round 1: initialise server state (`fed.server`) and client state (`client.state`)."""

    # ---- client side --------------------------------------------------------------------
    def receive(self, fed: Federation, client: Client) -> None:
        """Load the client's starting model into `fed.model`: the global state, then its personal layers."""
        fed.layout.scatter(fed.model, fed.global_state)
        kept = client.state.get("personal")
        if kept is not None:
            fed.layout.scatter(fed.model, kept["values"], kept["layers"])

    def local_loss(self, fed: Federation, client: Client) -> ExtraLoss | None:
        """A term added to the cross-entropy during local training (None: plain cross-entropy)."""
        return None

    def train(self, fed: Federation, client: Client) -> FitResult:
        """Local optimisation of `fed.model` on the client's data."""
        return fed.fit(client, extra_loss=self.local_loss(fed, client))

    def upload(self, fed: Federation, client: Client, fit: FitResult) -> Update:
        """What the client sends: its float state (snapshotted into `fed.uploads[client.id]`)."""
        fed.layout.gather(fed.model, out=fed.uploads[client.id])
        return Update(client.id, client.num_samples, fit)

    # ---- server side --------------------------------------------------------------------
    def aggregate(self, fed: Federation, updates: Updates) -> torch.Tensor:
        """The new global state: the sample-count-weighted mean of the clients' states."""
        samples = updates.num_samples
        weights = samples / samples.sum()
        return self.shared_only(fed, weights @ updates.states)

    def keep(self, fed: Federation, client: Client) -> None:
        """After aggregation: the client keeps its personal layers from this round's local model."""
        layers = self.personal_layers(fed)
        if layers.any():
            client.state["personal"] = {"layers": layers.clone(), "values": fed.layout.select(fed.uploads[client.id], layers)}

    # ---- evaluation and accounting ------------------------------------------------------
    def global_model(self, fed: Federation) -> nn.Module | None:
        """The server's model for evaluation on the global test set (None: there is none)."""
        if not self.has_global_model:
            return None
        fed.layout.scatter(fed.model, fed.global_state)
        return fed.model

    def client_model(self, fed: Federation, client: Client) -> nn.Module:
        """The client's own model: what it would start the next round from."""
        self.receive(fed, client)
        return fed.model

    def bytes_per_round(self, fed: Federation) -> int:
        """Bytes sent in one round: every client downloads and uploads the shared float state."""
        return 2 * len(fed.clients) * fed.layout.nbytes(~self.personal_layers(fed))

    # ---- helpers for subclasses ---------------------------------------------------------
    def shared_only(self, fed: Federation, new_state: torch.Tensor) -> torch.Tensor:
        """`new_state` on shared layers, the current global state on personal ones."""
        personal = self.personal_layers(fed)
        if not personal.any():
            return new_state
        return torch.where(fed.layout.expand(personal.to(fed.device)), fed.global_state, new_state)


def proximal_term(fed: Federation, mu: float, layers: torch.Tensor) -> ExtraLoss | None:
    """(mu/2) * sum ||w - w_g||^2 over the trainable tensors of `layers` (FedProx; FedLSC Eq.7).

    w_g is this round's global state, which does not change during local training."""
    if mu == 0:
        return None
    state = fed.model.state_dict(keep_vars=True)
    reference = fed.layout.views(fed.global_state)
    use = (layers.cpu() & fed.layout.trainable).tolist()
    pairs = [(state[k], reference[k]) for k, chosen in zip(fed.layout.keys, use) if chosen]

    def term(batch: Batch) -> torch.Tensor:
        return mu / 2 * torch.stack([(w - g).pow(2).sum() for w, g in pairs]).sum()

    return term if pairs else None
