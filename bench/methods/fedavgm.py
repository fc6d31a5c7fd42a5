"""FedAvgM (Hsu, Qi & Brown, "Measuring the Effects of Non-Identical Data Distribution for
Federated Visual Classification", 2019): server momentum on the clients' mean update.

Per round, with x_t the global state and Delta_t = sum_i p_i (y_i - x_t) the sample-weighted
mean update of the reporting clients:
  v_t     = beta v_{t-1} + Delta_t            (v_0 = 0)
  x_{t+1} = x_t + eta v_t
beta = 0 and eta = 1 is FedAvg. Defaults beta = 0.9 and eta = 0.1: Hsu et al. find the best runs
where the effective learning rate eta / (1 - beta) is about 1 (FedAvg's), which these give. Only
trainable tensors take the momentum step; buffers (BatchNorm running statistics) get the plain
weighted mean.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from bench.methods import Method, Recipe, hparam, loguniform, register, uniform


@register
@dataclass(kw_only=True)
class FedAvgM(Method):
    """FedAvgM: FedAvg with server momentum on the mean client update."""

    name = "fedavgm"
    mean_of_updates = True  # momentum on the mean update
    recipe = Recipe(settings={"train.optimizer": "sgd", "train.momentum": 0.0}, source="Hsu et al. 2019, Sec. 3: clients run plain SGD")
    momentum: float = hparam(0.9, "server momentum beta (0 with server_lr 1 is FedAvg)", minimum=0, exclusiveMaximum=1,
                             search=uniform(0.0, 0.99, source="Hsu et al. 2019, Fig. 4: beta from 0 to 0.997"))
    server_lr: float = hparam(0.1, "server learning rate eta", exclusiveMinimum=0,
                              search=loguniform(0.01, 3.0, source="Hsu et al. 2019: effective rate eta / (1 - beta) near 1 at the betas swept; fedrank's range"))

    def aggregate(self, fed, updates):
        mean = self.weighted_mean(updates)
        velocity = self.momentum * fed.server.get("velocity", torch.zeros_like(mean)) + (mean - fed.global_state)
        fed.server["velocity"] = velocity
        stepped = fed.global_state + self.server_lr * velocity
        return self.shared_only(fed, torch.where(fed.trainable, stepped, mean))
