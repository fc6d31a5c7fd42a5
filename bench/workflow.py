"""Expand a workflow config (a base run config + a grid) into resolved runs keyed by run id.

Used by the Snakefile at DAG-build time; every grid point is validated here, so a typo fails
before any job starts. Two grid points that resolve to the same config share one run.
"""

from __future__ import annotations

import copy
import itertools
from typing import Any

from bench.config import resolve, run_id, set_key
from bench.errors import UserError


def grid_points(grid: dict[str, list[Any]]) -> list[dict[str, Any]]:
    """Cartesian product of `key: [values]` (keys are run-config paths like partition.beta)."""
    for key, values in grid.items():
        if not isinstance(values, list) or not values:
            raise UserError(f"workflow config key 'grid.{key}': needs a non-empty list of values")
    keys = list(grid)
    return [dict(zip(keys, combo)) for combo in itertools.product(*(grid[k] for k in keys))]


def plan_runs(workflow_config: dict) -> dict[str, dict]:
    """Resolved run configs by run id for `base` x `grid` of a workflow config."""
    base = workflow_config.get("base", {})
    runs: dict[str, dict] = {}
    for point in grid_points(workflow_config.get("grid", {})):
        cfg = copy.deepcopy(base)
        for key, value in point.items():
            set_key(cfg, key, value)
        resolved = resolve(cfg)
        runs.setdefault(run_id(resolved), resolved)
    if not runs:
        raise UserError("workflow config: the grid expands to no runs; list at least one value per grid key")
    return runs
