"""MDH-FL (Madni, Umer & Foresti, "Federated Learning for Data and Model Heterogeneity in Medical
Imaging", ICIAP 2023 workshops, arXiv 2308.00155): clients with different architectures learn
from each other through their predictions on public data, and train on their private (possibly
noisy) labels with the symmetric cross-entropy.

No code of MDH-FL is public; the paper builds on RHFL (Fang & Ye, CVPR 2022, reference code
FangXiuwen/Robust_FL, HHF/HHF.py and loss.py), whose model zoo and losses it uses, so the details
follow RHFL's code (without its client-confidence re-weighting, which MDH-FL does not describe):

* private training: symmetric CE, alpha * CE + beta * RCE with RCE = -sum_c p_c log(clamp(y_c,
  1e-4, 1)) on softmax p clamped to [1e-7, 1] (Wang et al. 2019); RHFL's alpha = 0.1, beta = 1;
* alignment, before private training each round: client k minimises the mean over the other
  clients j of KL(p_j || p_k) on the public images, p = softmax(logits / T) (RHFL: T = 1, equal
  weights 1/(N - 1)). The server sends k the mean of the others' softened predictions: KL to that
  mean differs from the mean of the KLs by a constant, so the gradients are RHFL's, and one tensor
  travels instead of N - 1. `weight` scales this loss (with Adam a constant scale changes
  nothing; it matters with SGD), T^2 keeps its gradient scale independent of T.
* RHFL exchanges outputs batch by batch and makes a fresh Adam step per batch; here the
  predictions travel once per round (what the bytes count) and the alignment is `align_epochs`
  passes of the configured optimizer over the public split.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from bench.methods import hparam, register
from bench.methods.distillation import PublicKnowledge, fit_to_targets, soft_kl, softened

RCE_LOG_FLOOR = 1e-4  # RHFL's clamp of the one-hot labels inside the log of the reverse CE
PROB_FLOOR = 1e-7  # and of the predicted probabilities


def symmetric_cross_entropy(logits: torch.Tensor, labels: torch.Tensor, alpha: float, beta: float) -> torch.Tensor:
    """alpha * CE + beta * reverse CE (Wang et al. 2019), as RHFL's SCELoss computes it."""
    probs = F.softmax(logits, dim=1).clamp(PROB_FLOOR, 1.0)
    one_hot = F.one_hot(labels, logits.shape[1]).float().clamp(RCE_LOG_FLOOR, 1.0)
    reverse = -(probs * one_hot.log()).sum(1).mean()
    return alpha * F.cross_entropy(logits, labels) + beta * reverse


def others_mean(predictions: dict[int, torch.Tensor], client: int, temperature: float) -> torch.Tensor | None:
    """The mean of the other clients' softened predictions (None: no other client has sent any)."""
    others = [softened(p, temperature) for c, p in predictions.items() if c != client]
    return torch.stack(others).mean(0) if others else None


@register
@dataclass(kw_only=True)
class MDHFL(PublicKnowledge):
    """MDH-FL: heterogeneous client models; symmetric CE on private labels, KL alignment to the others' predictions on public data."""

    name = "mdhfl"
    alpha: float = hparam(0.1, "weight of the cross-entropy in the symmetric CE (RHFL: 0.1)", minimum=0)
    beta: float = hparam(1.0, "weight of the reverse cross-entropy in the symmetric CE (RHFL: 1.0)", minimum=0)
    temperature: float = hparam(1.0, "softmax temperature T of the predictions aligned (RHFL: 1)", exclusiveMinimum=0)
    weight: float = hparam(1.0, "weight of the alignment loss T^2 KL(others || own)", minimum=0)
    align_epochs: int = hparam(1, "passes over the public split of alignment per round (RHFL: 1)", minimum=0)

    def client_loss(self, fed, client):
        return lambda batch: symmetric_cross_entropy(batch.logits, batch.y, self.alpha, self.beta)

    def teacher(self, fed, client):
        if not (self.align_epochs and self.weight):
            return None
        return others_mean(self.predictions(fed), client.id, self.temperature)

    def align(self, fed, client, teacher):
        fit_to_targets(fed, client, teacher, lambda logits, probs: self.weight * soft_kl(logits, probs, self.temperature), self.align_epochs)
