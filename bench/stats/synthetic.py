"""Synthetic run directories in the exact format `fedrank run` writes, without training.

For the statistics tests and the aggregation benchmark (thousands of runs in seconds), and for
trying the report on a made-up study. Learning curves are smooth saturating curves whose height
depends on the method, the setting and the seed; the files, columns, dtypes and run.json keys are
those of the engine (tests/test_stats_collect.py checks them against a real run).
"""

from __future__ import annotations

import copy
import zlib
from pathlib import Path

import numpy as np
import pandas as pd

from bench.config import resolve, run_id, set_key
from bench.dictionary import write_run_table
from bench.engine.provenance import cuda_versions, package_versions
from bench.io import MB, file_sha256, write_json

PAPER_GRID_METHODS = [
    "local", "fedavg", "fedprox", {"name": "fedlsc", "per": 0.0}, "fedavg_fc", "fedprox_fc", {"name": "fedlsc", "per": 0.01},
]
STATE_BYTES = 400_000
LAYERS = [f"body.{i}.{kind}" for i in range(4) for kind in ("weight", "bias")] + ["head.weight", "head.bias"]
SCORE_METRICS = ("accuracy", "balanced_accuracy", "precision", "recall", "f1")


def stable_noise(*key: object) -> np.random.Generator:
    """A generator seeded by the key's content, so every run's curve is reproducible."""
    return np.random.default_rng(zlib.crc32(repr(key).encode()))


def base_config() -> dict:
    """A resolved run config (digits defaults) that synthetic runs override."""
    return resolve({"model": {"name": "small_cnn", "widths": [16, 32]}, "runtime": {"threads": 1}})


def method_traits(method: dict) -> tuple[bool, bool, float]:
    """(has a global model, personalised, share of the state it sends per round)."""
    name = method["name"]
    if name == "local":
        return False, True, 0.0
    personal = name.endswith("_fc") or (name == "fedlsc" and method.get("per", 0) > 0)
    return True, personal, 0.98 if personal else 1.0


def quality(cfg: dict, shift: dict[str, float]) -> float:
    """Plateau accuracy of a run: method offset, less with label skew, plus seed noise."""
    beta = cfg["partition"]["beta"]
    method = cfg["method"]["name"] + ("" if "per" not in cfg["method"] else f"/{cfg['method']['per']:g}")
    base = 0.80 + shift.get(method, shift.get(cfg["method"]["name"], 0.0)) - 0.04 / (1 + beta)
    return float(np.clip(base + stable_noise("q", cfg["data"]["name"], beta, cfg["seed"], method).normal(0, 0.01), 0.05, 0.99))


def long_block(rounds: np.ndarray, clients: list[int | None], names: list[str], scope: str, values: np.ndarray) -> dict[str, np.ndarray]:
    """Columns of a rounds x clients x metrics block (values in that shape), long format."""
    r, c, m = len(rounds), len(clients), len(names)
    return {
        "round": np.repeat(rounds, c * m),
        "scope": np.full(r * c * m, scope, dtype=object),
        "client": np.tile(np.repeat(np.array([-1 if x is None else x for x in clients]), m), r),
        "metric": np.tile(np.array(names, dtype=object), r * c),
        "value": values.reshape(-1),
    }


def evaluated_scopes(cfg: dict) -> tuple[list[str], list[str]]:
    """(scopes of the global model, scopes per client) the engine records for this config."""
    has_global, personal, _ = method_traits(cfg["method"])
    validation = cfg["partition"]["val_fraction"] > 0
    held = cfg["partition"]["holdout"] is not None
    whole = ["global", *(["val"] if validation else []), *(["heldout"] if held else []),
             *(["heldout_tuned"] if held and personal and cfg["eval"]["new_client_steps"] else [])] if has_global else []
    return whole, [*(["personal"] if personal else []), "local", *(["local_val"] if validation else [])]


def evaluation_blocks(cfg: dict, rounds: np.ndarray, classes: list[str], clients: int, rng: np.random.Generator) -> list[dict]:
    """The evaluation rows of one run: every scope it would record, per client and mean."""
    curve = quality(cfg, METHOD_SHIFT) * (1 - np.exp(-rounds / 6.0))
    whole, per_client_scopes = evaluated_scopes(cfg)
    names = [*SCORE_METRICS, "loss", *(f"recall/{c}" for c in classes), *(f"specificity/{c}" for c in classes), "auroc", "ece"]
    blocks = []
    for scope in whole + per_client_scopes:
        per_client = np.clip(curve[:, None, None] + rng.normal(0, 0.01, (len(rounds), clients, len(names))), 0, 1)
        per_client[..., names.index("loss")] = 2.5 * (1 - per_client[..., 0])
        per_client[..., names.index("ece")] = 0.3 * (1 - per_client[..., 0])
        mean = per_client.mean(1, keepdims=True)
        if scope in whole:
            blocks.append(long_block(rounds, [None], names, scope, mean))
        else:
            blocks.append(long_block(rounds, [*range(clients), None], names, scope, np.concatenate([per_client, mean], 1)))
    return blocks


METHOD_SHIFT = {"local": -0.12, "fedavg": 0.0, "fedprox": 0.002, "fedlsc/0": 0.01, "fedavg_fc": 0.015, "fedprox_fc": 0.016, "fedlsc/0.01": 0.03}


def run_tables(cfg: dict, stop: int, classes: list[str]) -> tuple[pd.DataFrame, pd.DataFrame, int]:
    """(metrics, diagnostics, bytes per round) of one run that played rounds 1..stop."""
    clients, every = cfg["partition"]["clients"], cfg["eval"]["every"]
    rng = stable_noise("run", run_id(cfg))
    played = np.arange(1, stop + 1)
    evaluated = played[(played % every == 0) | (played == cfg["train"]["rounds"])]
    _, _, share = method_traits(cfg["method"])
    sent = int(share * 2 * clients * STATE_BYTES)
    blocks = [
        long_block(played, list(range(clients)), ["loss"], "train", rng.uniform(0.2, 1.5, stop * clients)),
        long_block(played, [None], ["bytes", "bytes_down", "bytes_up", "clients"], "comm",
                   np.tile([float(sent), sent / 2, sent / 2, float(clients)], (stop, 1))),
        *evaluation_blocks(cfg, evaluated, classes, clients, rng),
    ]
    columns = {k: np.concatenate([b[k] for b in blocks]) for k in blocks[0]}
    order = np.argsort(columns["round"], kind="stable")
    metrics = pd.DataFrame({k: v[order] for k, v in columns.items()})
    metrics["client"] = pd.arrays.IntegerArray(metrics["client"].to_numpy(np.int64), mask=metrics["client"].to_numpy() == -1)
    return metrics, diagnostics(cfg, played, rng), sent


def participation_diagnostics(cfg: dict, played: np.ndarray) -> list[pd.DataFrame]:
    """The engine's per-round participation record: every client takes part and reports."""
    clients = cfg["partition"]["clients"]
    steps = float(cfg["train"]["local_epochs"] * 10)
    return [pd.DataFrame({"round": np.repeat(played, clients), "name": f"participation/{name}", "layer": None,
                          "client": np.tile(np.arange(clients), len(played)), "value": value})
            for name, value in (("took_part", 1.0), ("reported", 1.0), ("steps", steps))]


def diagnostics(cfg: dict, played: np.ndarray, rng: np.random.Generator) -> pd.DataFrame:
    """Participation, and FedLSC's per-round layer similarities, client weights and personal-layer flags."""
    columns = ["round", "name", "layer", "client", "value"]
    if not len(played):
        return pd.DataFrame({c: pd.Series(dtype="Int64" if c == "client" else None) for c in columns})
    frames = participation_diagnostics(cfg, played)
    if cfg["method"]["name"] == "fedlsc":
        frames += fedlsc_diagnostics(cfg, played, rng)
    out = pd.concat(frames, ignore_index=True)
    out["client"] = out["client"].astype("Int64")
    return out


def fedlsc_diagnostics(cfg: dict, played: np.ndarray, rng: np.random.Generator) -> list[pd.DataFrame]:
    """FedLSC's per-round layer similarities, client weights and personal-layer flags."""
    clients, layers = cfg["partition"]["clients"], np.array(LAYERS, dtype=object)
    similarity = np.clip(np.linspace(0.2, 0.9, len(layers))[None, :] * (1 - np.exp(-played[:, None] / 4)) + rng.normal(0, 0.02, (len(played), len(layers))), -1, 1)
    cutoff = np.quantile(similarity[0], cfg["method"]["per"])
    personal = np.tile(similarity[0] < cutoff, (len(played), 1)).astype(float)
    weights = rng.dirichlet(np.ones(clients), (len(played), len(layers)))
    return [
        pd.DataFrame({"round": np.repeat(played, len(layers)), "name": "layer_similarity", "layer": np.tile(layers, len(played)), "client": None, "value": similarity.ravel()}),
        pd.DataFrame({"round": np.repeat(played, len(layers) * clients), "name": "client_weight", "layer": np.tile(np.repeat(layers, clients), len(played)),
                      "client": np.tile(np.arange(clients), len(played) * len(layers)), "value": weights.ravel()}),
        pd.DataFrame({"round": np.repeat(played, len(layers)), "name": "personal", "layer": np.tile(layers, len(played)), "client": None, "value": personal.ravel()}),
    ]


def run_record(cfg: dict, status: str, stop: int, classes: list[str], sent: int, rng: np.random.Generator) -> dict:
    """A run.json with every key the engine writes (values made up where they do not matter)."""
    has_global, personal, _ = method_traits(cfg["method"])
    clients = cfg["partition"]["clients"]
    shares = rng.dirichlet(np.full(len(classes), cfg["partition"]["beta"]), clients)
    counts = np.stack([rng.multinomial(400, p) for p in shares])
    seconds = rng.uniform(0.9, 1.1, stop).tolist()
    size = {"parameters": STATE_BYTES // 4 - 100, "state_floats": STATE_BYTES // 4, "state_layers": len(LAYERS), "state_bytes": STATE_BYTES}
    return {
        "run_id": run_id(cfg), "status": status,
        "error": "RuntimeError: synthetic failure" if status == "failed" else None,
        "rounds_completed": stop if status != "diverged" else stop - 1,
        "diverged_round": stop if status == "diverged" else None,
        "resumed_from_round": None,
        "headline_scope": "global" if has_global and not personal else "personal",
        "seed": cfg["seed"], "method": dict(cfg["method"]), "config": cfg, "config_digest": run_id(cfg).rsplit("-", 1)[-1],
        "model": {"name": cfg["model"]["name"], **size, "init": "random init (no model.weights given)",
                  "architectures": {"main": {**size, "clients": list(range(clients))}}},
        "communication": {"full_state_bytes_per_round": 2 * clients * STATE_BYTES, "full_state_mb_per_round": 2 * clients * STATE_BYTES / MB,
                          "sent_bytes": sent * stop, "sent_mb_per_round": sent / MB,
                          "note": "full state: upload + download by every client; sent: what was sent; MB = 2**20 bytes"},
        "data": {"name": cfg["data"]["name"], "classes": classes, "image_size": 32, "train_pool": int(counts.sum() * 1.25), "public": 0, "global_test": 1000,
                 "validation": int(counts.sum() * cfg["partition"]["val_fraction"]),
                 "clients": [{"id": i, "train": int(c.sum()), "local_test": int(c.sum()) // 4, "validation": int(c.sum() * cfg["partition"]["val_fraction"]),
                              "class_counts": c.tolist(), "label_noise": 0.0} for i, c in enumerate(counts)],
                 "holdout": None if cfg["partition"]["holdout"] is None else {"name": cfg["partition"]["holdout"], "train": 300, "local_test": 75},
                 "notes": ["synthetic results (bench.stats.synthetic): no model was trained"]},
        "privacy": None,
        "method_source": {"file": "synthetic", "sha256": None, "package": {"name": "fedrank", "version": "synthetic"}},
        "environment": {"fedrank": "synthetic", "python": "-", "packages": package_versions(), "cuda": cuda_versions(), "device": "none",
                        "git_revision": "synthetic", "host": "-", "platform": "-"},
        "timing": {"started_at": "2026-01-01T00:00:00+00:00", "finished_at": "2026-01-01T00:01:00+00:00", "wall_seconds": float(sum(seconds)),
                   "startup_seconds": 3.0, "seconds_per_round": float(np.mean(seconds)) if seconds else 0.0, "round_seconds": seconds, "peak_gpu_memory_mb": None},
    }


def write_run(root: Path, cfg: dict, status: str = "completed", stop: int | None = None, classes: int = 7) -> Path:
    """Write one synthetic run directory; returns its run.json. `stop`: the last round played
    (diverged: the round that diverged; failed: the round it crashed after)."""
    rounds = cfg["train"]["rounds"]
    stop = rounds if stop is None else stop
    names = [f"c{i}" for i in range(classes)]
    metrics, diagnostics, sent = run_tables(cfg, stop if status != "diverged" else stop - 1, names)
    folder = root / run_id(cfg)
    write_run_table(folder / "metrics.parquet", metrics, "metrics.parquet", run_id(cfg))
    write_run_table(folder / "diagnostics.parquet", diagnostics, "diagnostics.parquet", run_id(cfg))
    record = run_record(cfg, status, stop, names, sent, stable_noise("record", run_id(cfg)))
    write_json(folder / "run.json", {**record, "metrics_sha256": file_sha256(folder / "metrics.parquet")})
    return folder / "run.json"


def record_metrics_sha256(record: Path) -> None:
    """Record in a run.json the SHA-256 of its folder's metrics.parquet as it is now: for a test that
    hand-edits a synthetic run's metrics, as the engine records the file it wrote (reports refuse
    a metrics file that is not the recorded one)."""
    import json

    write_json(record, {**json.loads(record.read_text()), "metrics_sha256": file_sha256(record.parent / "metrics.parquet")})


def grid_configs(grid: dict[str, list], base: dict | None = None) -> list[dict]:
    """Run configs of a grid of dotted keys (like a workflow grid); the method is resolved by name."""
    from bench.methods import resolve_method_config
    from bench.workflow import grid_points

    base = base_config() if base is None else base
    configs = []
    for point in grid_points(grid):
        cfg = copy.deepcopy(base)
        for key, value in point.items():
            set_key(cfg, key, value)
        cfg["method"] = resolve_method_config(cfg["method"])
        configs.append(cfg)
    return configs


def write_study(root: Path, grid: dict[str, list], *, diverged: float = 0.0, failed: float = 0.0, missing: float = 0.0,
                classes: int = 7, progress: bool = False) -> list[Path]:
    """Write every run of `grid` under `root`; the given shares of runs diverge, fail, or are left
    out (a missing seed), chosen reproducibly. Returns the run.json paths written."""
    from tqdm import tqdm

    paths = []
    for cfg in tqdm(grid_configs(grid), desc="synthetic runs", unit="run", disable=not progress):
        draw = stable_noise("fate", run_id(cfg)).uniform()
        if draw < missing:
            continue
        rounds = cfg["train"]["rounds"]
        status = "diverged" if draw < missing + diverged else "failed" if draw < missing + diverged + failed else "completed"
        stop = rounds if status == "completed" else max(2, rounds // 2)
        paths.append(write_run(root, cfg, status, stop, classes))
    return paths
