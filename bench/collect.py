"""Read a folder of run directories into tidy tables, whatever methods produced them.

Failed and diverged runs are kept (their status is a column); folders without a readable
`run.json` are reported and skipped, never silently mixed in.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pandas as pd

log = logging.getLogger(__name__)

RUN_FIELDS = {
    "run_id": "run_id",
    "status": "status",
    "headline_scope": "headline_scope",
    "rounds_completed": "rounds_completed",
    "diverged_round": "diverged_round",
    "model.parameters": "model_parameters",
    "communication.full_state_mb_per_round": "full_state_mb_per_round",
    "timing.seconds_per_round": "seconds_per_round",
    "environment.git_revision": "git_revision",
    "environment.device": "device",
}


def method_label(config: dict, varying: set[str]) -> str:
    """'fedlsc' or, where runs of a method differ in hyper-parameters, 'fedlsc (per=0.01)'."""
    method = config["method"]
    shown = [f"{k}={method[k]:g}" if isinstance(method[k], float) else f"{k}={method[k]}" for k in sorted(varying) if k in method]
    return method["name"] + (f" ({', '.join(shown)})" if shown else "")


def read_records(source: Path | list[Path]) -> tuple[list[tuple[Path, dict]], list[str]]:
    """Records from a folder of run directories, or from an explicit list of run.json files."""
    records, problems = [], []
    paths = sorted(source) if isinstance(source, list) else sorted(source.glob("*/run.json"))
    for path in paths:
        try:
            records.append((path.parent, json.loads(path.read_text())))
        except (OSError, json.JSONDecodeError) as exc:
            problems.append(f"{path}: unreadable ({exc.__class__.__name__}); skipped")
    if isinstance(source, Path) and source.is_dir():
        for folder in sorted(p for p in source.iterdir() if p.is_dir() and not (p / "run.json").exists()):
            problems.append(f"{folder}: no run.json (still running, killed, or not a run); skipped")
    return records, problems


def load_runs(source: Path | list[Path]) -> tuple[pd.DataFrame, pd.DataFrame, list[str]]:
    """(runs: one row per run with flattened config, metrics: long table with run_id, problems)."""
    records, problems = read_records(source)
    for problem in problems:
        log.warning(problem)
    if not records:
        return pd.DataFrame(), pd.DataFrame(), problems
    varying = varying_hparams([r for _, r in records])
    rows, frames = [], []
    for folder, record in records:
        flat = pd.json_normalize(record, sep=".").iloc[0].to_dict()
        row = {new: flat.get(old) for old, new in RUN_FIELDS.items()}
        row.update({k[len("config."):]: v for k, v in flat.items() if k.startswith("config.") and not k.startswith("config.runtime.")})
        row["method"] = method_label(record["config"], varying.get(record["config"]["method"]["name"], set()))
        rows.append(row)
        metrics_path = folder / "metrics.parquet"
        if metrics_path.is_file():
            frames.append(pd.read_parquet(metrics_path).assign(run_id=record["run_id"]))
    runs = pd.DataFrame(rows)
    metrics = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
    return runs, metrics, problems


def varying_hparams(records: list[dict]) -> dict[str, set[str]]:
    """Per method name, the hyper-parameters that take more than one value across the runs."""
    seen: dict[str, dict[str, set]] = {}
    for record in records:
        method = record["config"]["method"]
        for key, value in method.items():
            if key != "name":
                seen.setdefault(method["name"], {}).setdefault(key, set()).add(json.dumps(value))
    return {name: {k for k, values in hps.items() if len(values) > 1} for name, hps in seen.items()}


def headline_metrics(runs: pd.DataFrame, metrics: pd.DataFrame) -> pd.DataFrame:
    """Each run's mean-over-clients or global metrics in the scope its method is judged by."""
    scoped = metrics.merge(runs[["run_id", "headline_scope"]], on="run_id")
    keep = (scoped["scope"] == scoped["headline_scope"]) & scoped["client"].isna()
    return scoped.loc[keep].drop(columns=["headline_scope", "client"])
