"""One flat vector per model state, so a method aggregates all clients with a few tensor ops.

A "layer" is every floating-point tensor of the model's state dict (weights, biases, BatchNorm
running statistics), in state-dict order. Integer buffers (BatchNorm's `num_batches_tracked`)
are bookkeeping: they stay with the model object and are neither flattened nor communicated.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn


class StateLayout:
    """Where each floating-point state tensor of a model lives in a flat vector of length `size`."""

    def __init__(self, model: nn.Module):
        state = model.state_dict(keep_vars=True)
        params = {id(p) for p in model.parameters() if p.requires_grad}
        self.keys: list[str] = [k for k, t in state.items() if t.is_floating_point()]
        self.shapes: list[torch.Size] = [state[k].shape for k in self.keys]
        self.numels: list[int] = [state[k].numel() for k in self.keys]
        self.trainable = torch.tensor([id(state[k]) in params for k in self.keys])
        self.element_bytes = torch.tensor([state[k].element_size() for k in self.keys])
        self.size = sum(self.numels)
        self.offsets: list[int] = [sum(self.numels[:i]) for i in range(len(self.numels))]
        self._numels_t = torch.tensor(self.numels)

    @property
    def layers(self) -> int:
        return len(self.keys)

    def _tensors(self, model: nn.Module) -> list[torch.Tensor]:
        state = model.state_dict(keep_vars=True)
        return [state[k] for k in self.keys]

    def no_layers(self) -> torch.Tensor:
        return torch.zeros(self.layers, dtype=torch.bool)

    def layers_where(self, predicate) -> torch.Tensor:
        """Boolean layer mask from a predicate on the state-dict key."""
        return torch.tensor([bool(predicate(k)) for k in self.keys], dtype=torch.bool)

    @torch.no_grad()
    def gather(self, model: nn.Module, out: torch.Tensor | None = None) -> torch.Tensor:
        """Copy the model's floating-point state into one flat vector (into `out` if given)."""
        flat = [t.detach().reshape(-1) for t in self._tensors(model)]
        if out is None:
            return torch.cat(flat)
        return torch.cat(flat, out=out)

    @torch.no_grad()
    def scatter(self, model: nn.Module, values: torch.Tensor, layers: torch.Tensor | None = None) -> None:
        """Write into the model in place: all layers from a full vector, or only the `layers`
        selected by a boolean mask from `values` holding just those layers, concatenated."""
        tensors = self._tensors(model)
        if layers is None:
            chosen = range(self.layers)
        else:
            chosen = torch.nonzero(layers.cpu()).flatten().tolist()
        pieces = values.split([self.numels[i] for i in chosen])
        for i, piece in zip(chosen, pieces):
            tensors[i].copy_(piece.view(self.shapes[i]))

    def split(self, flat: torch.Tensor) -> Sequence[torch.Tensor]:
        """Per-layer views of a vector (P,) or of stacked vectors (N, P) along the last dim."""
        return flat.split(self.numels, dim=-1)

    def expand(self, per_layer: torch.Tensor) -> torch.Tensor:
        """Repeat a per-layer value (L,) or (..., L) to every element: (P,) or (..., P)."""
        return per_layer.repeat_interleave(self._numels_t.to(per_layer.device), dim=-1)

    def select(self, flat: torch.Tensor, layers: torch.Tensor) -> torch.Tensor:
        """The elements of the selected layers, concatenated (a copy)."""
        return flat[..., self.expand(layers.to(flat.device))]

    def narrow(self, values: torch.Tensor, layers: torch.Tensor, subset: torch.Tensor) -> torch.Tensor:
        """From `values` holding the `layers` concatenated, the elements of the layers in `subset`."""
        return values[self.expand((subset & layers).to(values.device))[self.expand(layers.to(values.device))]]

    def nbytes(self, layers: torch.Tensor | None = None) -> int:
        """Bytes of the floating-point state in the selected layers (all by default)."""
        sizes = self._numels_t * self.element_bytes
        return int(sizes.sum() if layers is None else sizes[layers.cpu()].sum())

    def views(self, flat: torch.Tensor) -> dict[str, torch.Tensor]:
        """Tensor-shaped views of a flat vector, keyed like the state dict."""
        return {k: v.view(s) for k, v, s in zip(self.keys, self.split(flat), self.shapes)}
