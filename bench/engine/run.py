"""The round loop, written once for every method, with atomic outputs and exact resume.

A run directory holds `run.json` (the record, written last: its presence with a final status
means the run is finished), `metrics.parquet` (round x scope x client x metric, long format),
`diagnostics.parquet` (what the method recorded per round, e.g. FedLSC's layer similarities)
and, while running, `checkpoint.pt` (written atomically after every round). Starting a run
whose directory holds a checkpoint of the same config continues from its last round.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from tqdm import tqdm

from bench.config import config_digest, run_id
from bench.dictionary import write_run_table
from bench.engine.evaluate import evaluate
from bench.engine.federation import Updates
from bench.engine.paths import RunPaths
from bench.engine.provenance import environment, utc_now
from bench.engine.setup import Experiment, build_experiment, configure_torch, select_device
from bench.io import MB, remove_stale_temporaries, torch_save, write_json
from bench.models import count_parameters, describe_init

log = logging.getLogger("fedrank")

FINAL_STATUSES = ("completed", "diverged")


@dataclass
class Progress:
    """Everything of a run's history that a checkpoint must carry besides model state."""

    next_round: int = 1
    metrics: list[dict] = field(default_factory=list)
    diagnostics: list[dict] = field(default_factory=list)
    round_seconds: list[float] = field(default_factory=list)
    diverged_round: int | None = None
    resumed_from: int | None = None


# ---- evaluation -----------------------------------------------------------------------------
def metric_rows(round: int, scope: str, client: int | None, metrics: dict[str, float]) -> list[dict]:
    return [{"round": round, "scope": scope, "client": client, "metric": k, "value": v} for k, v in metrics.items()]


def client_mean(per_client: list[dict[str, float]]) -> dict[str, float]:
    return pd.DataFrame(per_client).mean(skipna=True).to_dict()


def evaluate_round(exp: Experiment) -> list[dict]:
    """Global model on the global test set; each client's model on the global test set (when
    models differ per client) and on its local test split; plus the mean over clients."""
    fed, method, cfg = exp.fed, exp.method, exp.fed.config
    batch, r = cfg["eval"]["batch_size"], fed.round
    rows: list[dict] = []
    global_model = method.global_model(fed)
    if global_model is not None:
        rows += metric_rows(r, "global", None, evaluate(global_model, fed.data, exp.test_index, batch))
    personal = global_model is None or method.personalized(fed)
    scores: dict[str, list[dict]] = {"personal": [], "local": []}
    for client in fed.clients:
        model = method.client_model(fed, client)
        if personal:
            scores["personal"].append(evaluate(model, fed.data, exp.test_index, batch))
            rows += metric_rows(r, "personal", client.id, scores["personal"][-1])
        if len(client.test):
            scores["local"].append(evaluate(model, fed.data, client.test, batch))
            rows += metric_rows(r, "local", client.id, scores["local"][-1])
    for scope, per_client in scores.items():
        if per_client:
            rows += metric_rows(r, scope, None, client_mean(per_client))
    return rows


def diagnostic_columns(round: int, fed) -> list[dict[str, list]]:
    """The method's recorded diagnostics of this round as long-format columns (one dict per record)."""
    keys = np.array(fed.layout.keys, dtype=object)
    out = []
    for item in fed.diagnostics:
        values, dims = item["values"], item["dims"]
        position = dict(zip(dims, np.indices(tuple(values.shape)).reshape(len(dims), -1)))
        n = values.numel()
        out.append({
            "round": [round] * n,
            "name": [item["name"]] * n,
            "layer": keys[position["layer"]].tolist() if "layer" in position else [None] * n,
            "client": position["client"].tolist() if "client" in position else [None] * n,
            "value": values.flatten().tolist(),
        })
    return out


def headline_scope(exp: Experiment) -> str:
    """The scope tables report: the global model, or the clients' own models where they differ."""
    if exp.method.has_global_model and not exp.method.personalized(exp.fed):
        return "global"
    return "personal"


# ---- one round ------------------------------------------------------------------------------
def play_round(exp: Experiment, progress: Progress) -> list[dict] | None:
    """Run round `fed.round`; return its evaluation rows, or None if it diverged."""
    fed, method, r = exp.fed, exp.method, exp.fed.round
    fed.diagnostics = []
    sent = method.bytes_per_round(fed)
    items = []
    for client in fed.clients:
        method.receive(fed, client)
        fit = method.train(fed, client)
        items.append(method.upload(fed, client, fit))
    losses = {u.client: u.fit.loss for u in items}
    progress.metrics += [row for c, v in losses.items() for row in metric_rows(r, "train", c, {"loss": v})]
    diverged = [c for c, v in losses.items() if not math.isfinite(v)]
    if diverged:
        log.warning("round %d: non-finite training loss on client(s) %s: run diverged", r, diverged)
        return None
    new_state = method.aggregate(fed, Updates(fed.uploads, items))
    if not torch.isfinite(new_state).all():
        log.warning("round %d: the aggregated global state is not finite: run diverged", r)
        return None
    fed.global_state = new_state
    for client in fed.clients:
        method.keep(fed, client)
    progress.metrics += metric_rows(r, "comm", None, {"bytes": float(sent)})
    progress.diagnostics += diagnostic_columns(r, fed)
    every, rounds = fed.config["eval"]["every"], fed.config["train"]["rounds"]
    evaluation = evaluate_round(exp) if r % every == 0 or r == rounds else []
    progress.metrics += evaluation
    return evaluation


# ---- checkpoints ----------------------------------------------------------------------------
def save_checkpoint(paths: RunPaths, exp: Experiment, progress: Progress, digest: str) -> None:
    fed = exp.fed
    torch_save(
        paths.checkpoint,
        {
            "digest": digest,
            "global_state": fed.global_state,
            "server": fed.server,
            "clients": [c.state for c in fed.clients],
            "model_buffers": {k: v for k, v in fed.model.state_dict().items() if not v.is_floating_point()},
            "progress": progress.__dict__,
        },
    )


def load_checkpoint(paths: RunPaths, exp: Experiment, digest: str) -> Progress | None:
    if not paths.checkpoint.is_file():
        return None
    saved = torch.load(paths.checkpoint, map_location=exp.fed.device, weights_only=True)
    if saved["digest"] != digest:
        from bench.errors import UserError

        raise UserError(f"{paths.checkpoint} belongs to a different configuration; delete it or choose another output folder")
    fed = exp.fed
    fed.global_state = saved["global_state"]
    fed.server = saved["server"]
    for client, state in zip(fed.clients, saved["clients"]):
        client.state = state
    fed.model.load_state_dict(saved["model_buffers"], strict=False)
    progress = Progress(**saved["progress"])
    progress.resumed_from = progress.next_round
    return progress


# ---- the run --------------------------------------------------------------------------------
def run_record(cfg: dict, exp: Experiment, progress: Progress, status: str, started: str, wall: float, error: str | None = None) -> dict:
    fed = exp.fed
    full_round = 2 * len(fed.clients) * fed.layout.nbytes()
    return {
        "run_id": run_id(cfg),
        "status": status,
        "error": error,
        "rounds_completed": progress.next_round - 1,
        "diverged_round": progress.diverged_round,
        "resumed_from_round": progress.resumed_from,
        "headline_scope": headline_scope(exp),
        "seed": cfg["seed"],
        "method": exp.method.config(),
        "config": cfg,
        "config_digest": config_digest(cfg),
        "model": {
            "name": cfg["model"]["name"],
            "parameters": count_parameters(fed.model),
            "state_floats": fed.layout.size,
            "state_layers": fed.layout.layers,
            "state_bytes": fed.layout.nbytes(),
            "init": describe_init(cfg["model"]),
        },
        "communication": {
            "full_state_bytes_per_round": full_round,
            "full_state_mb_per_round": full_round / MB,
            "note": "upload + download of the floating-point state by every client; MB = 2**20 bytes",
        },
        "data": {
            "name": exp.dataset.name,
            "classes": exp.dataset.classes,
            "image_size": exp.dataset.image_size,
            "train_pool": exp.pool_size,
            "global_test": len(exp.test_index),
            "clients": [
                {"id": c.id, "train": len(c.train), "local_test": len(c.test),
                 "class_counts": torch.bincount(fed.data.labels[c.train], minlength=fed.data.num_classes).tolist()}
                for c in fed.clients
            ],
            "notes": exp.dataset.notes,
        },
        "environment": environment(fed.device),
        "timing": {
            "started_at": started,
            "finished_at": utc_now(),
            "wall_seconds": wall,
            "seconds_per_round": sum(progress.round_seconds) / max(len(progress.round_seconds), 1),
            "round_seconds": progress.round_seconds,
        },
    }


def write_outputs(paths: RunPaths, progress: Progress, record: dict) -> None:
    metrics = pd.DataFrame(progress.metrics, columns=["round", "scope", "client", "metric", "value"])
    metrics["client"] = metrics["client"].astype("Int64")
    columns = ["round", "name", "layer", "client", "value"]
    diagnostics = pd.concat([pd.DataFrame(c) for c in progress.diagnostics]) if progress.diagnostics else pd.DataFrame(columns=columns)
    diagnostics["client"] = diagnostics["client"].astype("Int64")
    write_run_table(paths.metrics, metrics, "metrics.parquet", record["run_id"])
    write_run_table(paths.diagnostics, diagnostics, "diagnostics.parquet", record["run_id"])
    write_json(paths.record, record)  # last: its final status marks the run finished


def recorded(paths: RunPaths, digest: str) -> dict | None:
    """The run's run.json if it was written for this config (any status), else None."""
    import json

    if not paths.record.is_file():
        return None
    record = json.loads(paths.record.read_text())
    return record if record.get("config_digest") == digest else None


def finished_record(paths: RunPaths, digest: str) -> dict | None:
    record = recorded(paths, digest)
    return record if record is not None and record.get("status") in FINAL_STATUSES else None


def execute(cfg: dict, out_dir: str | Path, show_progress: bool = True) -> dict:
    """Run (or resume, or find already finished) one federated run; return its record."""
    paths = RunPaths(Path(out_dir))
    digest = config_digest(cfg)
    done = finished_record(paths, digest)
    if done is not None:
        log.info("%s is already %s; nothing to do", paths.root, done["status"])
        return done
    device = select_device(cfg["runtime"]["device"])
    configure_torch(cfg["runtime"], device)
    exp = build_experiment(cfg, device)  # bad input fails here, before anything is written
    paths.root.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(paths.root)
    started, clock = utc_now(), time.perf_counter()
    progress = load_checkpoint(paths, exp, digest)
    if progress is None:
        progress = Progress()
        exp.method.setup(exp.fed)
    else:
        log.info("resuming %s from round %d", paths.root.name, progress.next_round)
    try:
        status = loop(cfg, exp, progress, paths, digest, show_progress)
    except Exception as exc:
        record = run_record(cfg, exp, progress, "failed", started, time.perf_counter() - clock, f"{type(exc).__name__}: {exc}")
        write_outputs(paths, progress, record)
        raise
    record = run_record(cfg, exp, progress, status, started, time.perf_counter() - clock)
    write_outputs(paths, progress, record)
    if not cfg["runtime"]["keep_checkpoint"]:
        paths.checkpoint.unlink(missing_ok=True)
    return record


def loop(cfg: dict, exp: Experiment, progress: Progress, paths: RunPaths, digest: str, show_progress: bool) -> str:
    rounds, every = cfg["train"]["rounds"], cfg["runtime"]["checkpoint_every"]
    bar = tqdm(total=rounds, initial=progress.next_round - 1, desc=run_id(cfg), unit="round", disable=not show_progress or None, dynamic_ncols=True)
    with bar:
        while progress.next_round <= rounds:
            exp.fed.round = progress.next_round
            tic = time.perf_counter()
            evaluation = play_round(exp, progress)
            if evaluation is None:
                progress.diverged_round = exp.fed.round
                return "diverged"
            progress.round_seconds.append(time.perf_counter() - tic)
            progress.next_round += 1
            if exp.fed.round % every == 0 or exp.fed.round == rounds:
                save_checkpoint(paths, exp, progress, digest)
            summary = round_summary(evaluation, headline_scope(exp))
            bar.set_postfix(summary, refresh=False)
            bar.update()
            log.info("round %d/%d %s (%.1f s)", exp.fed.round, rounds, " ".join(f"{k}={v}" for k, v in summary.items()), progress.round_seconds[-1])
    return "completed"


def round_summary(rows: list[dict], scope: str) -> dict[str, str]:
    """Headline metrics of one round's evaluation, for the progress bar and the log."""
    names = {"balanced_accuracy": "bacc", "accuracy": "acc", "loss": "loss"}
    return {names[r["metric"]]: f"{r['value']:.3f}" for r in rows if r["scope"] == scope and r["client"] is None and r["metric"] in names}
