"""Batch augmentation: off by default, torchvision's formulas per image, seeded and deterministic."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
import torchvision.transforms.v2.functional as TF

from bench.data.augment import OPS, BatchAugment, hsv_to_rgb, make_augment, rgb_to_hsv, rotate
from bench.engine.run import execute
from conftest import tiny_config

NONE = {op: 0 for op in OPS}


def batch(n=5, c=3, side=9, seed=0) -> torch.Tensor:
    return torch.rand(n, c, side, side, generator=torch.Generator().manual_seed(seed))


def draws(n: int, seed: int) -> dict[str, torch.Tensor]:
    """The per-image uniforms BatchAugment draws from a generator seeded with `seed`."""
    return dict(zip(OPS, torch.rand(n, len(OPS), generator=torch.Generator().manual_seed(seed)).unbind(1)))


def test_augmentation_is_off_by_default():
    assert make_augment(tiny_config()["augment"]) is None


def test_flips_with_probability_one_and_zero():
    x = batch()
    out = BatchAugment({**NONE, "hflip": 1.0})(x, torch.Generator().manual_seed(0))
    assert torch.equal(out, x.flip(-1))
    out = BatchAugment({**NONE, "vflip": 1e-12})(x, torch.Generator().manual_seed(0))
    assert torch.equal(out, x)


def test_half_of_the_images_are_flipped_at_probability_one_half():
    x = batch(n=2000, side=4)
    out = BatchAugment({**NONE, "hflip": 0.5})(x, torch.Generator().manual_seed(1))
    flipped = (out == x.flip(-1)).flatten(1).all(1)
    assert flipped.float().mean().item() == pytest.approx(0.5, abs=0.04)
    assert torch.equal(flipped, draws(2000, 1)["hflip"] < 0.5)


def test_rotating_by_90_degrees_is_exact_on_square_images():
    x = batch(side=8)
    turned = rotate(x, torch.full((5,), 90.0))
    assert torch.allclose(turned, torch.rot90(x, 1, dims=(-2, -1)), atol=1e-5) or torch.allclose(turned, torch.rot90(x, -1, dims=(-2, -1)), atol=1e-5)
    assert torch.allclose(rotate(x, torch.zeros(5)), x, atol=1e-6)


@pytest.mark.parametrize("op,reference,spread", [
    ("brightness", TF.adjust_brightness, 0.4),
    ("contrast", TF.adjust_contrast, 0.4),
    ("saturation", TF.adjust_saturation, 0.6),
])
def test_colour_jitter_equals_torchvision_per_image(op, reference, spread):
    x = batch()
    out = BatchAugment({**NONE, op: spread})(x, torch.Generator().manual_seed(3))
    factors = 1 - spread + 2 * spread * draws(5, 3)[op]
    expected = torch.stack([reference(img, float(f)) for img, f in zip(x, factors)])
    assert torch.allclose(out, expected, atol=1e-5)


def test_hue_shift_equals_torchvision_per_image():
    x = batch()
    out = BatchAugment({**NONE, "hue": 0.2})(x, torch.Generator().manual_seed(4))
    shifts = -0.2 + 0.4 * draws(5, 4)["hue"]
    expected = torch.stack([TF.adjust_hue(img, float(s)) for img, s in zip(x, shifts)])
    assert torch.allclose(out, expected, atol=1e-4)
    assert torch.allclose(hsv_to_rgb(rgb_to_hsv(x)), x, atol=1e-6)


def test_greyscale_batches_skip_saturation_and_hue_and_every_output_stays_in_range():
    grey = batch(c=1)
    assert torch.equal(BatchAugment({**NONE, "saturation": 0.5, "hue": 0.3})(grey, torch.Generator().manual_seed(0)), grey)
    everything = {"hflip": 0.5, "vflip": 0.5, "rotation": 30, "brightness": 0.5, "contrast": 0.5, "saturation": 0.5, "hue": 0.1}
    out = BatchAugment(everything)(batch(n=64), torch.Generator().manual_seed(0))
    assert out.min() >= 0 and out.max() <= 1 and out.shape == (64, 3, 9, 9)


def test_augmented_runs_are_deterministic_and_differ_from_plain_ones(tmp_path):
    aug = {"augment__hflip": 0.5, "augment__rotation": 15, "augment__brightness": 0.2, "augment__hue": 0.05}
    metrics = []
    for name, extra in (("a", aug), ("b", aug), ("plain", {})):
        execute(tiny_config(train__rounds=2, **extra), tmp_path / name, show_progress=False)
        metrics.append(pd.read_parquet(tmp_path / name / "metrics.parquet"))
    pd.testing.assert_frame_equal(metrics[0], metrics[1])
    assert not np.allclose(metrics[0]["value"], metrics[2]["value"])
