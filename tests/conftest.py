"""Shared test helpers: tiny resolved configs, real-data location, a small federation."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from bench.testing import tiny_config  # noqa: F401 - the tests' tiny config, from the authors' kit

REPO = Path(__file__).resolve().parent.parent


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
    """Run `cfg` straight through, then with a simulated node failure at the start of
    `crash_round` and restarted: the restart resumes there and ends with exactly the straight
    run's metrics (`bench.testing.conformance`). Returns the resumed run's record."""
    from bench.engine.run import execute
    from bench.testing.conformance import check_resume_is_exact

    execute(cfg, tmp_path / "straight", show_progress=False)
    return check_resume_is_exact(cfg["method"]["name"], cfg, tmp_path / "straight", tmp_path / "resumed", crash_round)


@pytest.fixture(autouse=True)
def _single_thread():
    torch.set_num_threads(1)
    yield
