"""Decode images once into a uint8 array on disk, reused by every run of that dataset and size.

The cache key covers the dataset, the preprocessing settings and a fingerprint of the source
files (name, size, modification time), so a changed setting or file rebuilds it. The manifest
stores a checksum of the array: a truncated or corrupted cache file is rebuilt, not trusted.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import zlib
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError
from tqdm import tqdm

from bench.errors import UserError
from bench.io import atomic_path, write_json

log = logging.getLogger(__name__)

CACHE_FORMAT = 1


def decode_square(path: str, size: int) -> np.ndarray:
    """Decode one image to RGB, resize keeping the aspect ratio and centre-crop to size x size (C, H, W)."""
    try:
        with Image.open(path) as img:
            img.draft("RGB", (size, size))  # let the JPEG decoder downscale by DCT: much faster
            img = ImageOps.fit(img.convert("RGB"), (size, size), method=Image.BILINEAR)
            return np.asarray(img, dtype=np.uint8).transpose(2, 0, 1)
    except (UnidentifiedImageError, OSError, SyntaxError) as exc:
        raise UserError(f"cannot decode image {path} ({exc.__class__.__name__}: {exc}); replace or remove the file") from None


def _decode_chunk(args: tuple[list[str], int]) -> np.ndarray:
    paths, size = args
    return np.stack([decode_square(p, size) for p in paths])


def source_fingerprint(paths: Sequence[Path]) -> str:
    """Cheap identity of the source files: names, sizes and modification times."""
    digest = hashlib.sha256()
    for path in paths:
        stat = path.stat()
        digest.update(f"{path.name}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()


def checksum(array: np.ndarray) -> str:
    return f"adler32:{zlib.adler32(memoryview(np.ascontiguousarray(array)).cast('B')):08x}"


def decode_all(paths: Sequence[Path], size: int, workers: int | None = None, desc: str = "decoding") -> np.ndarray:
    """Decode images in parallel worker processes (all cores), in order, with a progress bar."""
    workers = workers or os.cpu_count() or 1
    chunk = 256
    jobs = [([str(p) for p in paths[i : i + chunk]], size) for i in range(0, len(paths), chunk)]
    out = np.empty((len(paths), 3, size, size), dtype=np.uint8)
    bar = tqdm(total=len(paths), desc=desc, unit="img", disable=None)
    with ProcessPoolExecutor(max_workers=workers) as pool:
        start = 0
        for block in pool.map(_decode_chunk, jobs):
            out[start : start + len(block)] = block
            start += len(block)
            bar.update(len(block))
    bar.close()
    return out


def cached_decode(
    cache_dir: str | os.PathLike,
    dataset: str,
    paths: Sequence[Path],
    size: int,
    settings: dict | None = None,
) -> np.ndarray:
    """Return the (N, 3, size, size) uint8 images of `paths`, decoding only on a cache miss."""
    key_blob = json.dumps(
        {"format": CACHE_FORMAT, "dataset": dataset, "size": size, "settings": settings or {}, "sources": source_fingerprint(paths)},
        sort_keys=True,
    )
    key = hashlib.sha256(key_blob.encode()).hexdigest()[:16]
    stem = Path(cache_dir) / f"{dataset}-{size}px-{key}"
    array_path, manifest_path = stem.with_suffix(".npy"), stem.with_suffix(".json")
    cached = _read_verified(array_path, manifest_path, expected_count=len(paths))
    if cached is not None:
        return cached
    log.info("building the %s cache at %d px for %d images (once)", dataset, size, len(paths))
    images = decode_all(paths, size, desc=f"{dataset} {size}px")
    with atomic_path(array_path) as tmp:
        with open(tmp, "wb") as fh:
            np.save(fh, images)
    write_json(manifest_path, {"key": key_blob, "shape": list(images.shape), "checksum": checksum(images)})
    return images


def _read_verified(array_path: Path, manifest_path: Path, expected_count: int) -> np.ndarray | None:
    if not (array_path.is_file() and manifest_path.is_file()):
        return None
    try:
        manifest = json.loads(manifest_path.read_text())
        images = np.load(array_path)
    except (OSError, ValueError, json.JSONDecodeError) as exc:
        log.warning("cache %s is unreadable (%s): rebuilding it", array_path, exc)
        return None
    if list(images.shape) != manifest.get("shape") or images.shape[0] != expected_count or checksum(images) != manifest.get("checksum"):
        log.warning("cache %s does not match its manifest (corrupted or stale): rebuilding it", array_path)
        return None
    return images
