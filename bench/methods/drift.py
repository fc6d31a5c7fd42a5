"""Pieces shared by the client-drift methods (SCAFFOLD, FedNova, FedDyn); registers no method.

Per-client and server vectors of these methods cover the trainable elements only, in the order
of `state[fed.trainable]` ("trainable vectors"): BatchNorm running statistics are averaged, not
corrected. `trainable_pairs` pairs each trainable tensor of a model with its slice of such a
vector, for a gradient correction or a loss term.

Local progress: after local SGD with heavy-ball momentum rho (PyTorch's: buf = rho buf + g,
w -= lr_t buf, dampening 0) and a buffer starting at zero,
  x - y = sum_t lr_t buf_t = sum_k g_k sum_{t>=k} lr_t rho^(t-k),
so the gradients' weights sum to
  A = sum_t lr_t (1 - rho^t) / (1 - rho)          (t = 1..tau)
and (x - y) / A is the weighted average of the gradients g_k. With a constant rate A = lr a_i,
FedNova's a_i = [tau - rho (1 - rho^tau) / (1 - rho)] / (1 - rho) (Wang et al. 2020, Sec. 4);
with rho = 0, A = sum_t lr_t = `FitResult.lr_sum` (SCAFFOLD's K lr_l, any schedule). The running
recursion is JYWa/FedNova's local normalizing vector (counter = rho counter + 1; a += counter),
each step weighted by its learning rate.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn

from bench.engine.federation import Client, Federation
from bench.engine.trainer import FitResult, LossFn, Step

STEP_WEIGHT = "step_weight"  # FitResult.extra key of A, the summed weight of the local gradients


def local_momentum(train: dict) -> float:
    """Heavy-ball momentum rho of the local optimizer: SGD's; 0 for Adam, whose first moment is a
    bias-corrected average (its weights sum to one) that does not amplify the step as
    heavy-ball does, so each Adam step counts as its learning rate."""
    return float(train["momentum"]) if train["optimizer"] == "sgd" else 0.0


@dataclass
class StepWeight:
    """A `before_step` hook summing A = sum_t lr_t (1 - rho^t) / (1 - rho) over a fit's steps."""

    momentum: float
    total: float = 0.0
    gain: float = 0.0  # (1 - rho^t) / (1 - rho): how much the momentum buffer amplifies a constant gradient

    def __call__(self, step: Step) -> None:
        self.gain = self.momentum * self.gain + 1.0
        self.total += step.lr * self.gain


def fit_with_step_weight(fed: Federation, client: Client, *, loss: LossFn | None, extra_loss: LossFn | None,
                         before_step: Callable[[Step], None] | None = None) -> FitResult:
    """`fed.fit` that also reports A in `extra[STEP_WEIGHT]` (after `before_step`, if given, at every step)."""
    weight = StepWeight(local_momentum(fed.config["train"]))

    def hook(step: Step) -> None:
        if before_step is not None:
            before_step(step)
        weight(step)

    fit = fed.fit(client, loss=loss, extra_loss=extra_loss, before_step=hook)
    return dataclasses.replace(fit, extra={**fit.extra, STEP_WEIGHT: weight.total})


def trainable_zeros(fed: Federation) -> torch.Tensor:
    """A zero trainable vector."""
    return fed.global_state.new_zeros(int(fed.trainable.sum()))


def client_vector(fed: Federation, client: Client, key: str) -> torch.Tensor:
    """The client's trainable vector `client.state[key]`; zero until it first reports (the papers'
    initial c_i = 0 and grad L_i = 0), so clients that never take part hold no memory."""
    vector = client.state.get(key)
    return trainable_zeros(fed) if vector is None else vector


def trainable_pairs(fed: Federation, model: nn.Module, vector: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """(tensor of `model`, its slice of the trainable `vector`, shaped like it) per trainable tensor."""
    views = fed.layout.views(fed.global_state.new_zeros(fed.layout.size).masked_scatter(fed.trainable, vector))
    state = model.state_dict(keep_vars=True)
    return [(state[key], views[key]) for key, trainable in zip(fed.layout.keys, fed.layout.trainable.tolist()) if trainable]
