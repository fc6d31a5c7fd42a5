"""scikit-learn's bundled handwritten digits (1,797 real 8x8 images, 10 classes): the embedded demo."""

from __future__ import annotations

import gzip
import importlib.util
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from bench.data.base import ImageDataset, register_dataset


def read_digits() -> tuple[np.ndarray, np.ndarray]:
    """(images (1797, 8, 8) valued 0..16, labels): scikit-learn's bundled digits.csv.gz, read as
    sklearn.datasets.load_digits reads it (each row 64 pixels then the label) but without
    importing scikit-learn, about 1.5 s of every digits run's start-up."""
    package = Path(importlib.util.find_spec("sklearn").submodule_search_locations[0])
    with gzip.open(package / "datasets" / "data" / "digits.csv.gz", "rt") as f:
        table = np.loadtxt(f, delimiter=",")
    return table[:, :-1].reshape(-1, 8, 8), table[:, -1].astype(int)


@register_dataset("digits", default_size=8, needs_root=False, summary="sklearn handwritten digits, 1,797 images 8x8, 10 classes (bundled, no download)")
def load(cfg: dict) -> ImageDataset:
    pixels, labels = read_digits()
    images = np.round(pixels * (255 / 16)).astype(np.uint8)[:, None]  # pixel values are 0..16
    size = cfg["image_size"]
    if size != images.shape[-1]:
        resized = F.interpolate(torch.from_numpy(images).float(), size=(size, size), mode="bilinear", align_corners=False)
        images = resized.round().clamp(0, 255).to(torch.uint8).numpy()
    scaled = images / 255.0
    return ImageDataset(
        name="digits",
        images=images,
        labels=labels.astype(np.int64),
        classes=[str(d) for d in range(10)],
        mean=(float(scaled.mean()),),
        std=(float(scaled.std()),),
    )
