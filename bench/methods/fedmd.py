"""FedMD (Li & Wang, "FedMD: Heterogenous Federated Learning via Model Distillation", NeurIPS 2019
workshop; reference code diogenes0319/FedMD_clean, FedMD.py): clients with different models agree
on a consensus over public data.

Each round every client sends its logits (class scores before the softmax) on the public images;
the server averages them over the clients, itself included, into the consensus; each client then
*digests* it, fitting its logits to the consensus with the mean absolute error (the reference
compiles its logit model with Keras' "mean_absolute_error", `N_logits_matching_round` = 1 epoch),
and *revisits* its private data with the cross-entropy (`train.local_epochs`; the reference: 4).

Choices: the whole public split is the alignment set every round (the reference draws
N_alignment = 5000 of CIFAR-10's 50,000 each round; the public split here is a few hundred to a
few thousand images); the paper's transfer-learning phase (training on the labelled public set
before the rounds) is left out, because the public split here is a share of the same data set and
training on its labels would give FedMD labelled data that no other method sees; round 1 is the
private training that phase ends with.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from bench.methods import hparam, register
from bench.methods.distillation import PublicKnowledge, fit_to_targets


def consensus(predictions: dict[int, torch.Tensor]) -> torch.Tensor | None:
    """The mean of every client's logits (None: none sent yet)."""
    return torch.stack(list(predictions.values())).mean(0) if predictions else None


def mean_absolute_error(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    return (logits - targets).abs().mean()


@register
@dataclass(kw_only=True)
class FedMD(PublicKnowledge):
    """FedMD: heterogeneous client models; digest the consensus logits on public data (MAE), then revisit the private data."""

    name = "fedmd"
    digest_epochs: int = hparam(1, "passes over the public split fitting the consensus per round (reference: 1)", minimum=0)

    def teacher(self, fed, client):
        return consensus(self.predictions(fed)) if self.digest_epochs else None

    def align(self, fed, client, teacher):
        fit_to_targets(fed, client, teacher, mean_absolute_error, self.digest_epochs)
