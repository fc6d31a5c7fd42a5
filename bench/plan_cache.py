"""Expanded workflow plans remembered on disk, so `fedrank status` answers in a second.

Expanding configs/paper.yaml resolves 1,456 run configs, which imports torch (the method
registry) and validates each against the run schema: seconds, every time. A plan depends only
on the checked config, on the environment variables it names, and on the code and schemas that
expand it, so it is stored under a hash of exactly those; any edit to a config, a variable it
names, or a file of the `bench` package is a different key, and the plan is expanded afresh.

`fedrank status` and the Snakefile read stored plans (`reused_plan`); the Snakefile first checks
again that the data roots, sites files and weights files its runs read exist, the one thing that
can change without the config, its variables or the code (a dry run of configs/paper.yaml then
skips the expansion's 1,456 resolutions). `fedrank plan` (which the workflow's manifest rule
runs) and `status` store what they expand. Plans live under $FEDRANK_CACHE_DIR/plans (default
~/.cache/fedrank/plans); the newest KEEP are kept.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import pickle
import platform
from importlib import metadata
from pathlib import Path

import bench
from bench.io import atomic_path

log = logging.getLogger(__name__)
KEEP = 16


def cache_root() -> Path:
    """$FEDRANK_CACHE_DIR, default ~/.cache/fedrank (XDG_CACHE_HOME respected)."""
    default = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "fedrank"
    return Path(os.environ.get("FEDRANK_CACHE_DIR", default))


def cache_dir() -> Path:
    return cache_root() / "plans"


def code_fingerprint() -> list[tuple[str, int, int]]:
    """(path, size, mtime) of every source, schema and data file of the package and of the methods
    outside it (FEDRANK_METHODS_PATH's files, the `fedrank.methods` entry points): what expands a
    plan or renders a listing."""
    root = Path(bench.__file__).parent
    files = [(str(p.relative_to(root)), p) for pattern in ("*.py", "*.yaml", "*.json") for p in root.rglob(pattern)]
    folders = [Path(p) for p in os.environ.get("FEDRANK_METHODS_PATH", "").split(os.pathsep) if p]  # bench.methods.METHODS_PATH_ENV, without torch
    files += [(str(p), p) for folder in folders if folder.is_dir() for p in folder.glob("*.py")]
    stamps = [(name, (stat := path.stat()).st_size, stat.st_mtime_ns) for name, path in sorted(files)]
    return stamps + [(f"entry point {point.name} = {point.value}", 0, 0) for point in metadata.entry_points(group="fedrank.methods")]


def canonical_config(config: dict) -> dict:
    """The config with each study's defaults filled, as Snakemake's schema check fills them: the
    workflow's manifest job and `fedrank status CONFIG` then find the same plan."""
    from bench.config import fill_defaults
    from bench.workflow import workflow_schema

    study = workflow_schema()["$defs"]["study"]
    return {**config, "studies": {name: fill_defaults(study, spec) for name, spec in config["studies"].items()}}


def plan_key(config: dict) -> str:
    """Hash of the checked config, the variables it names, the code and timm's model list."""
    from bench.config import referenced_variables

    text = json.dumps(canonical_config(config), sort_keys=True, default=str)
    variables = [(name, os.environ.get(name)) for name in referenced_variables(text)]
    parts = [text, variables, code_fingerprint(), platform.python_version(), metadata.version("timm")]
    return hashlib.sha256(json.dumps(parts, default=str).encode()).hexdigest()[:32]


def stored_plan(config: dict):
    """The plan stored for this config, code and environment, or None."""
    path = cache_dir() / f"{plan_key(config)}.pickle"
    try:
        return pickle.loads(path.read_bytes())
    except (OSError, pickle.UnpicklingError, EOFError, AttributeError, ImportError):
        return None


def store_plan(config: dict, plan) -> None:
    """Remember `plan` (best effort: a read-only home only costs the next status its speed)."""
    folder = cache_dir()
    try:
        with atomic_path(folder / f"{plan_key(config)}.pickle") as tmp:
            tmp.write_bytes(pickle.dumps(plan, protocol=pickle.HIGHEST_PROTOCOL))
        for old in sorted(folder.glob("*.pickle"), key=lambda p: p.stat().st_mtime, reverse=True)[KEEP:]:
            old.unlink(missing_ok=True)
    except OSError as exc:
        log.debug("plan not stored under %s: %s", folder, exc)


INPUT_KEYS = ("data.root", "data.sites_file", "model.weights")


def check_inputs(plan) -> None:
    """A one-line error for the first file or folder a run of `plan` reads that no longer exists."""
    from bench.config import expand_path, get_key
    from bench.errors import UserError

    written = sorted({(key, value) for run in plan.runs.values() for key in INPUT_KEYS if (value := get_key(run.resolved, key))})
    for key, value in written:
        if not Path(expand_path(value)).exists():
            raise UserError(f"config key '{key}': {expand_path(value)} does not exist (it did when this config's plan was made); "
                            "restore it or point the config at where it is now")


def reused_plan(config: dict):
    """The plan of a checked `config`: the stored one, its inputs checked again, where the config,
    its variables and the code are unchanged; else expanded now and stored."""
    from bench.workflow import plan_workflow

    plan = stored_plan(config)
    if plan is not None:
        check_inputs(plan)
        return plan
    plan = plan_workflow(config)
    store_plan(config, plan)
    return plan
