"""CKSP (Mao et al., "CKSP: Cross-species Knowledge Sharing and Preserving for Universal Animal
Activity Recognition", arXiv 2410.16644, Biosystems Engineering 2025), read as personalised FL in
which each client is a "species".

Shared-Preserved Convolution (SPConv): every convolution W of the configured model becomes
  y = W * x + U_i * (V_i * x)
with W the shared full-rank convolution (aggregated by FedAvg), V_i a private convolution of the
same kernel, stride, padding and dilation from the input channels down to `rank` channels and
U_i a private 1 x 1 convolution from `rank` up to the output channels: a rank-r convolution per
client, never sent or aggregated. Species-specific BatchNorm (SBN): every BatchNorm layer
(weights and running statistics) is private per client too. The classifier head (linear) and
everything else is shared and averaged as FedAvg (sample-weighted).

No reference code is public; the choices and their sources: the low-rank factorisation k x k
down to r then 1 x 1 up, as the issue describes SPConv; U_i starts at zero so every client's
model starts as the configured model (LoRA's zero-initialised up-projection, Hu et al. 2021),
which also keeps the initial function the same as every other method's of the seed; V_i has
PyTorch's default initialisation and no bias (the shared convolution keeps the configured bias);
the rank is capped at the convolution's full rank min(out, in x kernel elements / groups); the
private convolutions are ungrouped.
Hooks used: model (wraps the configured model's convolutions), personal_layers.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import torch
from torch import nn

from bench.methods import Method, hparam, register
from bench.methods.fedbn import batchnorm_layers

CONVOLUTIONS = (nn.Conv1d, nn.Conv2d, nn.Conv3d)


class SharedPreservedConv(nn.Module):
    """y = shared(x) + private(x): the configured convolution plus a rank-r private path."""

    def __init__(self, shared: nn.Conv1d | nn.Conv2d | nn.Conv3d, rank: int):
        super().__init__()
        full_rank = min(shared.out_channels, shared.in_channels // shared.groups * math.prod(shared.kernel_size))
        rank = min(rank, full_rank)
        kind = type(shared)
        down = kind(shared.in_channels, rank, shared.kernel_size, stride=shared.stride, padding=shared.padding,
                    dilation=shared.dilation, bias=False, padding_mode=shared.padding_mode)
        up = kind(rank, shared.out_channels, 1, bias=False)
        nn.init.zeros_(up.weight)
        self.shared = shared
        self.private = nn.Sequential(down, up)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.shared(x) + self.private(x)


def wrap_convolutions(module: nn.Module, rank: int) -> None:
    """Replace every convolution inside `module` by a SharedPreservedConv around it, in place."""
    for name, child in list(module.named_children()):
        if isinstance(child, CONVOLUTIONS):
            setattr(module, name, SharedPreservedConv(child, rank))
        else:
            wrap_convolutions(child, rank)


def private_convolution_layers(fed) -> torch.Tensor:
    """Layer mask: the state tensors of every SPConv's private low-rank path."""
    prefixes = tuple(f"{name}.private." for name, m in fed.model.named_modules() if isinstance(m, SharedPreservedConv))
    return fed.layout.layers_where(lambda key: key.startswith(prefixes))


@register
@dataclass(kw_only=True)
class CKSP(Method):
    """CKSP: every convolution shared full-rank + private low-rank (SPConv); BatchNorm private (SBN)."""

    name = "cksp"
    private_training = "its species-specific BatchNorm layers (SBN) are what DP-SGD replaces by GroupNorm"
    rank: int = hparam(4, "rank r of each client's private convolution (capped at the convolution's full rank)", minimum=1)
    personal: torch.Tensor | None = dataclasses.field(default=None, init=False, repr=False)

    def model(self, base, spec):
        wrap_convolutions(base, self.rank)
        return base

    def personal_layers(self, fed):
        if self.personal is None:
            self.personal = private_convolution_layers(fed) | batchnorm_layers(fed)
        return self.personal
