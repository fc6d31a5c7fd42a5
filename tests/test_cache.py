"""The decode cache: keyed by source checksums and settings, verified on load, memory-mapped."""

from __future__ import annotations

import os
import shutil
import zlib

import numpy as np
import pytest

import bench.data.cache as cache
from bench.data.cache import cached_decode, crc32, source_files, usable_cores
from imagegen import save, smooth_image


@pytest.fixture
def images(tmp_path):
    rng = np.random.default_rng(0)
    return [save(smooth_image(rng), tmp_path / "src" / f"img{i}.jpg") for i in range(6)]


def settings(tmp_path, size=8, color_constancy=None) -> dict:
    return {"cache_dir": str(tmp_path / "cache"), "image_size": size, "color_constancy": color_constancy}


def count_calls(monkeypatch, module, name) -> list:
    calls = []
    real = getattr(module, name)
    monkeypatch.setattr(module, name, lambda *a, **k: calls.append(1) or real(*a, **k))
    return calls


def load(tmp_path, paths, **kw) -> np.ndarray:
    cfg = settings(tmp_path, **kw)
    return cached_decode(cfg, "demo", paths, source_files(cfg["cache_dir"], "demo", paths, perceptual=False))


def test_checksums_are_computed_once_and_only_for_changed_files(tmp_path, images, monkeypatch):
    first = source_files(tmp_path / "cache", "demo", images, perceptual=False)
    hashed = count_calls(monkeypatch, cache, "parallel_chunks")
    assert source_files(tmp_path / "cache", "demo", images, perceptual=False) == first and not hashed
    os.utime(images[2], ns=(1, 1))  # touched: re-hashed, same checksum
    again = source_files(tmp_path / "cache", "demo", images, perceptual=False)
    assert hashed == [1] and again.digests == first.digests
    assert source_files(tmp_path / "cache", "demo", images, perceptual=True).phashes.shape == (6, 8)  # hashes added on demand


def test_same_bytes_elsewhere_reuse_the_cache_and_a_changed_file_or_setting_rebuilds_it(tmp_path, images, monkeypatch):
    decoded = count_calls(monkeypatch, cache, "decode_all")
    original = load(tmp_path, images)
    moved = [shutil.copy(p, tmp_path / p.name) for p in images]  # new paths and times, same bytes
    assert np.array_equal(load(tmp_path, [type(images[0])(p) for p in moved]), original) and decoded == [1]
    load(tmp_path, images, color_constancy=6)
    load(tmp_path, images, size=12)
    assert decoded == [1, 1, 1]
    save(smooth_image(np.random.default_rng(9)), images[0])
    assert not np.array_equal(load(tmp_path, images)[0], original[0]) and decoded == [1, 1, 1, 1]
    assert len(list((tmp_path / "cache").glob("*.npy"))) == 4


@pytest.mark.parametrize("damage", ["flip", "truncate", "empty", "manifest"])
def test_a_damaged_cache_is_rebuilt_not_trusted(tmp_path, images, monkeypatch, caplog, damage):
    original = load(tmp_path, images)
    array = next((tmp_path / "cache").glob("*.npy"))
    if damage == "flip":
        raw = bytearray(array.read_bytes())
        raw[len(raw) // 2] ^= 0x01
        array.write_bytes(bytes(raw))
    elif damage in ("truncate", "empty"):
        array.write_bytes(array.read_bytes()[:-7] if damage == "truncate" else b"")
    else:
        array.with_suffix(".json").write_text("{not json")
    decoded = count_calls(monkeypatch, cache, "decode_all")
    assert np.array_equal(load(tmp_path, images), original) and decoded == [1]
    assert "rebuilding it" in caplog.text


def test_a_verified_cache_is_memory_mapped(tmp_path, images):
    load(tmp_path, images)
    hit = load(tmp_path, images)
    assert isinstance(hit, np.memmap) and hit.flags.writeable  # copy-on-write: shared pages, usable by torch


def test_crc32_reads_block_by_block_and_equals_zlib(monkeypatch):
    array = np.random.default_rng(0).integers(0, 256, (5, 3, 7, 7), dtype=np.uint8)
    monkeypatch.setattr(cache, "CRC_BLOCK", 100)  # several blocks, the last one partial
    assert crc32(array) == f"crc32:{zlib.crc32(array.tobytes()):08x}"


def test_workers_respect_the_cpus_this_job_may_use():
    assert 1 <= usable_cores() <= (os.cpu_count() or 1)


def test_a_cache_build_logs_its_progress_and_its_end_when_not_on_a_terminal(tmp_path, images, monkeypatch, caplog):
    """tqdm draws nothing into a file: a heartbeat line per chunk (interval 0 here) and the end."""
    monkeypatch.setattr(cache, "CHUNK", 2)
    monkeypatch.setattr("bench.heartbeat.EVERY_SECONDS", 0.0)
    with caplog.at_level("INFO", logger=cache.log.name):
        load(tmp_path, images)
    assert [m for m in caplog.messages if m.startswith("demo 8px: ")] == ["demo 8px: 2 of 6 images", "demo 8px: 4 of 6 images", "demo 8px: 6 of 6 images"]
    assert caplog.messages[-1].startswith("built the demo cache: 6 images in ")
