"""q-FFL / q-FedAvg (Li, Sanjabi, Beirami & Smith, "Fair Resource Allocation in Federated
Learning", ICLR 2020, Algorithm 2): clients with a higher loss get more weight, raising the
worst clients' accuracy (q = 0 is FedAvg with unweighted means).

Per round t, with w^t the global model and L = 1/lr (the Lipschitz estimate of Algorithm 2),
each reporting client k runs FedAvg's local training from w^t to wbar_k and sends, with its
model, F_k(w^t): the loss of the received model on its *training* data (`fed.train_loss`,
computed before training; its training labels, noisy ones included). The server then computes
  Delta w_k = L (w^t - wbar_k)
  Delta_k   = F_k^q Delta w_k
  h_k       = q F_k^(q-1) ||Delta w_k||^2 + L F_k^q
  w^{t+1}   = w^t - sum_k Delta_k / sum_k h_k
Choices and sources (the authors' code, litian96/fair_flearn, flearn/trainers/qffedavg.py):
F_k is the mean loss over the whole local training split at w^t, plus 1e-10 as the code; L uses
train.lr (the schedule's start), so the step is meant for plain local SGD (`recipes: paper`).
||Delta w_k||^2 and the step cover trainable tensors; buffers (BatchNorm running statistics)
take FedAvg's sample-weighted mean. q = 1 is fedrank's default (the paper tunes q per dataset);
tune q per study.
Hooks used: train (F_k into FitResult.extra, which the default upload sends), aggregate.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch

from bench.methods import Method, Recipe, hparam, loguniform, register

LOSS_BEFORE = "loss_before"  # Update.extra: F_k(w^t)
EPSILON = 1e-10  # added to F_k, as the reference code


def qffl_step(global_state: torch.Tensor, states: torch.Tensor, losses: torch.Tensor, q: float, lipschitz: float,
              trainable: torch.Tensor) -> torch.Tensor:
    """w^{t+1} on trainable elements (Algorithm 2); `states` (K, P), `losses` (K,) the F_k(w^t)."""
    grads = lipschitz * (global_state - states)[:, trainable]
    powered = (losses + EPSILON).pow(q).to(states.dtype)
    deltas = powered[:, None] * grads
    h = q * (losses + EPSILON).pow(q - 1).to(states.dtype) * grads.pow(2).sum(1) + lipschitz * powered
    stepped = global_state.clone()
    stepped[trainable] = global_state[trainable] - deltas.sum(0) / h.sum()
    return stepped


@register
@dataclass(kw_only=True)
class QFFL(Method):
    """q-FFL: q-FedAvg's step, weighting clients by their loss to the power q (fair accuracy)."""

    name = "qffl"
    mean_of_updates = "its step weights each client's own update by that client's loss to the power q"
    private_training = "it sends each client's loss on its training records, computed outside DP-SGD"
    not_learning = ("L = 1/lr is the Lipschitz estimate of plain SGD; under the default Adam solver ||Delta w_k||^2 = L^2 ||w - wbar_k||^2 "
                    "dwarfs L F_k and the q = 1 step nearly vanishes (it learns under `recipes: paper`'s SGD, or at q = 0)")
    recipe = Recipe(settings={"train.optimizer": "sgd", "train.momentum": 0.0},
                    source="Li et al. ICLR 2020, Algorithm 2: local SGD; L = 1/lr assumes it")
    q: float = hparam(1.0, "fairness q: 0 = FedAvg (unweighted), larger = more weight on high-loss clients", minimum=0,
                      search=loguniform(0.001, 15.0, source="Li et al. ICLR 2020 tune q per dataset; fedrank's log range around q = 1"))

    def train(self, fed, client):
        before = fed.train_loss(client)
        fit = super().train(fed, client)
        return dataclasses.replace(fit, extra={**fit.extra, LOSS_BEFORE: before})

    def aggregate(self, fed, updates):
        losses = torch.tensor([u.extra[LOSS_BEFORE] for u in updates.items], dtype=torch.float64, device=fed.device)
        stepped = qffl_step(fed.global_state, updates.states, losses, self.q, 1 / fed.config["train"]["lr"], fed.trainable)
        return self.shared_only(fed, torch.where(fed.trainable, stepped, self.weighted_mean(updates)))
