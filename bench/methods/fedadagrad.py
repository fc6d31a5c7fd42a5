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
    not_learning = ("v accumulates Delta^2 from v_0 = tau^2, so the server step eta m / sqrt(v) is about eta (1 - beta1) = 1e-3 "
                    "per element at the defaults: 4 rounds move the global model too little to score (FedAdam's v is 1000x smaller)")

    def second_moment(self, v: torch.Tensor, delta: torch.Tensor) -> torch.Tensor:
        return v + delta**2
