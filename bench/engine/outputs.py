"""What a run folder holds, and what of it may be trusted.

A run is finished only when its `run.json` has a final status for this configuration *and*
`metrics.parquet` and `diagnostics.parquet` read back; otherwise it is redone (or resumed from
its checkpoint), with a log line. A folder holding another configuration's run is refused, never
overwritten. A checkpoint that does not read back is removed and the run restarts from round 1:
a damaged file is never trusted, and never stops a rerun.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from bench.engine.verify import FINAL_STATUSES, output_problem, read_record
from bench.errors import UserError
from bench.io import check_writable

if TYPE_CHECKING:
    from bench.engine.paths import RunPaths

log = logging.getLogger("fedrank")


def recorded(paths: RunPaths, digest: str) -> dict | None:
    """The run's run.json if one for this config reads back (any status), else None; a folder
    holding another configuration's run is refused, so it is never overwritten."""
    record = read_record(paths.record)
    if foreign_failure(record, digest):
        return None  # replaced by this run (`clear_failed_run`): a failure never blocks a corrected rerun
    if record is not None and record.get("config_digest") != digest:
        raise UserError(f"{paths.root} holds run {record.get('run_id')} of another configuration; choose another --out, or delete that folder to replace it")
    return record


def foreign_failure(record: dict | None, digest: str) -> bool:
    return record is not None and record.get("status") == "failed" and record.get("config_digest") != digest


def clear_failed_run(paths: RunPaths, digest: str) -> None:
    """Remove a failed run of another configuration (e.g. the command before its correction), with
    a log line: its checkpoint cannot be resumed by this configuration, its record is no result.
    run.json goes last, so a kill half-way leaves a failed run to clear again."""
    record = read_record(paths.record)
    if not foreign_failure(record, digest):
        return
    log.warning("%s: replacing the failed run %s of another configuration (%s)", paths.root, record.get("run_id"), record.get("error"))
    for path in (paths.checkpoint, paths.metrics, paths.diagnostics, paths.record):
        path.unlink(missing_ok=True)


def finished_record(paths: RunPaths, digest: str, keep_checkpoint: bool) -> dict | None:
    """The record of this config's finished run whose outputs all read back, else None.

    A final record whose outputs do not read back is removed (the run is redone or resumed); the
    checkpoint of a finished run (left by a kill between run.json and its removal) is deleted."""
    record = recorded(paths, digest)
    if record is None or record.get("status") not in FINAL_STATUSES:
        return None
    problem = output_problem(paths.root, record)
    if problem:
        log.warning("%s: run.json says %s but %s: running it again", paths.root, record["status"], problem)
        paths.record.unlink()
        return None
    if paths.checkpoint.exists() and not keep_checkpoint:
        log.warning("%s: removing the checkpoint of the finished run (left by a kill before it was removed)", paths.root)
        paths.checkpoint.unlink()
    return record


def read_checkpoint(path: Path, device: torch.device) -> dict | None:
    """A saved checkpoint; None when absent, or when it does not read back (truncated, corrupted,
    not a checkpoint), which is logged and removed: the run then restarts from round 1."""
    if not path.is_file():
        return None
    try:
        saved = torch.load(path, map_location=device, weights_only=True)
        problem = None if isinstance(saved, dict) and {"digest", "progress"} <= saved.keys() else "not a fedrank checkpoint"
    except Exception as exc:  # a damaged file: torch raises RuntimeError, UnpicklingError, EOFError, ... by where it breaks
        problem = type(exc).__name__
    if problem is None:
        return saved
    log.warning("checkpoint %s is unreadable (%s): removed, the run restarts from round 1", path, problem)
    path.unlink()
    return None


def check_output_folder(root: Path) -> None:
    """A one-line error now, before any training, if the run folder cannot be created or written."""
    check_writable(root, "output folder", "choose another --out")
