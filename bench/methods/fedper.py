"""FedPer (Arivazhagan et al., "Federated Learning with Personalization Layers", 2019): the base
layers are federated (FedAvg), the last `layers` layers of the network stay with each client
("personalization layers"), never aggregated, sent or overwritten.

A layer here is a weight layer (convolution or linear) together with the normalisation layers that
follow it up to the next weight layer, counted from the output: `layers = 1` is the classifier
head alone, which is the FedLSC paper's FedAvg-FC (registered as `fedavg_fc`); the default 2 also
keeps the last convolution (and its BatchNorm) personal, the depth the FedPer paper explores
beyond the head (it reports K_P = 1..4 personalization layers).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch
from torch import nn

from bench.errors import UserError
from bench.methods import Method, hparam, register

WEIGHT_LAYERS = (nn.modules.conv._ConvNd, nn.Linear)


def weight_layer_index(fed) -> list[int]:
    """For each state tensor, the index of the weight layer it belongs to (0 = the first)."""
    index, current = [], -1
    for key in fed.layout.keys:
        owner = fed.model.get_submodule(key.rpartition(".")[0])
        if isinstance(owner, WEIGHT_LAYERS) and key.endswith(".weight"):
            current += 1
        index.append(max(current, 0))
    return index


def last_layers(fed, count: int) -> torch.Tensor:
    """Layer mask: the state tensors of the last `count` weight layers (with their norms)."""
    index = weight_layer_index(fed)
    first = max(index) + 1 - count
    return torch.tensor([i >= first for i in index], dtype=torch.bool)


@register
@dataclass(kw_only=True)
class FedPer(Method):
    """FedPer: FedAvg with the last `layers` layers of the network kept personal."""

    name = "fedper"
    layers: int = hparam(2, "personalization layers counted from the output (1 = the head alone, as fedavg_fc)", minimum=1)
    personal: torch.Tensor | None = dataclasses.field(default=None, init=False, repr=False)

    def model(self, base: nn.Module, spec) -> nn.Module:
        """Checks, as the model is built, that some layer stays shared: `layers` at or above the
        model's weight-layer count would make FedPer local training that sends nothing."""
        count = sum(isinstance(m, WEIGHT_LAYERS) for m in base.modules())
        if self.layers >= count:
            raise UserError(f"config key 'method.layers': {self.layers} personalization layers, but this model has {count} weight layers, so "
                            f"none would be shared (local training under FedPer's name); choose at most {count - 1}")
        return super().model(base, spec)

    def personal_layers(self, fed):
        if self.personal is None:
            self.personal = last_layers(fed, self.layers)
        return self.personal
