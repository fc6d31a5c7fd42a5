"""Shared test helpers: tiny resolved configs, real-data location, a small federation."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from bench.config import resolve, set_key

REPO = Path(__file__).resolve().parent.parent


def tiny_config(**overrides) -> dict:
    """A resolved config that trains in well under a second per round (synthetic data)."""
    cfg: dict = {
        "data": {"name": "synthetic"},
        "partition": {"clients": 3, "beta": 1.0, "min_samples": 10},
        "model": {"name": "small_cnn", "widths": [8, 16]},
        "train": {"rounds": 3, "lr": 0.003, "batch_size": 16},
        "runtime": {"threads": 1},
    }
    for key, value in overrides.items():
        set_key(cfg, key.replace("__", "."), value)
    return resolve(cfg)


def data_root() -> Path:
    return Path(os.environ.get("FEDRANK_DATA_ROOT", REPO.parent / "shared" / "data"))


@pytest.fixture
def shared_data() -> Path:
    """The real datasets folder; skips the test (with the reason) when it is absent."""
    root = data_root()
    if not (root / "ham10000_200x150" / "HAM10000_metadata.csv").is_file():
        pytest.skip(f"real data not found under {root} (set FEDRANK_DATA_ROOT to the shared data folder)")
    return root


@pytest.fixture(scope="session")
def real_cache(tmp_path_factory) -> Path:
    """One decode cache for every real-data test of a session: each dataset is decoded once."""
    return tmp_path_factory.getbasetemp() / "real_cache"


def assert_resume_is_exact(cfg: dict, tmp_path: Path, monkeypatch, crash_round: int) -> dict:
    """Run `cfg` straight through; run it again with a simulated node failure at the start of
    `crash_round`, then restart it: the restarted run must resume there and end with exactly
    the straight run's metrics. Returns the resumed run's record."""
    import json

    import pandas as pd

    import bench.engine.run as engine_run
    from bench.engine.run import RunPaths, execute

    execute(cfg, tmp_path / "straight", show_progress=False)
    real_play = engine_run.play_round

    def crash(exp, progress, *beat):
        if exp.fed.round == crash_round:
            raise RuntimeError("simulated node failure")
        return real_play(exp, progress, *beat)

    monkeypatch.setattr(engine_run, "play_round", crash)
    with pytest.raises(RuntimeError, match="simulated node failure"):
        execute(cfg, tmp_path / "resumed", show_progress=False)
    paths = RunPaths(tmp_path / "resumed")
    failed = json.loads(paths.record.read_text())
    assert failed["status"] == "failed" and "simulated node failure" in failed["error"]
    assert paths.checkpoint.exists()
    monkeypatch.setattr(engine_run, "play_round", real_play)
    record = execute(cfg, paths.root, show_progress=False)
    assert record["status"] == "completed" and record["resumed_from_round"] == crash_round
    straight, resumed = (pd.read_parquet(RunPaths(tmp_path / d).metrics) for d in ("straight", "resumed"))
    pd.testing.assert_frame_equal(straight, resumed, check_exact=True)
    return record


@pytest.fixture(autouse=True)
def _single_thread():
    torch.set_num_threads(1)
    yield
