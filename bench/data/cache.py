"""Decode images once into a uint8 array on disk, reused by every run of that dataset and size.

Two layers, both under `data.cache_dir`:

* the **source index** (`sources/<dataset>-<folders hash>.json`) remembers each source file's
  SHA-256 (and perceptual hashes) by name, size and modification time, so the checksums are
  computed once and recomputed only for files that changed;
* the **pixel cache** (`<dataset>-<size>px-<key>.npy` + `.json` manifest) is keyed by the
  dataset, the image size, the preprocessing settings and the checksums of all source files:
  a changed setting or file gives another key, so it is rebuilt; copying the data elsewhere
  (new paths and times, same bytes) reuses it.

Loading memory-maps the array (jobs on one node share the page cache) and verifies its CRC-32
against the manifest: a truncated or corrupted cache is rebuilt, never trusted. Decoding and
hashing run in worker processes on every core this job may use (SLURM's allocation included).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
import zlib
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Sequence, TypeVar

import numpy as np
from tqdm import tqdm

from bench.data.preprocess import decode_image, fingerprint_file
from bench.heartbeat import Heartbeat
from bench.io import atomic_path, write_json, write_text

log = logging.getLogger(__name__)

CACHE_FORMAT = 3  # 3: 16-bit greyscale scaled to 8 bits (2 and before cached it clipped to white)
CRC_BLOCK = 1 << 26  # checksum 64 MiB at a time, so a memory map is never copied whole
CHUNK = 64  # images per worker task

T = TypeVar("T")


def usable_cores() -> int:
    """Cores this process may run on (respects SLURM/cgroup CPU binding, unlike os.cpu_count)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def parallel_chunks(work: Callable[[list], list[T]], items: Sequence, desc: str) -> Iterable[T]:
    """Apply `work` to chunks of `items` in worker processes, yielding results in order with a progress bar."""
    chunks = [list(items[i : i + CHUNK]) for i in range(0, len(items), CHUNK)]
    pool = ProcessPoolExecutor(max_workers=min(usable_cores(), max(len(chunks), 1)))
    try:
        with tqdm(total=len(items), desc=desc, unit="img", disable=None) as bar:
            beat, done = Heartbeat(log), 0
            for block in pool.map(work, chunks):
                bar.update(len(block))
                done += len(block)
                beat("%s: %d of %d images", desc, done, len(items))
                yield from block
    finally:  # on a bad file, stop at once instead of finishing every other chunk first
        pool.shutdown(wait=True, cancel_futures=True)


# ---- source index: checksums of the source files ------------------------------------------------
@dataclass(frozen=True)
class SourceFiles:
    """Per-file SHA-256 of the sources and, if computed, their (N, 8) dihedral perceptual hashes."""

    digests: list[str]
    phashes: np.ndarray | None

    @property
    def digest(self) -> str:
        """One checksum over all files' contents, in order."""
        return hashlib.sha256("\n".join(self.digests).encode()).hexdigest()


def _fingerprint_chunk(args: list[tuple[str, bool]]) -> list[tuple[str, list[int] | None]]:
    out = []
    for path, perceptual in args:
        digest, hashes = fingerprint_file(path, perceptual)
        out.append((digest, None if hashes is None else [int(h) for h in hashes]))
    return out


def source_files(cache_dir: str | os.PathLike, dataset: str, paths: Sequence[Path], perceptual: bool) -> SourceFiles:
    """Checksums (and perceptual hashes if asked) of `paths`, recomputing only changed files."""
    paths = [os.path.abspath(p) for p in paths]
    folders = sorted({os.path.dirname(p) for p in paths})
    index_path = Path(cache_dir) / "sources" / f"{dataset}-{hashlib.sha256(json.dumps(folders).encode()).hexdigest()[:12]}.json"
    known = _read_index(index_path)
    entries, todo = {}, []
    for path in paths:
        stat = os.stat(path)
        stamp = [stat.st_size, stat.st_mtime_ns]
        entry = known.get(path)
        if entry and entry["stamp"] == stamp and (entry["phash"] is not None or not perceptual):
            entries[path] = entry
        else:
            entries[path] = {"stamp": stamp}
            todo.append(path)
    if todo:
        log.info("%s: checksumming %d source file(s)", dataset, len(todo))
        results = parallel_chunks(_fingerprint_chunk, [(p, perceptual) for p in todo], f"{dataset} checksums")
        for path, (digest, hashes) in zip(todo, results):
            entries[path].update(sha256=digest, phash=hashes)
        write_text(index_path, json.dumps({"format": CACHE_FORMAT, "folders": folders, "files": entries}, separators=(",", ":")))
    ordered = [entries[p] for p in paths]
    phashes = np.array([e["phash"] for e in ordered], dtype=np.uint64).reshape(-1, 8) if perceptual else None
    return SourceFiles([e["sha256"] for e in ordered], phashes)


def _read_index(path: Path) -> dict:
    try:
        index = json.loads(path.read_text())
        return index["files"] if index.get("format") == CACHE_FORMAT else {}
    except (OSError, ValueError, KeyError, TypeError):
        return {}


# ---- pixel cache ---------------------------------------------------------------------------------
def crc32(array: np.ndarray) -> str:
    """CRC-32 of the array's bytes, block by block (a memory-mapped array is read once, never copied)."""
    flat = array.reshape(-1)
    crc = 0
    for start in range(0, flat.size, CRC_BLOCK):
        crc = zlib.crc32(memoryview(np.ascontiguousarray(flat[start : start + CRC_BLOCK])), crc)
    return f"crc32:{crc:08x}"


def cached_array(cache_dir: str | os.PathLike, dataset: str, size: int | None, key: dict, build: Callable[[], np.ndarray]) -> np.ndarray:
    """The array `build()` makes, from the cache when one with this key verifies, else built and cached."""
    blob = json.dumps({"format": CACHE_FORMAT, "dataset": dataset, "size": size, **key}, sort_keys=True)
    digest = hashlib.sha256(blob.encode()).hexdigest()[:16]
    stem = Path(cache_dir) / f"{dataset}-{size or 'native'}px-{digest}"
    array_path, manifest_path = stem.with_suffix(".npy"), stem.with_suffix(".json")
    cached = _read_verified(array_path, manifest_path)
    if cached is not None:
        return cached
    log.info("building the %s cache at %s px (once): %s", dataset, size or "native", array_path)
    tic = time.perf_counter()
    images = build()
    with atomic_path(array_path) as tmp:
        with open(tmp, "wb") as fh:
            np.save(fh, images)
    write_json(manifest_path, {"key": json.loads(blob), "shape": list(images.shape), "dtype": str(images.dtype), "checksum": crc32(images)})
    log.info("built the %s cache: %d images in %.0f s", dataset, len(images), time.perf_counter() - tic)
    return images


def _read_verified(array_path: Path, manifest_path: Path) -> np.ndarray | None:
    if not (array_path.is_file() and manifest_path.is_file()):
        return None
    try:
        manifest = json.loads(manifest_path.read_text())
        images = np.load(array_path, mmap_mode="c")  # copy-on-write map: shared pages, writable for torch
        intact = list(images.shape) == manifest["shape"] and str(images.dtype) == manifest["dtype"] and crc32(images) == manifest["checksum"]
    except (OSError, EOFError, ValueError, KeyError, TypeError) as exc:  # EOFError: an empty .npy
        log.warning("cache %s is unreadable (%s): rebuilding it", array_path, exc)
        return None
    if not intact:
        log.warning("cache %s does not match its manifest (corrupted or stale): rebuilding it", array_path)
        return None
    return images


def _decode_chunk(args: list[tuple[str, int, float | None]]) -> list[np.ndarray]:
    return [decode_image(path, size, cc) for path, size, cc in args]


def decode_all(paths: Sequence[Path], size: int, color_constancy: float | None = None, desc: str = "decoding") -> np.ndarray:
    """Decode images in worker processes (every usable core), in order, with a progress bar."""
    out = np.empty((len(paths), 3, size, size), dtype=np.uint8)
    jobs = [(str(p), size, color_constancy) for p in paths]
    for i, pixels in enumerate(parallel_chunks(_decode_chunk, jobs, desc)):
        out[i] = pixels
    return out


def cached_decode(cfg: dict, dataset: str, paths: Sequence[Path], sources: SourceFiles) -> np.ndarray:
    """The (N, 3, size, size) uint8 pixels of `paths` under the data config's preprocessing."""
    size, cc = cfg["image_size"], cfg.get("color_constancy")
    key = {"sources": sources.digest, "color_constancy": cc, "resize": "fit-bilinear"}
    return cached_array(cfg["cache_dir"], dataset, size, key, lambda: decode_all(paths, size, cc, desc=f"{dataset} {size}px"))
