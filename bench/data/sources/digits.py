"""scikit-learn's bundled handwritten digits (1,797 real 8x8 images, 10 classes): the embedded demo."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from bench.data.base import ImageDataset, register_dataset


@register_dataset("digits", default_size=8, needs_root=False, summary="sklearn handwritten digits, 1,797 images 8x8, 10 classes (bundled, no download)")
def load(cfg: dict) -> ImageDataset:
    from sklearn.datasets import load_digits  # here, not at import: listing datasets stays fast

    bunch = load_digits()
    images = np.round(bunch.images * (255 / 16)).astype(np.uint8)[:, None]  # pixel values are 0..16
    size = cfg["image_size"]
    if size != images.shape[-1]:
        resized = F.interpolate(torch.from_numpy(images).float(), size=(size, size), mode="bilinear", align_corners=False)
        images = resized.round().clamp(0, 255).to(torch.uint8).numpy()
    scaled = images / 255.0
    return ImageDataset(
        name="digits",
        images=images,
        labels=bunch.target.astype(np.int64),
        classes=[str(d) for d in range(10)],
        mean=(float(scaled.mean()),),
        std=(float(scaled.std()),),
    )
