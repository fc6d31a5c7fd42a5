"""MOON (Li, He & Song, "Model-Contrastive Federated Learning", CVPR 2021): FedAvg whose local
loss pulls each sample's representation towards the global model's and away from the client's
previous local model's.

Per local step, for a batch with representations z = R_w(x) (local model, trained),
z_glob = R_{w^t}(x) (this round's global model, frozen) and z_prev = R_{w_i^{t-1}}(x) (the
client's model after the last round it reported in, frozen), with sim the cosine similarity
(equations numbered here, not as in the paper):
  (1)  l_con = -log[ exp(sim(z, z_glob)/tau) / (exp(sim(z, z_glob)/tau) + exp(sim(z, z_prev)/tau)) ]
             = softplus((sim(z, z_prev) - sim(z, z_glob)) / tau)        (the same number)
  (2)  loss  = CE(head(z), y) + mu * mean_batch(l_con)
Aggregation is FedAvg's; w_i^{t-1} is kept in client state as a flat vector.

Choices and sources:
- R_w is everything before the output layer. With `projection` (default on, as the paper and
  the reference code's `use_project_head=1`) it is the base encoder followed by a 2-layer MLP
  projection head (width -> width -> 256, `ModelFedCon` in QinbinLi/MOON model.py: l1, ReLU, l2),
  and the classifier reads the projected vector (`l3` on the projection output); the projection
  head is part of the model, so it is aggregated like the rest. Built by the `model` hook as the
  composite's `body`.
- mu = 1: the reference code's default and the paper's tuned value for CIFAR-100 and
  Tiny-ImageNet (5 for CIFAR-10); tau = 0.5, the paper's and the code's value.
- The frozen global and previous models run in eval mode (BatchNorm running statistics) with no
  gradient, as in the reference code (`.eval()`, `requires_grad = False`), each in its own extra
  model object.
- No previous model yet (round 1, or a client's first participation): the reference code's pool
  of previous models is empty in round 1, so its logits hold only the positive pair and l_con is
  exactly 0; here every first participation does the same (no term). The code would later use a
  never-trained per-client network for a client first sampled after round 1; fedrank's clients
  share one initial model, so that case is treated like round 1.
- The global model is evaluated as FedAvg's (MOON is not a personalised method: every client's
  model is the global one, so `personalized` stays False and the headline is the global model).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from bench.methods import Method, Recipe, hparam, loguniform, register
from bench.methods.model_copies import holding

PREVIOUS_MODEL = "previous_model"  # client.state key: the client's last uploaded state w_i^{t-1}


class ProjectedEncoder(nn.Module):
    """MOON's R_w: the base encoder, then the projection head (Linear, ReLU, Linear)."""

    def __init__(self, encoder: nn.Module, width: int, out_dim: int):
        super().__init__()
        self.encoder = encoder
        self.projection = nn.Sequential(nn.Linear(width, width), nn.ReLU(), nn.Linear(width, out_dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.projection(self.encoder(x))


def model_contrastive_loss(z: torch.Tensor, z_glob: torch.Tensor, z_prev: torch.Tensor, tau: float) -> torch.Tensor:
    """(1), averaged over the batch."""
    positive = F.cosine_similarity(z, z_glob, dim=-1)
    negative = F.cosine_similarity(z, z_prev, dim=-1)
    return F.softplus((negative - positive) / tau).mean()


@register
@dataclass(kw_only=True)
class MOON(Method):
    """MOON: FedAvg plus a model-contrastive term (global vs. previous local representation)."""

    name = "moon"
    recipe = Recipe(settings={"train.optimizer": "sgd", "train.momentum": 0.9, "train.weight_decay": 1e-5},
                    source="Li, He & Song CVPR 2021, Sec. 4.1: SGD, momentum 0.9, weight decay 1e-5")
    mu: float = hparam(1.0, "weight mu of the model-contrastive term", minimum=0,
                       search=loguniform(0.1, 10.0, source="Li, He & Song CVPR 2021, Sec. 4.1: the best mu of {0.1, 1, 5, 10}"))
    tau: float = hparam(0.5, "temperature tau of the model-contrastive term", exclusiveMinimum=0)
    projection: bool = hparam(True, "a 2-layer MLP projection head before the classifier (the paper's R_w)")
    projection_dim: int = hparam(256, "output width of the projection head", minimum=1)

    def model(self, base, spec):
        if not self.projection:
            return base
        base.body = ProjectedEncoder(base.body, base.head.in_features, self.projection_dim)
        base.head = nn.Linear(self.projection_dim, spec.num_classes)
        return base

    def local_loss(self, fed, client):
        previous = client.state.get(PREVIOUS_MODEL)
        if previous is None or self.mu == 0:
            return None
        reference = holding(fed, "global", fed.global_state).eval()
        last = holding(fed, "previous", previous).eval()

        def term(batch):
            with torch.no_grad():
                z_glob, z_prev = reference.body(batch.x), last.body(batch.x)
            return self.mu * model_contrastive_loss(batch.features, z_glob, z_prev, self.tau)

        return term

    def keep(self, fed, client):
        super().keep(fed, client)
        client.state[PREVIOUS_MODEL] = fed.upload_row(client).clone()
