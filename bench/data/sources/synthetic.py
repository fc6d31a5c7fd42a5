"""Synthetic class-prototype images for unit tests: tiny, learnable, grouped in pairs, from four
made-up acquisition centres (for natural partitions and leave-one-centre-out)."""

from __future__ import annotations

import numpy as np

from bench.data.base import ImageDataset, register_dataset

SAMPLES, CLASSES, CHANNELS = 480, 4, 3
CENTRES = ["north", "south", "east", "west"]


@register_dataset("synthetic", default_size=8, needs_root=False, summary="synthetic prototype images for unit tests (480 images, 4 classes)")
def load(cfg: dict) -> ImageDataset:
    size = cfg["image_size"]
    rng = np.random.default_rng(cfg["split_seed"])
    prototypes = rng.uniform(40, 215, size=(CLASSES, CHANNELS, size, size))
    labels = np.arange(SAMPLES) % CLASSES
    noise = rng.normal(0, 35, size=(SAMPLES, CHANNELS, size, size))
    images = np.clip(prototypes[labels] + noise, 0, 255).astype(np.uint8)
    return ImageDataset(
        name="synthetic",
        images=images,
        labels=labels.astype(np.int64),
        classes=[f"class{c}" for c in range(CLASSES)],
        mean=(0.5,) * CHANNELS,
        std=(0.25,) * CHANNELS,
        groups=np.arange(SAMPLES) // (2 * CLASSES) * CLASSES + labels,  # pairs of same-class images
        sites=np.arange(SAMPLES) // (2 * CLASSES) % len(CENTRES),  # a pair's two images come from one centre
        site_names=list(CENTRES),
    )
