"""FedAdagrad (Reddi et al., ICLR 2021, Algorithm 2): FedAdam with Adagrad's accumulated second
moment, v_t = v_{t-1} + Delta_t^2 (there is no beta2), so the step shrinks over the rounds.
Everything else, defaults included, is FedAdam's."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from bench.methods import register
from bench.methods.fedadam import AdaptiveServer


@register
@dataclass(kw_only=True)
class FedAdagrad(AdaptiveServer):
    """FedAdagrad: an Adagrad step on the server with the clients' mean update as pseudo-gradient."""

    name = "fedadagrad"

    def second_moment(self, v: torch.Tensor, delta: torch.Tensor) -> torch.Tensor:
        return v + delta**2
