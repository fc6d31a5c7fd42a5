"""Generated images for dataset fixtures: smooth random pictures whose copies are recognisable."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageEnhance


def smooth_image(rng: np.random.Generator, width: int = 48, height: int = 40) -> Image.Image:
    """A picture with structure at several scales (a perceptual hash is meaningful on it)."""
    coarse = rng.integers(30, 190, (4, 5, 3), dtype=np.uint8)  # headroom: a brighter copy does not saturate
    base = np.asarray(Image.fromarray(coarse).resize((width, height), Image.BICUBIC), dtype=np.int16)
    noise = rng.integers(-12, 13, base.shape)
    return Image.fromarray(np.clip(base + noise, 0, 255).astype(np.uint8))


def save(img: Image.Image, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path)
    return path


def augmented_copies(img: Image.Image) -> list[Image.Image]:
    """What datasets such as MODD ship next to an original: flipped, rotated by 90, brighter."""
    return [img.transpose(Image.FLIP_LEFT_RIGHT), img.rotate(90, expand=True), ImageEnhance.Brightness(img).enhance(1.25)]
