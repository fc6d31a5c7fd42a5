"""FedYogi (Reddi et al., ICLR 2021, Algorithm 2): FedAdam with Yogi's additive second moment,
  v_t = v_{t-1} - (1 - beta2) Delta_t^2 sign(v_{t-1} - Delta_t^2),
which grows or shrinks v by at most (1 - beta2) Delta_t^2 per round, so a burst of large updates
does not collapse the step size for long. Everything else, defaults included, is FedAdam's."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from bench.methods import register
from bench.methods.fedadam import FedAdam


@register
@dataclass(kw_only=True)
class FedYogi(FedAdam):
    """FedYogi: a Yogi step on the server with the clients' mean update as pseudo-gradient."""

    name = "fedyogi"

    def second_moment(self, v: torch.Tensor, delta: torch.Tensor) -> torch.Tensor:
        squared = delta**2
        return v - (1 - self.beta2) * squared * torch.sign(v - squared)
