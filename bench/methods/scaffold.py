"""SCAFFOLD (Karimireddy et al., ICML 2020, Algorithm 1 with option II): control variates correct
the client drift of local steps.

Server state x (the global state) and c; client i keeps c_i (both zero at the start). A client
in S trains from y_i = x with the corrected gradient, then updates its control variate:
  y_i <- y_i - lr (g_i(y_i) - c_i + c)                          every local step (before_step hook)
  c_i+ = c_i - c + (x - y_i) / A_i                              option II
  upload  Delta y_i = y_i - x,  Delta c_i = c_i+ - c_i;  c_i <- c_i+
  x <- x + eta_g (1/|S|) sum_{i in S} Delta y_i
  c <- c + (|S|/N) (1/|S|) sum_{i in S} Delta c_i               N = all clients
A_i is the paper's K lr_l as the summed learning rates of the client's steps (`FitResult.lr_sum`:
right under any schedule and for stragglers' shorter work), generalised to local heavy-ball
momentum rho as sum_t lr_t (1 - rho^t)/(1 - rho) (`drift.StepWeight`; = lr_sum at rho = 0, the
paper's SGD): x - y_i is A_i times the mean corrected gradient, so c_i+ stays a mean gradient
instead of growing up to 1/(1 - rho) = 10x at the default rho = 0.9.

Choices: the means over S are unweighted and c steps by (1/N) sum Delta c_i, as the paper and
FL-bench (KarhouTam/FL-bench, src/server/scaffold.py); the fixed point then minimises the
unweighted (1/N) sum f_i, the paper's objective (FedAvg here weights by samples). Control
variates cover trainable tensors only (`fed.trainable`); BatchNorm buffers are averaged. The
correction is added before gradient clipping and the optimizer step, as FL-bench's client
(src/client/scaffold.py); a tensor the loss does not reach gets gradient c - c_i. Option II's
c_i+ estimates a gradient only for SGD-type solvers: with Adam (train.optimizer's default) it is
Adam's mean step direction, on another scale than the gradients it corrects; use sgd.
Bytes: a participant downloads x and c; a reporting client uploads Delta y (its whole float
state, buffers included) and Delta c (trainable elements).
Hooks used: setup, train, aggregate, download_bytes, upload_bytes.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch

from bench.methods import Method, Recipe, hparam, register
from bench.methods.drift import STEP_WEIGHT, client_vector, fit_with_step_weight, trainable_pairs, trainable_zeros

CONTROL = "control"  # fed.server: c; client.state: c_i (trainable vectors)
DELTA_CONTROL = "delta_control"  # FitResult.extra: Delta c_i


def corrected_gradients(pairs: list[tuple[torch.Tensor, torch.Tensor]]) -> None:
    """g <- g + (c - c_i) for each (parameter, its slice of c - c_i); a missing gradient counts as zero."""
    for param, correction in pairs:
        if param.grad is None:
            param.grad = correction.clone()
        else:
            param.grad.add_(correction)


def updated_control(own: torch.Tensor, server: torch.Tensor, start: torch.Tensor, end: torch.Tensor, step_weight: float) -> torch.Tensor:
    """Option II: c_i+ = c_i - c + (x - y_i) / A_i; c_i unchanged by a client that took no step."""
    if step_weight == 0:
        return own
    return own - server + (start - end) / step_weight


@register
@dataclass(kw_only=True)
class Scaffold(Method):
    """SCAFFOLD: control variates c, c_i correct local gradients by c - c_i (option II update)."""

    name = "scaffold"
    mean_of_updates = "the server also needs each client's control-variate update, sent beside the model"
    recipe = Recipe(settings={"train.optimizer": "sgd", "train.momentum": 0.0},
                    source="Karimireddy et al. ICML 2020, Algorithm 1: local SGD steps; option II's c_i estimates an SGD gradient")
    server_lr: float = hparam(1.0, "server learning rate eta_g: x <- x + eta_g * mean(Delta y)", exclusiveMinimum=0)

    def setup(self, fed):
        fed.server[CONTROL] = trainable_zeros(fed)

    def train(self, fed, client):
        """Local steps with the corrected gradient, then option II from the model as it started
        (read from the model: x as received) and as it ended."""
        model, own, server = fed.model_of(client), client_vector(fed, client, CONTROL), fed.server[CONTROL]
        start = fed.layout.gather(model)[fed.trainable]
        pairs = trainable_pairs(fed, model, server - own)
        fit = fit_with_step_weight(fed, client, loss=self.client_loss(fed, client), extra_loss=self.local_loss(fed, client),
                                   before_step=lambda step: corrected_gradients(pairs))
        new = updated_control(own, server, start, fed.layout.gather(model)[fed.trainable], fit.extra[STEP_WEIGHT])
        client.state[CONTROL] = new
        return dataclasses.replace(fit, extra={**fit.extra, DELTA_CONTROL: new - own})

    def aggregate(self, fed, updates):
        x = fed.global_state
        mean = updates.states.mean(0)
        deltas = torch.stack([u.extra[DELTA_CONTROL] for u in updates.items])
        fed.server[CONTROL] = fed.server[CONTROL] + deltas.sum(0) / len(fed.clients)
        return self.shared_only(fed, torch.where(fed.trainable, x + self.server_lr * (mean - x), mean))

    def download_bytes(self, fed, client):
        return super().download_bytes(fed, client) + fed.layout.nbytes(self.received_layers(fed, client) & fed.layout.trainable)

    def upload_bytes(self, fed, client, update):
        return super().upload_bytes(fed, client, update) + fed.layout.nbytes(self.uploaded_layers(fed, client) & fed.layout.trainable)
