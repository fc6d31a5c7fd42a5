"""Per-layer reductions over every client's flat state at once: the server's hot loop.

    update_grams(states, reference, layout)           (L, N, N) Gram matrices of the updates
                                                      states - reference, layer by layer
    layerwise_weighted_sum(weights, states, layout)   (P,) per layer l, sum_i weights[l, i] states[i]

`states` is (N, P), one flat state per client (see `StateLayout`). On GPUs (and for dtypes other
than float32/64) both are plain torch ops, one layer at a time. On CPUs they are compiled loops
(numba; cached on disk where it can write) over pieces of at most `PIECE` elements per client,
shared out over `torch.get_num_threads()` threads; a piece never crosses a layer and its result
does not depend on which thread ran it, so the numbers do not depend on the thread count. The Gram loop forms the updates of a cache-sized tile and multiplies them while the
tile is still in cache: the states are read from memory once and no N x P temporary exists.
"""

from __future__ import annotations

import functools
import os
from concurrent.futures import ThreadPoolExecutor

import numba
import numpy as np
import torch

from bench.engine.layout import StateLayout

PIECE = 1 << 17  # elements per client per piece of work: a few hundred pieces for a ResNet-50
TILE = 1024  # columns per tile of the Gram loop: N x TILE values stay in the core's cache (compiled in)
# vectorised sums and fused multiply-adds (NaN and inf still propagate); the loops release the GIL
LOOP_OPTIONS = {"nogil": True, "fastmath": {"reassoc", "contract"}}
COMPILED_DTYPES = (torch.float32, torch.float64)


def update_grams(states: torch.Tensor, reference: torch.Tensor, layout: StateLayout) -> torch.Tensor:
    """(L, N, N) Gram matrices dw dw^T of each layer's updates dw_i = states_i - reference."""
    check_shapes(states, layout, reference=reference)
    if compiled_path(states):
        return update_grams_cpu(states, reference, layout)
    return update_grams_torch(states, reference, layout)


def layerwise_weighted_sum(weights: torch.Tensor, states: torch.Tensor, layout: StateLayout) -> torch.Tensor:
    """(P,) per layer l: sum_i weights[l, i] * states[i, layer l]."""
    check_shapes(states, layout, weights=weights)
    if compiled_path(states):
        return layerwise_weighted_sum_cpu(weights, states, layout)
    return layerwise_weighted_sum_torch(weights, states, layout)


def compiled_path(states: torch.Tensor) -> bool:
    return states.device.type == "cpu" and states.dtype in COMPILED_DTYPES


def check_shapes(states: torch.Tensor, layout: StateLayout, reference=None, weights=None) -> None:
    """The compiled loops do not check bounds: wrong shapes must fail here, not read past an array."""
    clients = states.shape[0] if states.ndim == 2 else "N"
    expected = {"states": (clients, layout.size), "reference": (layout.size,), "weights": (layout.layers, clients)}
    for name, tensor in (("states", states), ("reference", reference), ("weights", weights)):
        if tensor is not None and tuple(tensor.shape) != expected[name]:
            raise ValueError(f"{name} has shape {tuple(tensor.shape)}, expected {expected[name]} for this layout")


def update_grams_torch(states: torch.Tensor, reference: torch.Tensor, layout: StateLayout) -> torch.Tensor:
    grams = states.new_empty(layout.layers, states.shape[0], states.shape[0])
    for layer, (start, numel) in enumerate(zip(layout.offsets, layout.numels)):
        delta = states[:, start : start + numel] - reference[start : start + numel]
        torch.mm(delta, delta.T, out=grams[layer])
    return grams


def layerwise_weighted_sum_torch(weights: torch.Tensor, states: torch.Tensor, layout: StateLayout) -> torch.Tensor:
    out = states.new_empty(states.shape[1])
    for w, s, o in zip(weights.to(states.dtype), layout.split(states), layout.split(out)):
        torch.mv(s.T, w, out=o)
    return out


def update_grams_cpu(states: torch.Tensor, reference: torch.Tensor, layout: StateLayout, piece: int = PIECE) -> torch.Tensor:
    pieces = Pieces.of(layout, piece)
    states_, reference_ = as_array(states), as_array(reference)
    per_piece = np.zeros((len(pieces), states.shape[0], states.shape[0]))  # float64: ~2.6x the result's bytes
    pieces.run(lambda part: piece_grams(states_, reference_, pieces.begin[part], pieces.end[part], per_piece[part]))
    per_layer = np.zeros((layout.layers, states.shape[0], states.shape[0]))
    np.add.at(per_layer, pieces.layer, per_piece)  # in piece order, whichever thread computed them
    return torch.from_numpy(per_layer).to(states.dtype)


def layerwise_weighted_sum_cpu(weights: torch.Tensor, states: torch.Tensor, layout: StateLayout, piece: int = PIECE) -> torch.Tensor:
    pieces = Pieces.of(layout, piece)
    states_ = as_array(states)
    piece_weights = as_array(weights.to(states.dtype)[torch.from_numpy(pieces.layer)])
    out = states.new_empty(states.shape[1])
    out_ = out.numpy()
    pieces.run(lambda part: piece_weighted_sums(states_, piece_weights[part], pieces.begin[part], pieces.end[part], out_))
    return out


def as_array(tensor: torch.Tensor) -> np.ndarray:
    return tensor.detach().contiguous().numpy()


class Pieces:
    """The flat state cut into (layer, begin, end) pieces of at most `size` elements, and a way
    to run a function over all of them on `torch.get_num_threads()` threads."""

    def __init__(self, layout: StateLayout, size: int):
        rows = [(layer, begin, min(begin + size, start + numel))
                for layer, (start, numel) in enumerate(zip(layout.offsets, layout.numels))
                for begin in range(start, start + numel, size)]
        self.layer, self.begin, self.end = np.array(rows, dtype=np.int64).reshape(-1, 3).T.copy()

    @classmethod
    @functools.lru_cache(maxsize=16)
    def of(cls, layout: StateLayout, size: int) -> Pieces:
        """The pieces of a layout, cut once: a run aggregates the same layout every round."""
        return cls(layout, size)

    def __len__(self) -> int:
        return len(self.layer)

    def parts(self, count: int) -> list[slice]:
        """`count` runs of consecutive pieces with about equal numbers of elements."""
        filled = np.cumsum(self.end - self.begin)
        cuts = np.searchsorted(filled, filled[-1] * np.arange(1, count) / count) if len(self) else []
        bounds = [0, *cuts, len(self)]
        return [slice(a, b) for a, b in zip(bounds[:-1], bounds[1:]) if b > a]

    def run(self, work) -> None:
        """work(part) for every part, on as many threads as torch uses (4 parts per thread, so
        a slow piece does not leave the other threads idle)."""
        threads = torch.get_num_threads()
        if threads == 1:
            work(slice(0, len(self)))
        else:
            list(thread_pool(threads).map(work, self.parts(4 * threads)))


@functools.cache
def thread_pool(threads: int) -> ThreadPoolExecutor:
    return ThreadPoolExecutor(threads, thread_name_prefix="fedrank-layerwise")


os.register_at_fork(after_in_child=thread_pool.cache_clear)  # a forked child has none of the threads


def compiled(function):
    """numba.njit for the loops, cached on disk where numba can write (else compiled once per process)."""
    try:
        return numba.njit(cache=True, **LOOP_OPTIONS)(function)
    except RuntimeError:  # "cannot cache function ...: no locator available": a read-only install
        return numba.njit(**LOOP_OPTIONS)(function)


inlined = numba.njit(inline="always", **LOOP_OPTIONS)  # helpers of the compiled loops


@compiled
def piece_grams(states, reference, begins, ends, out):
    """out[p] = dw dw^T over columns begins[p]:ends[p], dw = states - reference.

    Each tile of updates is multiplied in 2 x 2 blocks of clients (a zero row pads an odd
    count): four products per four loads, twice the rate of one dot product at a time."""
    clients = states.shape[0]
    rows = clients + clients % 2
    tile = np.zeros((rows, TILE), states.dtype)
    for p in range(begins.shape[0]):
        acc = np.zeros((rows, rows))
        for start in range(begins[p], ends[p], TILE):
            width = min(TILE, ends[p] - start)
            ref = reference[start : start + width]
            for i in range(clients):
                subtract(states[i, start : start + width], ref, tile[i, :width])
            for i in range(0, rows, 2):
                for j in range(i, rows, 2):
                    s00, s01, s10, s11 = dot_2x2(tile[i, :width], tile[i + 1, :width], tile[j, :width], tile[j + 1, :width])
                    acc[i, j] += s00
                    acc[i, j + 1] += s01
                    acc[i + 1, j] += s10
                    acc[i + 1, j + 1] += s11
        for i in range(clients):
            for j in range(i, clients):
                out[p, i, j] = out[p, j, i] = acc[i, j]


@inlined
def subtract(a, b, out):
    for k in range(out.shape[0]):  # indices provably >= 0, so numba vectorises the loop
        out[k] = a[k] - b[k]


@inlined
def dot_2x2(a0, a1, b0, b1):
    s00 = s01 = s10 = s11 = a0.dtype.type(0)
    for k in range(a0.shape[0]):
        x0, x1, y0, y1 = a0[k], a1[k], b0[k], b1[k]
        s00 += x0 * y0
        s01 += x0 * y1
        s10 += x1 * y0
        s11 += x1 * y1
    return s00, s01, s10, s11


@compiled
def piece_weighted_sums(states, weights, begins, ends, out):
    """out[begins[p]:ends[p]] = sum_i weights[p, i] states[i, begins[p]:ends[p]], tile by tile."""
    for p in range(begins.shape[0]):
        for start in range(begins[p], ends[p], TILE):
            tile = out[start : min(start + TILE, ends[p])]
            tile[:] = 0
            for i in range(states.shape[0]):
                add_scaled(states[i, start : start + tile.shape[0]], weights[p, i], tile)


@inlined
def add_scaled(a, c, out):
    for k in range(out.shape[0]):
        out[k] += c * a[k]
