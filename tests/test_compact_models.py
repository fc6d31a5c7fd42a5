"""The compact CIFAR-style models of the heterogeneous-model methods: every one builds from its
name, maps 32 px and the tests' 8 px images to logits, and trains; the channel shuffle by hand."""

from __future__ import annotations

import pytest
import torch

from bench.models import build_model, resolve_model_config
from bench.models.compact import channel_shuffle


@pytest.mark.parametrize("name", ["resnet10", "resnet12", "mobilenet_v2", "shufflenet_v2"])
@pytest.mark.parametrize("size", [32, 8])
def test_each_compact_model_gives_logits_at_32_and_8_px_and_trains(name, size):
    torch.manual_seed(0)
    model = build_model(resolve_model_config({"name": name, "stem_stride": 2 if size == 32 else 1}), 7, 3, size)
    x, y = torch.randn(4, 3, size, size), torch.tensor([0, 1, 2, 3])
    assert model.body(x).shape == (4, model.head.in_features) and model(x).shape == (4, 7)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
    losses = []
    for _ in range(5):
        loss = torch.nn.functional.cross_entropy(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0]


def test_resnet12_has_one_more_block_than_resnet10():
    ten, twelve = (build_model(resolve_model_config({"name": n}), 7, 3, 8) for n in ("resnet10", "resnet12"))
    extra = sum(p.numel() for p in twelve.parameters()) - sum(p.numel() for p in ten.parameters())
    assert extra == 2 * (16 * 16 * 9 + 2 * 16)  # two 3x3 convs of width 16 and their BatchNorms


def test_channel_shuffle_interleaves_the_two_halves():
    x = torch.arange(4.0).view(1, 4, 1, 1)
    assert channel_shuffle(x).flatten().tolist() == [0.0, 2.0, 1.0, 3.0]
