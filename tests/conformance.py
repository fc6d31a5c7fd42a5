"""What every registered method must do (tests/test_conformance.py runs it for each; the module
`fedrank new-method` writes is checked with it too): two rounds on `synthetic` with full and with
partial participation give finite metrics and change state; a crash at round 2 resumes to
bit-identical metrics (which also shows the run is deterministic); the hyper-parameters are in the
schema; the bytes counted follow who took part; under each privacy mode a method either runs or is
refused with one line before any file is written, as it declares and as running it shows."""

from __future__ import annotations

import dataclasses
import json
import math

import pandas as pd
import torch

from bench.engine.privacy import MODES, compatibility, probe, refusal
from bench.engine.run import RunPaths
from bench.methods import registry, resolve_method_config
from conftest import assert_resume_is_exact, tiny_config
from method_needs import needs

PARTICIPATION = {
    # every client takes part
    "full": {},
    # 6 clients, half of them sampled per round, some dropping out or straggling
    "partial": {"partition__clients": 6, "partition__min_samples": 8, "train__participation": 0.5, "train__dropout": 0.25, "train__stragglers": 0.5},
}


def conformance_config(method: str, participation: str) -> dict:
    """Two short rounds on synthetic data, with a public split (for methods that distil on one) and
    what the method needs beyond that (tests/method_needs.py)."""
    return tiny_config(method=method, train__rounds=2, data__public_fraction=0.2, runtime__keep_checkpoint=True, **needs(method),
                       **PARTICIPATION[participation])


def check_hyper_parameters_are_in_the_schema(name: str) -> None:
    cls = registry()[name]
    resolved = resolve_method_config({"name": name})
    assert set(resolved) - {"name"} == set(cls.hparams())
    assert cls(**{k: v for k, v in resolved.items() if k != "name"}).config() == resolved  # defaults round-trip through JSON
    for f in dataclasses.fields(cls):
        assert f.name in cls.hparams() or not f.init, f"{name}.{f.name}: a field set at construction must be declared with hparam()"
    assert cls.summary(), f"{name}: the class docstring's first line is its summary in `fedrank methods`"


def check_method(name: str, participation: str, tmp_path, monkeypatch) -> None:
    cfg = conformance_config(name, participation)
    record = assert_resume_is_exact(cfg, tmp_path, monkeypatch, crash_round=2)
    paths = RunPaths(tmp_path / "resumed")
    metrics = pd.read_parquet(paths.metrics)
    scored = metrics[metrics["scope"].isin(["global", "personal", "local"])]
    assert len(scored) and scored["value"].map(math.isfinite).all(), f"{name}: non-finite or no evaluation metrics"
    assert record["headline_scope"] in set(scored["scope"])
    check_state_changed(name, cfg, paths)
    check_bytes_follow_participation(name, metrics, pd.read_parquet(paths.diagnostics), record)


def check_state_changed(name: str, cfg: dict, paths: RunPaths) -> None:
    from bench.engine.setup import build_experiment

    initial = build_experiment(cfg, torch.device("cpu")).fed.global_state
    saved = torch.load(paths.checkpoint, weights_only=True)
    moved = not torch.equal(saved["global_state"], initial) or bool(saved["to_clients"]) or any(state for state in saved["clients"])
    assert moved, f"{name}: two rounds changed neither the global state nor any client's state"


def check_bytes_follow_participation(name: str, metrics: pd.DataFrame, diagnostics: pd.DataFrame, record: dict) -> None:
    comm = metrics[metrics["scope"] == "comm"].pivot(index="round", columns="metric", values="value")
    assert (comm["bytes"] == comm["bytes_down"] + comm["bytes_up"]).all() and (comm >= 0).all().all()
    assert record["communication"]["sent_bytes"] == comm["bytes"].sum()
    took_part = diagnostics[diagnostics["name"] == "participation/took_part"].groupby("round")["value"].sum()
    reported = diagnostics[diagnostics["name"] == "participation/reported"]
    assert (comm["clients"] == reported.groupby("round")["value"].sum()).all()
    assert (comm.loc[took_part.index[took_part == 0], "bytes"] == 0).all(), f"{name}: bytes counted in a round nobody took part in"
    trained = set(map(tuple, metrics[metrics["scope"] == "train"][["round", "client"]].astype(int).to_numpy()))
    assert trained == set(map(tuple, reported[reported["value"] == 1][["round", "client"]].astype(int).to_numpy())), \
        f"{name}: training-loss rows for clients that did not report"


def check_privacy_mode(name: str, mode: str, tmp_path) -> None:
    """One round under `mode` (bench/engine/privacy.py) either runs, with finite metrics and the
    mode's privacy rows, or stops with a one-line reason; a method whose run shows a refusal declares
    it, so `fedrank run` refuses it before writing anything; the committed table agrees."""
    from bench.cli import main

    cls = registry()[name]
    outcome = probe(name, mode, tmp_path / "probe")
    declared = refusal(cls, mode)
    if outcome is True:
        assert mode == "sample_dp" or declared is None, f"{name}: declares it cannot run under {mode} ({declared}), but it does"
        metrics = pd.read_parquet(RunPaths(tmp_path / "probe").metrics)
        assert metrics["value"].map(math.isfinite).all(), f"{name} under {mode}: non-finite metrics"
        if mode != "secure_aggregation":
            assert (metrics["scope"] == "privacy").any(), f"{name} under {mode}: no epsilon in metrics.parquet"
    else:
        assert "\n" not in outcome and name in outcome
        assert declared is not None, f"{name}: running it under {mode} shows: {outcome}; declare that on the method"
    if declared is not None:
        out = tmp_path / "refused"
        cfg = conformance_config(name, "full")
        cfg["privacy"][mode] = {"clip": 1.0, "noise_multiplier": 1.0} if mode != "secure_aggregation" else True
        assert main(["run", "--config-json", json.dumps(cfg), "--out", str(out), "--quiet"]) == 2
        assert not out.exists(), f"{name}: a refused run wrote {out}"
    assert compatibility().get(name, {}).get(mode) == (outcome is True and declared is None), \
        f"{name}: bench/methods/privacy_compatibility.json is stale; run python -m bench.engine.privacy"
