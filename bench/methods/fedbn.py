"""FedBN (Li et al., "FedBN: Federated Learning on Non-IID Features via Local Batch
Normalization", ICLR 2021): FedAvg, except that every BatchNorm layer (its affine weight and bias
and its running statistics) stays with the client: never aggregated, sent or overwritten.

BatchNorm layers are found by module type (any `torch.nn` batch norm, 1-3d and synchronised),
not by key names, so a model whose norms are called `bn1`, `norm` or `downsample.1` is handled
alike; the mask is computed once per run (the first time it is asked for).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch
from torch import nn

from bench.methods import Method, register


def batchnorm_layers(fed) -> torch.Tensor:
    """Layer mask: the state tensors of the main model's BatchNorm modules."""
    norms = {name for name, module in fed.model.named_modules() if isinstance(module, nn.modules.batchnorm._NormBase)}
    return fed.layout.layers_where(lambda key: key.rpartition(".")[0] in norms)


@register
@dataclass(kw_only=True)
class FedBN(Method):
    """FedBN: FedAvg with every BatchNorm layer (weights and statistics) kept personal."""

    name = "fedbn"
    private_training = "its personal layers are the BatchNorm layers, which DP-SGD replaces by GroupNorm (it would be FedAvg)"
    personal: torch.Tensor | None = dataclasses.field(default=None, init=False, repr=False)

    def personal_layers(self, fed):
        if self.personal is None:
            self.personal = batchnorm_layers(fed)
        return self.personal
