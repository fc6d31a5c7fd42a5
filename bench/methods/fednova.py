"""FedNova (Wang et al., NeurIPS 2020, Eq. 6-7 and Sec. 4): normalized averaging, so clients
that take more (or larger) local steps do not pull the global model towards their own optimum.

Client i reports y_i and a_i, the summed weight of its local gradients; p_i are the sample
weights of the reporting clients (summing to one):
  d_i     = (x - y_i) / a_i                                 its normalized update
  tau_eff = sum_i p_i a_i
  x      <- x - tau_eff sum_i p_i d_i
For SGD with momentum rho at a constant rate the paper's a_i = [tau_i - rho (1 - rho^tau_i)/(1 - rho)]
/ (1 - rho); a_i = tau_i (`FitResult.steps`) without momentum. Here a_i is counted step by step
in learning-rate units, sum_t lr_t (1 - rho^t)/(1 - rho) (`drift.StepWeight`, JYWa/FedNova's
distoptim/FedNova.py recursion), which is lr a_i at a constant rate: lr cancels between tau_eff
and d_i, and under a decaying rate (StepLR, train.persist_optimizer) each d_i stays a mean
gradient. rho is train.momentum when train.optimizer is sgd. Adam: rho = 0, a_i = sum_t lr_t,
because its first moment is a bias-corrected average that does not amplify the step as
heavy-ball momentum does and each step moves about lr per coordinate; its per-coordinate
scaling is outside the paper's analysis (linear combinations of gradients), so this is an
approximation. The momentum buffer is taken to start each round at zero (JYWa/FedNova zeroes it
after every averaging), true unless train.persist_optimizer carries it over.
Trainable tensors are normalized; BatchNorm buffers are FedAvg's sample-weighted mean. With equal
a_i FedNova is FedAvg. Bytes as FedAvg's (a_i is a scalar, like the sample count, not counted).
No hyper-parameters: JYWa's optional server momentum and proximal term are other methods.
Hooks used: train, aggregate.
"""

from __future__ import annotations

import torch

from bench.methods import Method, Recipe, register
from bench.methods.drift import STEP_WEIGHT, fit_with_step_weight


def normalized_average(x: torch.Tensor, states: torch.Tensor, weights: torch.Tensor, step_weights: torch.Tensor) -> torch.Tensor:
    """x - tau_eff sum_i p_i (x - y_i) / a_i, as x - tau_eff (x sum_i w_i - sum_i w_i y_i) with
    w_i = p_i / a_i (one pass over the states); a client with a_i = 0 moved nowhere and adds nothing."""
    tau_eff = weights @ step_weights
    w = torch.where(step_weights > 0, weights / step_weights, torch.zeros_like(weights))
    return x - tau_eff * (w.sum() * x - w @ states)


@register
class FedNova(Method):
    """FedNova: normalized averaging of the local updates by each client's local steps a_i."""

    name = "fednova"
    mean_of_updates = "it normalises each client's update by that client's own step weight"
    recipe = Recipe(settings={"train.optimizer": "sgd"}, source="Wang et al. NeurIPS 2020, Sec. 6: local SGD, with or without momentum")

    def train(self, fed, client):
        return fit_with_step_weight(fed, client, loss=self.client_loss(fed, client), extra_loss=self.local_loss(fed, client))

    def aggregate(self, fed, updates):
        samples = updates.num_samples
        step_weights = torch.tensor([u.extra[STEP_WEIGHT] for u in updates.items], dtype=samples.dtype, device=samples.device)
        normalized = normalized_average(fed.global_state, updates.states, samples / samples.sum(), step_weights)
        return self.shared_only(fed, torch.where(fed.trainable, normalized, self.weighted_mean(updates)))
