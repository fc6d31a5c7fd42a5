"""FedLSC's equations against hand-computed values, and its invariants."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from bench.engine.layerwise import layerwise_weighted_sum
from bench.engine.layout import StateLayout
from bench.methods.fedlsc import (
    layer_cosine_similarity,
    mean_similarity_to_others,
    select_personal_layers,
    similarity_weights,
)


class TwoLayers(nn.Module):
    """Layer `a` with 2 elements, layer `b` with 3."""

    def __init__(self):
        super().__init__()
        self.a = nn.Parameter(torch.zeros(2))
        self.b = nn.Parameter(torch.zeros(3))


@pytest.fixture
def layout() -> StateLayout:
    return StateLayout(TwoLayers())


def stack(*rows) -> torch.Tensor:
    return torch.tensor(rows, dtype=torch.float64)


def test_eq1_eq2_cosine_of_updates_per_layer(layout):
    reference = torch.tensor([1.0, 1.0, 0.0, 0.0, 0.0], dtype=torch.float64)
    # layer a updates: (1,0), (0,1), (1,1); layer b updates: (1,2,2), (0,0,0), (-2,-4,-4)
    states = stack([2, 1, 1, 2, 2], [1, 2, 0, 0, 0], [2, 2, -2, -4, -4])
    sim = layer_cosine_similarity(states, reference, layout)
    r = 1 / math.sqrt(2)
    expected_a = [[1, 0, r], [0, 1, r], [r, r, 1]]
    expected_b = [[1, 0, -1], [0, 0, 0], [-1, 0, 1]]  # zero update: similarity 0, never NaN
    torch.testing.assert_close(sim[0], torch.tensor(expected_a, dtype=torch.float64))
    torch.testing.assert_close(sim[1], torch.tensor(expected_b, dtype=torch.float64))
    assert not torch.isnan(sim).any()


def test_an_update_below_the_reference_norm_counts_as_zero(layout):
    """The reference code's 1e-8 threshold: a near-frozen layer's tiny update has similarity 0,
    so its layer weights are those of a zero update, not of the rounding noise's direction."""
    reference = torch.zeros(5, dtype=torch.float64)
    # layer a: client 0 moved 1e-9 (below the threshold), clients 1 and 2 moved along (1, 0)
    states = stack([1e-9, 0, 0, 0, 0], [1, 0, 0, 0, 0], [2, 0, 0, 0, 0])
    sim = layer_cosine_similarity(states, reference, layout)[0]
    torch.testing.assert_close(sim, torch.tensor([[0, 0, 0], [0, 1, 1], [0, 1, 1]], dtype=torch.float64))
    weights = similarity_weights(mean_similarity_to_others(sim[None]), tau=0.2)[0]
    # s = (0, 0.5, 0.5): softmax(s / 0.2) = (1, e^2.5, e^2.5) / (1 + 2 e^2.5)
    e = math.exp(2.5)
    torch.testing.assert_close(weights, torch.tensor([1 / (1 + 2 * e), e / (1 + 2 * e), e / (1 + 2 * e)], dtype=torch.float64))
    # just above the threshold the update is a direction like any other
    above = layer_cosine_similarity(stack([2e-8, 0, 0, 0, 0], [1, 0, 0, 0, 0], [2, 0, 0, 0, 0]), reference, layout)[0]
    assert above[0, 1] == 1


def test_eq3_mean_over_the_other_clients():
    sim = torch.tensor([[[1.0, 0.2, 0.6], [0.2, 1.0, -0.4], [0.6, -0.4, 1.0]]])
    torch.testing.assert_close(mean_similarity_to_others(sim), torch.tensor([[0.4, -0.1, 0.1]]))


def test_eq4_softmax_with_temperature_by_hand():
    mean_sim = torch.tensor([[1 / (2 * math.sqrt(2)), 1 / (2 * math.sqrt(2)), 1 / math.sqrt(2)]], dtype=torch.float64)
    weights = similarity_weights(mean_sim, tau=0.5)
    # exp(0.70711) = 2.028115, exp(1.41421) = 4.113250; sum 8.169480
    torch.testing.assert_close(weights, torch.tensor([[0.248255, 0.248255, 0.503490]], dtype=torch.float64), atol=1e-6, rtol=0)


def test_eq5_per_layer_weighted_sum(layout):
    states = stack([1, 2, 10, 20, 30], [3, 4, 40, 50, 60])
    weights = torch.tensor([[0.25, 0.75], [0.5, 0.5]], dtype=torch.float64)
    expected = torch.tensor([2.5, 3.5, 25, 35, 45], dtype=torch.float64)
    torch.testing.assert_close(layerwise_weighted_sum(weights, states, layout), expected)


def test_full_aggregation_by_hand(layout):
    """Eq.1-5 chained on layer a of the first test: the hand-computed global layer."""
    reference = torch.zeros(5, dtype=torch.float64)
    states = stack([1, 0, 1, 0, 0], [0, 1, 0, 1, 0], [1, 1, 0, 0, 1])
    weights = similarity_weights(mean_similarity_to_others(layer_cosine_similarity(states, reference, layout)), tau=0.5)
    new = layerwise_weighted_sum(weights, states, layout)
    torch.testing.assert_close(new[:2], torch.tensor([0.751745, 0.751745], dtype=torch.float64), atol=1e-6, rtol=0)


def test_eq6_strictly_below_the_linear_quantile():
    means = torch.tensor([0.1, 0.5, 0.3, 0.9])
    # numpy's linear quantile at 0.3 of [0.1, 0.3, 0.5, 0.9] is 0.1 + 0.9 * 0.2 = 0.28
    assert np.isclose(np.quantile(means.numpy(), 0.3), 0.28)
    assert select_personal_layers(means, 0.3).tolist() == [True, False, False, False]
    assert select_personal_layers(means, 0.5).tolist() == [True, False, True, False]  # q = 0.4
    assert not select_personal_layers(means, 0.0).any()
    assert not select_personal_layers(torch.tensor([0.2, 0.2, 0.2]), 0.5).any()  # equal to q is not below


def test_identical_updates_reduce_to_fedavg_with_equal_sizes(layout):
    reference = torch.randn(5, dtype=torch.float64)
    update = torch.randn(5, dtype=torch.float64)
    states = torch.stack([reference + update] * 4)
    weights = similarity_weights(mean_similarity_to_others(layer_cosine_similarity(states, reference, layout)), tau=0.2)
    torch.testing.assert_close(weights, torch.full((2, 4), 0.25, dtype=torch.float64))
    torch.testing.assert_close(layerwise_weighted_sum(weights, states, layout), states.mean(0))


def test_large_tau_gives_uniform_weights_and_weights_sum_to_one(layout):
    torch.manual_seed(0)
    states = torch.randn(5, 5, dtype=torch.float64)
    mean_sim = mean_similarity_to_others(layer_cosine_similarity(states, torch.zeros(5, dtype=torch.float64), layout))
    torch.testing.assert_close(similarity_weights(mean_sim, tau=1e9), torch.full((2, 5), 0.2, dtype=torch.float64))
    for tau in (0.05, 0.2, 2.5):
        torch.testing.assert_close(similarity_weights(mean_sim, tau).sum(-1), torch.ones(2, dtype=torch.float64))
    sharp = similarity_weights(mean_sim, tau=1e-4)
    assert torch.equal(sharp.argmax(-1), mean_sim.argmax(-1))  # small tau: the most similar client wins


def test_single_client_gets_weight_one(layout):
    states = torch.randn(1, 5)
    weights = similarity_weights(mean_similarity_to_others(layer_cosine_similarity(states, torch.zeros(5), layout)), 0.2)
    torch.testing.assert_close(weights, torch.ones(2, 1))


def test_integer_buffers_are_not_layers():
    model = nn.Sequential(nn.Linear(2, 2), nn.BatchNorm1d(2))
    layout = StateLayout(model)
    assert layout.keys == ["0.weight", "0.bias", "1.weight", "1.bias", "1.running_mean", "1.running_var"]
    assert "1.num_batches_tracked" in model.state_dict()
