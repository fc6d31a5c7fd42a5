"""Finished runs whose outputs cannot be trusted, found when a workflow starts, so that Snakemake
reruns them instead of scoring them.

Snakemake reruns a job whose output is missing, never one whose outputs are there but wrong (a
metrics.parquet replaced by another run's, cut short, or unreadable). The engine would redo such a
run, but only if Snakemake started its job. So the workflow checks every planned run that has a
run.json (`bench.engine.verify.output_problem`, as the engine and the reports do) and removes the
run.json of those that fail, as the engine does: Snakemake then sees their jobs to do, in a dry
run too. The check reads files; a run that passed is remembered by the size and
mtime of its three files (`.fedrank-verified.json` in the results folder), so a later start
re-checks only what changed since.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from pathlib import Path

from bench.engine.verify import FINAL_STATUSES, output_problem, read_record
from bench.io import write_json

log = logging.getLogger("fedrank")

CACHE_NAME = ".fedrank-verified.json"
RUN_FILES = ("run.json", "metrics.parquet", "diagnostics.parquet")


def files_stamp(folder: Path) -> list[list[int]] | None:
    """Size and mtime of a run's three files (a missing one as [-1, -1]); None without a run.json."""
    stamp = []
    for name in RUN_FILES:
        try:
            stat = (folder / name).stat()
            stamp.append([stat.st_size, stat.st_mtime_ns])
        except FileNotFoundError:
            if name == "run.json":
                return None
            stamp.append([-1, -1])
    return stamp


def run_problem(folder: Path) -> str | None:
    """Why a run with a run.json is not to be trusted, or None (also for a failed or unfinished
    run: a failed record is a result, an unfinished one resumes when its job runs)."""
    record = read_record(folder / "run.json")
    if record is None:
        return "its run.json is unreadable"
    if record.get("status") not in FINAL_STATUSES:
        return None
    problem = output_problem(folder, record)
    return f"run.json says {record['status']} but {problem}" if problem else None


def read_stamps(path: Path) -> dict:
    try:
        stamps = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return {}  # no cache (or a damaged one): everything is checked again
    return stamps if isinstance(stamps, dict) else {}


def untrusted_runs(results: str | Path, run_ids: Iterable[str]) -> dict[str, str]:
    """Run id -> why its outputs are not trusted, for the runs `run_ids` that have a run.json."""
    results = Path(results)
    cache = results / CACHE_NAME
    stamps = read_stamps(cache)
    problems, changed = {}, False
    for run_id in run_ids:
        stamp = files_stamp(results / run_id)
        if stamp is None or stamps.get(run_id) == stamp:
            continue
        problem = run_problem(results / run_id)
        if problem:
            problems[run_id] = problem
            changed |= stamps.pop(run_id, None) is not None
        else:
            stamps[run_id], changed = stamp, True
    if changed and results.is_dir():
        write_json(cache, stamps)
    return problems


def reject_untrusted(results: str | Path, run_ids: Iterable[str], shown: int = 10) -> list[str]:
    """Remove the run.json of each untrusted run, as the engine does when it meets one, so that
    Snakemake (the dry run too) sees its job to do; each logged with why. Returns their run ids."""
    problems = untrusted_runs(results, run_ids)
    for n, (run_id, problem) in enumerate(problems.items()):
        (Path(results) / run_id / "run.json").unlink(missing_ok=True)
        if n < shown:
            log.warning("%s: %s: its job runs again", Path(results) / run_id, problem)
    if len(problems) > shown:
        log.warning("... and %d more runs whose outputs do not verify: their jobs run again", len(problems) - shown)
    return list(problems)
