"""FedAdam (Reddi et al., "Adaptive Federated Optimization", ICLR 2021, Algorithm 2).

The server treats the clients' mean update as a pseudo-gradient and takes an adaptive step. Per
round t, with x_t the global state and the K reporting clients' states y_i:
  Delta_t = sum_i p_i (y_i - x_t)                    p_i = n_i / sum_k n_k (sample weights)
  m_t     = beta1 m_{t-1} + (1 - beta1) Delta_t
  v_t     = beta2 v_{t-1} + (1 - beta2) Delta_t^2    (FedYogi and FedAdagrad change only this line)
  x_{t+1} = x_t + eta m_t / (sqrt(v_t) + tau)
with m_0 = 0 and v_0 = tau^2 (Algorithm 2: v_{-1} >= tau^2) and no bias correction, as the paper.
Defaults eta = 1e-2, beta1 = 0.9, beta2 = 0.999, tau = 1e-3: FLamby's FedAdam/FedYogi
(owkin/FLamby, flamby/strategies/fed_adam_yogi.py), a medical FL benchmark. Only trainable
tensors take the adaptive step: buffers (BatchNorm running statistics) are not gradients and get
the plain weighted mean.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from bench.methods import Method, Recipe, hparam, loguniform, register


@dataclass(kw_only=True)
class AdaptiveServer(Method):
    """The FedOpt server step shared by FedAdam, FedYogi and FedAdagrad (not registered)."""
    mean_of_updates = True  # its step uses only the mean update

    recipe = Recipe(settings={"train.optimizer": "sgd", "train.momentum": 0.0},
                    source="Reddi et al. ICLR 2021, Algorithm 2: ClientOpt is SGD (no momentum)")
    server_lr: float = hparam(0.01, "server learning rate eta", exclusiveMinimum=0,
                              search=loguniform(0.001, 1.0, source="Reddi et al. ICLR 2021, App. D: log10 grid of server learning rates"))
    beta1: float = hparam(0.9, "decay of the first moment m", minimum=0, exclusiveMaximum=1)
    tau: float = hparam(0.001, "adaptivity tau: added to sqrt(v); v starts at tau^2", exclusiveMinimum=0,
                        search=loguniform(1e-5, 0.1, source="Reddi et al. ICLR 2021, App. D: log10 grid of tau"))

    def second_moment(self, v: torch.Tensor, delta: torch.Tensor) -> torch.Tensor:
        """v_t from v_{t-1} and the pseudo-gradient Delta_t."""
        raise NotImplementedError

    def aggregate(self, fed, updates):
        mean = self.weighted_mean(updates)
        delta = mean - fed.global_state
        m = self.beta1 * fed.server.get("m", torch.zeros_like(delta)) + (1 - self.beta1) * delta
        v = self.second_moment(fed.server.get("v", torch.full_like(delta, self.tau**2)), delta)
        fed.server.update(m=m, v=v)
        stepped = fed.global_state + self.server_lr * m / (v.sqrt() + self.tau)
        return self.shared_only(fed, torch.where(fed.trainable, stepped, mean))


@register
@dataclass(kw_only=True)
class FedAdam(AdaptiveServer):
    """FedAdam: an Adam step on the server with the clients' mean update as pseudo-gradient."""

    name = "fedadam"
    beta2: float = hparam(0.999, "decay of the second moment v", minimum=0, exclusiveMaximum=1)

    def second_moment(self, v: torch.Tensor, delta: torch.Tensor) -> torch.Tensor:
        return self.beta2 * v + (1 - self.beta2) * delta**2
