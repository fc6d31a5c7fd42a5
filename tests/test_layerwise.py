"""The server's per-layer reductions: compiled CPU loops against hand-computed values, float64
references and the plain-torch path; results independent of the thread count."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from bench.engine.layerwise import (
    TILE,
    Pieces,
    layerwise_weighted_sum,
    layerwise_weighted_sum_cpu,
    layerwise_weighted_sum_torch,
    update_grams,
    update_grams_cpu,
    update_grams_torch,
)
from bench.engine.layout import StateLayout

SIZES = (1, 7, 2 * TILE + 5, 0, 300, 3 * TILE)  # shorter than a tile, across tiles and pieces, empty
PIECE = TILE + 100  # small pieces so that big layers are cut into several


class Layers(nn.Module):
    def __init__(self, sizes):
        super().__init__()
        self.params = nn.ParameterList([nn.Parameter(torch.zeros(n)) for n in sizes])


@pytest.fixture(scope="module")
def layout() -> StateLayout:
    return StateLayout(Layers(SIZES))


def reference_grams(states: torch.Tensor, reference: torch.Tensor, layout: StateLayout) -> torch.Tensor:
    deltas = (states.double() - reference.double()).split(layout.numels, dim=1)
    return torch.stack([d @ d.T for d in deltas])


def random_states(clients: int, layout: StateLayout, dtype=torch.float32):
    generator = torch.Generator().manual_seed(clients)
    reference = torch.randn(layout.size, generator=generator, dtype=dtype)
    return reference + 0.01 * torch.randn(clients, layout.size, generator=generator, dtype=dtype), reference


def test_gram_by_hand():
    layout = StateLayout(Layers((2, 1)))
    reference = torch.tensor([1.0, 1.0, 0.0])
    states = torch.tensor([[2.0, 3.0, 1.0], [0.0, 1.0, -2.0], [1.0, 1.0, 0.0]])  # updates (1, 2 | 1), (-1, 0 | -2), 0
    expected = torch.tensor([[[5.0, -1.0, 0.0], [-1.0, 1.0, 0.0], [0.0, 0.0, 0.0]],
                             [[1.0, -2.0, 0.0], [-2.0, 4.0, 0.0], [0.0, 0.0, 0.0]]])
    assert torch.equal(update_grams_cpu(states, reference, layout), expected)
    assert torch.equal(update_grams_torch(states, reference, layout), expected)


@pytest.mark.parametrize("clients", [1, 2, 3, 10])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_grams_match_float64_reference_and_torch_path(layout, clients, dtype):
    states, reference = random_states(clients, layout, dtype)
    grams = update_grams_cpu(states, reference, layout, piece=PIECE)
    assert grams.dtype == dtype and grams.shape == (len(SIZES), clients, clients)
    tolerance = {"rtol": 1e-5, "atol": 1e-7} if dtype == torch.float32 else {"rtol": 1e-12, "atol": 1e-14}
    torch.testing.assert_close(grams.double(), reference_grams(states, reference, layout), **tolerance)
    torch.testing.assert_close(grams, update_grams_torch(states, reference, layout), **tolerance)
    assert torch.equal(grams, grams.transpose(1, 2))


@pytest.mark.parametrize("clients", [1, 3, 4])
def test_weighted_sum_matches_torch_path(layout, clients):
    states, _ = random_states(clients, layout)
    weights = torch.softmax(torch.randn(len(SIZES), clients), dim=1)
    ours = layerwise_weighted_sum_cpu(weights, states, layout, piece=PIECE)
    expected = torch.cat([w @ s for w, s in zip(weights.double(), layout.split(states.double()))])
    torch.testing.assert_close(ours.double(), expected, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(ours, layerwise_weighted_sum_torch(weights, states, layout))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_results_do_not_depend_on_thread_count(layout, dtype):
    states, reference = random_states(10, layout, dtype)
    weights = torch.softmax(torch.randn(len(SIZES), 10, dtype=dtype), dim=1)
    before = torch.get_num_threads()
    try:
        results = []
        for threads in (1, 2, 3, 5):
            torch.set_num_threads(threads)
            results.append((update_grams_cpu(states, reference, layout, piece=PIECE),
                            layerwise_weighted_sum_cpu(weights, states, layout, piece=PIECE)))
    finally:
        torch.set_num_threads(before)
    assert all(torch.equal(a, b) for result in results[1:] for a, b in zip(results[0], result))


def test_any_layout_of_inputs_and_other_dtypes(layout):
    states, reference = random_states(3, layout)
    weights = torch.softmax(torch.randn(len(SIZES), 3), dim=1)
    expected = update_grams(states, reference, layout), layerwise_weighted_sum(weights, states, layout)
    strided = states.T.contiguous().T.requires_grad_()
    assert torch.equal(update_grams(strided, reference, layout), expected[0])
    assert torch.equal(layerwise_weighted_sum(weights, strided, layout), expected[1])
    half = states.bfloat16()  # no compiled loop: the torch path
    torch.testing.assert_close(layerwise_weighted_sum(weights, half, layout), expected[1].bfloat16(), rtol=0.02, atol=0.02)


def test_wrong_shapes_fail_before_the_compiled_loops(layout):
    states, reference = random_states(4, layout)
    with pytest.raises(ValueError, match="weights has shape"):
        layerwise_weighted_sum(torch.ones(len(SIZES), 2), states, layout)
    with pytest.raises(ValueError, match="reference has shape"):
        update_grams(states, reference[:-1], layout)
    with pytest.raises(ValueError, match="states has shape"):
        update_grams(states[:, :-1], reference, layout)


def test_non_finite_values_propagate(layout):
    states, reference = random_states(3, layout)
    states[1, layout.offsets[2] + 17] = float("nan")
    grams = update_grams_cpu(states, reference, layout, piece=PIECE)
    assert torch.isnan(grams[2, 1]).all() and torch.isfinite(grams[[0, 1, 3, 4, 5]]).all()
    total = layerwise_weighted_sum_cpu(torch.full((len(SIZES), 3), 1 / 3), states, layout, piece=PIECE)
    assert torch.isnan(total[layout.offsets[2] + 17]) and torch.isnan(total).sum() == 1


def test_pieces_cover_every_layer_once_and_parts_balance(layout):
    pieces = Pieces(layout, PIECE)
    assert pieces.begin.tolist() == sorted(pieces.begin.tolist()) and (pieces.end - pieces.begin).max() <= PIECE
    for layer, (start, numel) in enumerate(zip(layout.offsets, layout.numels)):
        mine = pieces.layer == layer
        if numel == 0:
            assert not mine.any()
            continue
        assert pieces.begin[mine].min() == start and pieces.end[mine].max() == start + numel
        assert (pieces.end[mine] - pieces.begin[mine]).sum() == numel
    parts = pieces.parts(4)
    assert [p.start for p in parts[1:]] == [p.stop for p in parts[:-1]] and parts[-1].stop == len(pieces)
    assert all(p.stop > p.start for p in pieces.parts(100))  # never an empty part
    halves = [(pieces.end[p] - pieces.begin[p]).sum() for p in pieces.parts(2)]
    assert abs(halves[0] - halves[1]) <= PIECE
