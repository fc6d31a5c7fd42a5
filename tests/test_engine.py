"""Determinism, paired comparisons, kill-and-resume equality, divergence, run records."""

from __future__ import annotations

import json

import numpy as np
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass

import pandas as pd
import pytest
import torch

import bench.methods
from bench.engine.run import RunPaths, execute
from bench.engine.setup import build_experiment
from bench.errors import UserError
from bench.methods import Method, register
from conftest import REPO, assert_resume_is_exact, tiny_config


def metrics_of(path) -> pd.DataFrame:
    return pd.read_parquet(RunPaths(path).metrics)


def test_same_config_and_seed_gives_bit_identical_metrics(tmp_path):
    cfg = tiny_config(method="fedlsc", method__per=0.2)
    execute(cfg, tmp_path / "a", show_progress=False)
    execute(cfg, tmp_path / "b", show_progress=False)
    pd.testing.assert_frame_equal(metrics_of(tmp_path / "a"), metrics_of(tmp_path / "b"), check_exact=True)
    pd.testing.assert_frame_equal(pd.read_parquet(RunPaths(tmp_path / "a").diagnostics), pd.read_parquet(RunPaths(tmp_path / "b").diagnostics), check_exact=True)


def test_another_seed_gives_other_numbers(tmp_path):
    execute(tiny_config(seed=0), tmp_path / "a", show_progress=False)
    execute(tiny_config(seed=1), tmp_path / "b", show_progress=False)
    assert not metrics_of(tmp_path / "a")["value"].equals(metrics_of(tmp_path / "b")["value"])


def test_every_method_sees_the_same_partition_and_initial_model():
    cpu = torch.device("cpu")
    first = build_experiment(tiny_config(method="fedavg", seed=4), cpu)
    for method in ("fedlsc", "local", "fedprox_fc"):
        other = build_experiment(tiny_config(method=method, seed=4), cpu)
        assert torch.equal(first.fed.global_state, other.fed.global_state)
        for a, b in zip(first.fed.clients, other.fed.clients):
            assert torch.equal(a.train, b.train) and torch.equal(a.test, b.test)
        assert torch.equal(first.test_index, other.test_index)
    reseeded = build_experiment(tiny_config(method="fedavg", seed=5), cpu)
    assert not torch.equal(first.fed.global_state, reseeded.fed.global_state)
    assert torch.equal(first.test_index, reseeded.test_index)  # the global test set does not move with the seed


def test_run_record_holds_provenance_and_costs(tmp_path):
    record = execute(tiny_config(method="fedavg"), tmp_path / "run", show_progress=False)
    on_disk = json.loads(RunPaths(tmp_path / "run").record.read_text())
    assert on_disk["status"] == "completed" and on_disk["rounds_completed"] == 3
    for key in ("python", "device", "git_revision"):
        assert on_disk["environment"][key]
    from bench.engine.provenance import dependency_names

    assert set(on_disk["environment"]["packages"]) == set(dependency_names()) >= {"torch", "numpy", "scipy", "pandas", "numba", "scikit-learn", "snakemake"}
    assert all(on_disk["environment"]["packages"].values())  # every dependency installed and its version recorded
    assert on_disk["model"]["init"].startswith("random init")
    assert on_disk["model"]["parameters"] == sum(p.numel() for p in build_experiment(record["config"], torch.device("cpu")).fed.model.parameters())
    metrics = metrics_of(tmp_path / "run")
    sent = metrics[(metrics["scope"] == "comm") & (metrics["metric"] == "bytes")]["value"]
    assert (sent == on_disk["communication"]["full_state_bytes_per_round"]).all()  # FedAvg, every client takes part
    assert on_disk["communication"]["sent_bytes"] == sent.sum()
    assert on_disk["headline_scope"] == "global"
    assert {"global", "local", "train", "comm"} == set(metrics["scope"])
    assert not RunPaths(tmp_path / "run").checkpoint.exists()


def test_a_finished_run_is_not_repeated(tmp_path):
    cfg = tiny_config()
    execute(cfg, tmp_path / "run", show_progress=False)
    stamp = RunPaths(tmp_path / "run").record.stat().st_mtime_ns
    execute(cfg, tmp_path / "run", show_progress=False)
    assert RunPaths(tmp_path / "run").record.stat().st_mtime_ns == stamp


def test_a_crash_mid_run_resumes_to_identical_metrics(tmp_path, monkeypatch):
    assert_resume_is_exact(tiny_config(method="fedlsc", method__per=0.2, train__rounds=4), tmp_path, monkeypatch, crash_round=3)


def _run_in_subprocess(cfg: dict, out, **kwargs) -> subprocess.Popen:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen([sys.executable, "-m", "bench", "run", "--quiet", "--config-json", json.dumps(cfg), "--out", str(out)],
                            cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, **kwargs)


def _wait_for_rounds(paths: RunPaths, proc: subprocess.Popen, rounds: int, timeout: float = 120) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if paths.checkpoint.exists():
            try:
                saved = torch.load(paths.checkpoint, weights_only=True)
            except Exception:  # replaced while reading
                continue
            if saved["progress"]["next_round"] > rounds:
                return
        assert proc.poll() is None, proc.stderr.read().decode()
        time.sleep(0.05)
    raise AssertionError("the run made no progress")


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM])
def test_killed_process_resumes_to_identical_metrics(tmp_path, sig):
    cfg = tiny_config(method="fedprox_fc", train__rounds=6, train__local_epochs=6)
    execute(cfg, tmp_path / "straight", show_progress=False)
    paths = RunPaths(tmp_path / "killed")
    proc = _run_in_subprocess(cfg, paths.root)
    _wait_for_rounds(paths, proc, rounds=2)
    proc.send_signal(sig)
    proc.wait(timeout=60)
    assert not paths.record.exists() and not paths.metrics.exists()  # nothing that looks finished
    resumed = _run_in_subprocess(cfg, paths.root)
    assert resumed.wait(timeout=300) == 0, resumed.stderr.read().decode()
    record = json.loads(paths.record.read_text())
    assert record["status"] == "completed" and record["resumed_from_round"] >= 3
    pd.testing.assert_frame_equal(metrics_of(tmp_path / "straight"), metrics_of(paths.root), check_exact=True)


def test_a_checkpoint_of_another_config_is_refused(tmp_path, monkeypatch):
    cfg = tiny_config(train__rounds=3, runtime__keep_checkpoint=True)
    execute(cfg, tmp_path / "run", show_progress=False)
    RunPaths(tmp_path / "run").record.unlink()
    with pytest.raises(UserError, match="different configuration"):
        execute(tiny_config(train__rounds=3, seed=9), tmp_path / "run", show_progress=False)


@dataclass(kw_only=True)
class ExplodesInRound2(Method):
    """Test method: a non-finite loss in round 2."""

    name = "explodes_test"

    def local_loss(self, fed, client):
        if fed.round == 2:
            return lambda batch: torch.tensor(float("nan"))
        return None


def test_a_non_finite_loss_ends_the_run_as_diverged(tmp_path):
    register(ExplodesInRound2)
    try:
        record = execute(tiny_config(method="explodes_test", train__rounds=4), tmp_path / "run", show_progress=False)
    finally:
        bench.methods._REGISTRY.pop("explodes_test", None)
    assert record["status"] == "diverged" and record["diverged_round"] == 2 and record["rounds_completed"] == 1
    metrics = metrics_of(tmp_path / "run")
    assert set(metrics.loc[metrics["scope"] == "global", "round"]) == {1}
    assert metrics.loc[(metrics["scope"] == "train") & (metrics["round"] == 2), "value"].isna().all()


def test_tie_averaged_ranks_are_scipy_rankdatas():
    from scipy.stats import rankdata

    from bench.engine.evaluate import tie_averaged_ranks

    values = np.random.default_rng(0).integers(0, 5, 200).astype(float) / 4  # many ties
    assert np.array_equal(tie_averaged_ranks(values), rankdata(values))
    assert tie_averaged_ranks(np.array([0.3, 0.1, 0.3, 0.2])).tolist() == [3.5, 1.0, 3.5, 2.0]
