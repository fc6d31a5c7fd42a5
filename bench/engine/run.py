"""The round loop, written once for every method, with atomic outputs and exact resume.

A run directory holds `run.json` (the record, written last: with a final status and outputs
that read back, the run is finished; see `outputs`), `metrics.parquet` (round x scope x client x metric, long format),
`diagnostics.parquet` (what the method recorded per round, e.g. FedLSC's layer similarities)
and, while running, `checkpoint.pt` (written atomically after every round). Starting a run
whose directory holds a checkpoint of the same config continues from its last round.
"""

from __future__ import annotations

import copy
import errno
import logging
import math
import os
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import pandas as pd
import torch
from tqdm import tqdm

from bench.config import config_digest, run_id
from bench.data.split import store_splits
from bench.dictionary import write_run_table
from bench.engine.evaluate import evaluate
from bench.engine.federation import MAIN, Client, Updates
from bench.engine.lock import run_folder_lock
from bench.engine.outputs import check_output_folder, clear_failed_run, finished_record, read_checkpoint
from bench.engine.participation import draw_round
from bench.engine.paths import RunPaths
from bench.engine.provenance import environment, process_age, utc_now
from bench.engine.setup import Experiment, build_experiment, configure_torch, select_device
from bench.engine.trainer import FitResult, Learner, batches_per_epoch
from bench.errors import Interrupted, Stopped, UserError
from bench.heartbeat import Heartbeat
from bench.io import MB, file_sha256, remove_stale_temporaries, torch_save, write_json
from bench.methods import method_source
from bench.models import count_parameters, describe_init

log = logging.getLogger("fedrank")


@dataclass
class Progress:
    """Everything of a run's history that a checkpoint must carry besides model state."""

    next_round: int = 1
    metrics: list[dict] = field(default_factory=list)
    diagnostics: list[dict] = field(default_factory=list)
    round_seconds: list[float] = field(default_factory=list)
    diverged_round: int | None = None
    resumed_from: int | None = None
    privacy_releases: dict = field(default_factory=dict)  # client -> DP-SGD releases so far (privacy.sample_dp); the adaptive clip (client_dp)


# ---- evaluation -----------------------------------------------------------------------------
def metric_rows(round: int, scope: str, client: int | None, metrics: dict[str, float]) -> list[dict]:
    return [{"round": round, "scope": scope, "client": client, "metric": k, "value": v} for k, v in metrics.items()]


def client_mean(per_client: list[dict[str, float]]) -> dict[str, float]:
    return pd.DataFrame(per_client).mean(skipna=True).to_dict()


NEW_CLIENT_STREAM = 0x4E3C  # seed stream of a held-out centre's fine-tuning (eval.new_client_steps)


def new_client_model(exp: Experiment, global_model: torch.nn.Module) -> torch.nn.Module:
    """The held-out centre's model under the new-client rule: a copy of the global model trained
    for `eval.new_client_steps` steps on the centre's training split, with the run's local
    training settings, from a stream of its own; the federation's state and random streams are
    left as they were."""
    fed = exp.fed
    model = copy.deepcopy(global_model)
    newcomer = Client(exp.holdout.id, exp.holdout.train, exp.holdout.test)
    steps = fed.config["eval"]["new_client_steps"]
    epochs = math.ceil(steps / max(batches_per_epoch(len(newcomer.train), fed.config["train"]["batch_size"]), 1))
    with torch.random.fork_rng(devices=[fed.device] if fed.device.type == "cuda" else []):
        fed.trainer.fit(newcomer, fed.round, [Learner(model)], epochs=epochs, stream=NEW_CLIENT_STREAM, max_steps=steps)
    return model


def global_rows(exp: Experiment, global_model: torch.nn.Module, personal: bool) -> list[dict]:
    """The global model on the global test set, the global validation set and the held-out
    centre's test split; for personalised methods also the new-client rule's model there."""
    fed, cfg = exp.fed, exp.fed.config
    batch, r = cfg["eval"]["batch_size"], fed.round
    rows = metric_rows(r, "global", None, evaluate(global_model, fed.data, exp.test_index, batch))
    if len(exp.val_index):
        rows += metric_rows(r, "val", None, evaluate(global_model, fed.data, exp.val_index, batch))
    if exp.holdout is not None:
        rows += metric_rows(r, "heldout", None, evaluate(global_model, fed.data, exp.holdout.test, batch))
        if personal and cfg["eval"]["new_client_steps"]:
            rows += metric_rows(r, "heldout_tuned", None, evaluate(new_client_model(exp, global_model), fed.data, exp.holdout.test, batch))
    return rows


def evaluate_round(exp: Experiment) -> list[dict]:
    """Global model on the global test, validation and held-out sets; each client's model on
    the global test set (when models differ per client), on its local test split and on its
    validation split; plus the means over clients. Forward
    passes run in the trainer's precision."""
    with exp.fed.trainer.autocast():
        return evaluation_rows(exp)


def evaluation_rows(exp: Experiment) -> list[dict]:
    fed, method, cfg = exp.fed, exp.method, exp.fed.config
    batch, r = cfg["eval"]["batch_size"], fed.round
    global_model = method.global_model(fed)
    personal = global_model is None or method.personalized(fed)
    rows: list[dict] = [] if global_model is None else global_rows(exp, global_model, personal)
    scores: dict[str, list[dict]] = {"personal": [], "local": [], "local_val": []}
    for client in fed.clients:
        model = method.client_model(fed, client)
        if personal:
            scores["personal"].append(evaluate(model, fed.data, exp.test_index, batch))
            rows += metric_rows(r, "personal", client.id, scores["personal"][-1])
        for scope, index in (("local", client.test), ("local_val", client.val)):
            if len(index):
                scores[scope].append(evaluate(model, fed.data, index, batch))
                rows += metric_rows(r, scope, client.id, scores[scope][-1])
    for scope, per_client in scores.items():
        if per_client:
            rows += metric_rows(r, scope, None, client_mean(per_client))
    return rows


def diagnostic_columns(round: int, fed) -> list[dict[str, list]]:
    """The recorded diagnostics of this round as long-format columns (one dict per record)."""
    keys = np.array(fed.layout.keys, dtype=object)
    out = []
    for item in fed.diagnostics:
        values, dims = item["values"], item["dims"]
        position = dict(zip(dims, np.indices(tuple(values.shape)).reshape(len(dims), -1))) if dims else {}
        n = values.numel()
        out.append({
            "round": [round] * n,
            "name": [item["name"]] * n,
            "layer": keys[position["layer"]].tolist() if "layer" in position else [None] * n,
            "client": np.asarray(item["clients"])[position["client"]].tolist() if "client" in position else [None] * n,
            "value": values.flatten().tolist(),
        })
    return out


def headline_scope(exp: Experiment) -> str:
    """The scope tables report: the global model, or the clients' own models where they differ."""
    if exp.method.has_global_model and not exp.method.personalized(exp.fed):
        return "global"
    return "personal"


# ---- one round ------------------------------------------------------------------------------
def record_participation(fed, participants: list, fits: dict[int, FitResult]) -> None:
    """Which clients took part this round, which reported, and how many local steps each made."""
    n = len(fed.clients)
    took_part = torch.zeros(n)
    took_part[[c.id for c in participants]] = 1
    reported, steps = torch.zeros(n), torch.zeros(n)
    for client, fit in fits.items():
        reported[client], steps[client] = 1, fit.steps
    fed.record("participation/took_part", took_part, ("client",))
    fed.record("participation/reported", reported, ("client",))
    fed.record("participation/steps", steps, ("client",))


def play_round(exp: Experiment, progress: Progress, beat: Heartbeat | None = None) -> list[dict] | None:
    """Run round `fed.round`; return its evaluation rows, or None if it diverged.

    Only the round's participants receive; only those that report train, upload and keep; the
    bytes counted are what they actually downloaded and uploaded."""
    fed, method, r, privacy = exp.fed, exp.method, exp.fed.round, exp.privacy
    fed.diagnostics = []
    fed.plan = draw_round(fed.config["train"], fed.config["seed"], r, len(fed.clients))
    participants = method.select_clients(fed, [fed.clients[i] for i in fed.plan.sampled])
    reporting = [c for c in participants if fed.plan.reports(c.id)]
    fed.slots = {c.id: row for row, c in enumerate(reporting)}
    sent = {"bytes_down": 0, "bytes_up": 0}
    items = []
    for client in participants:
        method.receive(fed, client)
        if privacy is not None:
            privacy.received(fed, client)
        sent["bytes_down"] += method.download_bytes(fed, client)
        if client.id in fed.slots:
            fed.straggling = fed.plan.work.get(client.id)
            fit = method.train(fed, client)
            fed.straggling = None
            update = method.upload(fed, client, fit)
            sent["bytes_up"] += method.upload_bytes(fed, client, update)
            items.append(update)
            if beat:
                beat("round %d: %d of %d reporting clients trained", r, len(items), len(reporting))
    fits = {u.client: u.fit for u in items}
    progress.metrics += [row for c, fit in fits.items() for row in metric_rows(r, "train", c, {"loss": fit.loss})]
    diverged = [c for c, fit in fits.items() if not math.isfinite(fit.loss)]
    if diverged:
        log.warning("round %d: non-finite training loss on client(s) %s: run diverged", r, diverged)
        return None
    record_participation(fed, participants, fits)
    if items:
        updates = Updates(fed.uploads[: len(items)], items)
        new_state = method.aggregate(fed, updates if privacy is None else privacy.server_view(fed, method, updates, progress.privacy_releases))
        if not (torch.isfinite(new_state).all() and all(torch.isfinite(s).all() for s in fed.to_clients.values())):
            log.warning("round %d: the aggregated state is not finite: run diverged", r)
            return None
        fed.global_state = new_state
        for client in reporting:
            method.keep(fed, client)
    else:
        log.warning("round %d: no client reported; the server state is unchanged", r)
    if privacy is not None:
        privacy.add_protocol_bytes(sent, participants, set(fits))
        progress.metrics += privacy.rows(fed, progress.privacy_releases)
    progress.metrics += metric_rows(r, "comm", None, {"bytes": float(sum(sent.values())), **{k: float(v) for k, v in sent.items()},
                                                      "clients": float(len(items))})
    progress.diagnostics += diagnostic_columns(r, fed)
    every, rounds = fed.config["eval"]["every"], fed.config["train"]["rounds"]
    evaluation = evaluate_round(exp) if r % every == 0 or r == rounds else []
    progress.metrics += evaluation
    return evaluation


# ---- checkpoints ----------------------------------------------------------------------------
RESTORABLE_LEAVES = (torch.Tensor, bool, int, float, complex, str, bytes, type(None), torch.Size, torch.dtype, torch.device)


def unrestorable(value, where: str) -> tuple[str, str] | None:
    """(path, type) of the first value a checkpoint loaded with `torch.load(weights_only=True)`
    cannot restore (e.g. a NumPy array), or None."""
    if isinstance(value, RESTORABLE_LEAVES):
        return None
    if isinstance(value, dict):
        items = value.items()
    elif isinstance(value, (list, tuple, set)):
        items = enumerate(value)
    else:
        return where, f"{type(value).__module__}.{type(value).__qualname__}"
    for key, item in items:
        found = unrestorable(item, f"{where}[{key!r}]")
        if found is not None:
            return found
    return None


def check_restorable(fed, method_name: str) -> None:
    """Method state must survive `torch.load(weights_only=True)`: say which key does not, at the
    first checkpoint, instead of failing at resume."""
    parts = {"fed.server": fed.server, **{f"client {c.id} state": c.state for c in fed.clients}}
    for where, value in parts.items():
        found = unrestorable(value, where)
        if found is not None:
            path, kind = found
            raise UserError(f"method {method_name}: {path} is a {kind}, which a checkpoint cannot restore (torch.load(weights_only=True)); "
                            "store a torch tensor (torch.as_tensor) or plain numbers, strings, lists and dicts instead")


def model_states(fed) -> dict[str, dict]:
    """Every model object's state that a round does not overwrite: the main model's integer buffers
    (its floats are loaded at every receive), every other model's whole state dict."""
    return {name: {k: v for k, v in model.state_dict().items() if name != MAIN or not v.is_floating_point()}
            for name, model in fed.models.items()}


def save_checkpoint(paths: RunPaths, exp: Experiment, progress: Progress, digest: str) -> None:
    fed = exp.fed
    check_restorable(fed, exp.method.name)
    torch_save(
        paths.checkpoint,
        {
            "digest": digest,
            "global_state": fed.global_state,
            "server": fed.server,
            "to_clients": fed.to_clients,
            "clients": [c.state for c in fed.clients],
            "models": model_states(fed),
            "progress": progress.__dict__,
        },
    )
    exp.resumes_from = progress.next_round


def restore_models(fed, saved: dict[str, dict]) -> None:
    for name, state in saved.items():
        arch, _, extra = name.partition("/")
        model = fed.extra_model(extra, arch) if extra else fed.models[name]
        missing, unexpected = model.load_state_dict(state, strict=name != MAIN)
        if unexpected:
            raise RuntimeError(f"checkpoint model {name}: unexpected keys {unexpected[:3]}")


def load_checkpoint(paths: RunPaths, exp: Experiment, digest: str) -> Progress | None:
    saved = read_checkpoint(paths.checkpoint, exp.fed.device)
    if saved is None:
        return None
    if saved["digest"] != digest:
        raise UserError(f"{paths.checkpoint} belongs to a different configuration; delete it or choose another output folder")
    fed = exp.fed
    fed.global_state = saved["global_state"]
    fed.server = saved["server"]
    fed.to_clients = saved["to_clients"]
    for client, state in zip(fed.clients, saved["clients"]):
        client.state = state
    restore_models(fed, saved["models"])
    progress = Progress(**saved["progress"])
    progress.resumed_from = progress.next_round
    return progress


# ---- the run --------------------------------------------------------------------------------
def model_size(model, layout) -> dict:
    return {"parameters": count_parameters(model), "state_floats": layout.size, "state_layers": layout.layers, "state_bytes": layout.nbytes()}


def run_record(cfg: dict, exp: Experiment, progress: Progress, status: str, started: str, wall: float, startup: float,
               error: str | None = None) -> dict:
    fed = exp.fed
    full_round = 2 * len(fed.clients) * fed.layout.nbytes()
    sent = sum(row["value"] for row in progress.metrics if row["scope"] == "comm" and row["metric"] == "bytes")
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
        "method_source": method_source(exp.method.name),
        "config": cfg,
        "config_digest": config_digest(cfg),
        "model": {
            "name": cfg["model"]["name"],
            **model_size(fed.model, fed.layout),
            "init": describe_init(cfg["model"]),
            "architectures": {
                name: {**model_size(fed.models[name], layout), "clients": [c.id for c in fed.clients if c.arch == name]}
                for name, layout in fed.layouts.items()
            },
        },
        "communication": {
            "full_state_bytes_per_round": full_round,
            "full_state_mb_per_round": full_round / MB,
            "sent_bytes": sent,
            "sent_mb_per_round": sent / MB / max(progress.next_round - 1, 1),
            "note": "full state: upload + download of the main model's floating-point state by every client; "
                    "sent: what the participants actually downloaded and uploaded (metrics scope comm); MB = 2**20 bytes",
        },
        "data": {
            "name": exp.dataset.name,
            "classes": exp.dataset.classes,
            "image_size": exp.dataset.image_size,
            "train_pool": exp.pool_size,
            "public": len(fed.public),
            "global_test": len(exp.test_index),
            "validation": len(exp.val_index),
            "clients": [
                {"id": c.id, "train": len(c.train), "local_test": len(c.test), "validation": len(c.val),
                 "class_counts": torch.bincount(fed.data.labels[c.train], minlength=fed.data.num_classes).tolist(),
                 "label_noise": fed.data.flip_rate(c.train)}
                for c in fed.clients
            ],
            "holdout": None if exp.holdout is None else {"name": exp.holdout_name, "train": len(exp.holdout.train), "local_test": len(exp.holdout.test)},
            "notes": exp.dataset.notes,
        },
        "privacy": None if exp.privacy is None else exp.privacy.describe(),
        "environment": environment(fed.device),
        "timing": {
            "started_at": started,
            "finished_at": utc_now(),
            "wall_seconds": wall,
            "startup_seconds": startup,
            "seconds_per_round": sum(progress.round_seconds) / max(len(progress.round_seconds), 1),
            "round_seconds": progress.round_seconds,
            "peak_gpu_memory_mb": torch.cuda.max_memory_allocated(fed.device) / MB if fed.device.type == "cuda" else None,
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
    record["metrics_sha256"] = file_sha256(paths.metrics)  # what reports check they read
    write_json(paths.record, record)  # last: its final status marks the run finished


def execute(cfg: dict, out_dir: str | Path, show_progress: bool = True) -> dict:
    """Run (or resume, or find already finished) one federated run; return its record."""
    paths = RunPaths(Path(out_dir))
    digest = config_digest(cfg)
    if os.path.exists(paths.root):  # os.path: a name too long for the filesystem is only not there
        done = already_finished(paths, cfg, digest)
        if done is not None:
            return done
    check_output_folder(paths.root)  # an unusable folder fails now, not after training
    device = select_device(cfg["runtime"]["device"])
    configure_torch(cfg["runtime"], device)
    exp = build_experiment(cfg, device)  # bad input fails here, before anything is written
    paths.root.mkdir(parents=True, exist_ok=True)
    with run_folder_lock(paths.root):
        done = already_finished(paths, cfg, digest)  # by a process that held the folder meanwhile
        if done is not None:
            return done
        clear_failed_run(paths, digest)
        return train(cfg, exp, paths, digest, show_progress)


def already_finished(paths: RunPaths, cfg: dict, digest: str) -> dict | None:
    done = finished_record(paths, digest, cfg["runtime"]["keep_checkpoint"])
    if done is not None:
        log.info("%s is already %s; nothing to do", paths.root, done["status"])
    return done


def train(cfg: dict, exp: Experiment, paths: RunPaths, digest: str, show_progress: bool) -> dict:
    """Play the run's remaining rounds in its locked folder and write its outputs."""
    with stopping_in_one_line(paths.root, lambda: what_a_rerun_does(exp, cfg["train"]["rounds"])):
        remove_stale_temporaries(paths.root)
        started, clock = utc_now(), time.perf_counter()
        progress = load_checkpoint(paths, exp, digest)
        if progress is None:
            progress = Progress()
            exp.method.setup(exp.fed)
        else:
            log.info("resuming %s from round %d", paths.root.name, progress.next_round)
        exp.resumes_from = progress.next_round
        exp.method.prepare(exp.fed)
        store_splits()  # the run is accepted: what it computed for later runs can be kept
        startup = process_age()  # imports, config, data and models: what this process paid before training
        try:
            status = loop(cfg, exp, progress, paths, digest, show_progress)
        except Exception as exc:
            if not out_of_space(exc):
                record = run_record(cfg, exp, progress, "failed", started, time.perf_counter() - clock, startup, f"{type(exc).__name__}: {exc}")
                write_outputs(paths, progress, record)
            raise
        record = run_record(cfg, exp, progress, status, started, time.perf_counter() - clock, startup)
        write_outputs(paths, progress, record)
    if not cfg["runtime"]["keep_checkpoint"]:
        paths.checkpoint.unlink(missing_ok=True)
    return record


def what_a_rerun_does(exp: Experiment, rounds: int) -> str:
    if exp.resumes_from > rounds:
        return "write its outputs (every round is trained)"
    return f"resume from round {exp.resumes_from}"


def out_of_space(exc: BaseException) -> bool:
    return isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT)


@contextmanager
def stopping_in_one_line(root: Path, rerun_will: Callable[[], str]) -> Iterator[None]:
    """Ctrl-C and a full disk stop the run with one line saying how it continues; the last
    checkpoint (written atomically, so never half-written) stays, and the same command resumes."""
    try:
        yield
    except KeyboardInterrupt:
        raise Interrupted(f"interrupted: {root} keeps its checkpoint; run the same command again to {rerun_will()}") from None
    except OSError as exc:
        if not out_of_space(exc):
            raise
        raise Stopped(f"no space left on {mount_point(root)} ({exc.strerror}) while writing {root}; free space and rerun the same "
                      f"command to {rerun_will()}") from None


def mount_point(path: Path) -> Path:
    """The mount point of the filesystem holding `path` (what a full-disk message names)."""
    path = path.resolve()
    while not os.path.ismount(path):
        path = path.parent
    return path


def loop(cfg: dict, exp: Experiment, progress: Progress, paths: RunPaths, digest: str, show_progress: bool) -> str:
    rounds, every = cfg["train"]["rounds"], cfg["runtime"]["checkpoint_every"]
    bar = tqdm(total=rounds, initial=progress.next_round - 1, desc=run_id(cfg), unit="round", disable=not show_progress or None, dynamic_ncols=True)
    beat = Heartbeat(log)
    with bar:
        while progress.next_round <= rounds:
            exp.fed.round = progress.next_round
            tic = time.perf_counter()
            evaluation = play_round(exp, progress, beat)
            if evaluation is None:
                progress.diverged_round = exp.fed.round
                return "diverged"
            progress.round_seconds.append(time.perf_counter() - tic)
            progress.next_round += 1
            if exp.fed.round % every == 0 or exp.fed.round == rounds:
                save_checkpoint(paths, exp, progress, digest)
            scope = headline_scope(exp)
            summary = round_summary(evaluation, scope)
            bar.set_postfix(summary, refresh=False)
            bar.update()
            scored = f" {SCOPE_WORDS.get(scope, scope)}: " + " ".join(f"{k}={v}" for k, v in summary.items()) if summary else ""
            log.info("round %d/%d%s (%.1f s)", exp.fed.round, rounds, scored, progress.round_seconds[-1])
            beat.reset()
    return "completed"


SCOPE_WORDS = {"global": "global model", "personal": "clients' own models (mean)"}


def round_summary(rows: list[dict], scope: str) -> dict[str, str]:
    """Headline metrics of one round's evaluation, for the progress bar and the log."""
    names = {"balanced_accuracy": "bacc", "accuracy": "acc", "loss": "loss"}
    return {names[r["metric"]]: f"{r['value']:.3f}" for r in rows if r["scope"] == scope and r["client"] is None and r["metric"] in names}
