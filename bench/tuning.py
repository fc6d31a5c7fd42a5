"""Equal-budget tuning: every (setting, method) pair of a study gets the same N trials, scored on
validation data only, and the study's test seeds run on the configuration each pair selected.

A study with `tune: {trials: N, seeds: [...]}` expands, per (dataset, setting, method variant), a
`Pair`: its search dimensions (the method's declared spaces x the shared settings named in
`tune.shared`, less what the study fixes), N trials drawn over them, each run on the tuning
seeds, and the test runs made once a selection exists.

Trials are drawn with a scrambled Sobol sequence (`scipy.stats.qmc`, seeded by `tune.seed`),
not with an adaptive sampler such as Optuna's TPE: the draws do not depend on results, so every
trial is known when the DAG is built and all of them run at once (one SLURM job each), the same
config gives the same trials on any machine, and the first N points of the sequence do not change
when N is raised, so raising N reuses every finished trial. Sobol points cover the unit cube more
evenly than random draws at the small N a benchmark can pay for. With `defaults_first` (default)
trial 0 is the untuned configuration, so tuning never selects below the defaults on validation.

Selection (`select`) reads each trial run's record and validation metrics: `stats.selection`'s
best_val rule (global validation for global models, each client's validation split for
personalised ones), averaged over the tuning seeds. A trial whose run diverged or failed scores
as a failure; the best score wins, the earliest trial among equals. The test set is never read.
"""

from __future__ import annotations

import json
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.errors import UserError
from bench.search import Space, check_space, setting_schema, shared_space, space_from_json

DEFAULT_SHARED = ["train.lr"]
FAILED = "failed"


@dataclass
class Pair:
    """One (study, dataset, setting, method variant) tuned with the study's trials."""

    study: str
    dataset: str
    setting: str
    label: str
    dims: dict[str, Space]
    trials: list[dict[str, Any]]  # per trial, the values it sets (dotted run-config keys)
    trial_runs: list[list[str]] = field(default_factory=list)  # per trial, its run id per tuning seed
    test_seeds: list[int] = field(default_factory=list)
    variant: Any = None  # bench.workflow.Variant: makes the pair's runs from trial values and a seed

    @property
    def key(self) -> str:
        return f"{self.study}/{self.dataset}/{self.setting}/{slug(self.label)}"

    def spec(self, results: str) -> dict:
        """What `fedrank select` needs: the trials, their values and runs, and the dimensions."""
        return {"key": self.key, "label": self.label, "results": results,
                "dims": {k: {**s.to_json(), "log": s.log_scale} for k, s in self.dims.items()},
                "trials": [{"trial": i, "values": values, "runs": runs} for i, (values, runs) in enumerate(zip(self.trials, self.trial_runs))]}


def slug(label: str) -> str:
    """A method variant label as a file name: 'fedlsc (per=0.01)' -> 'fedlsc_per=0.01'."""
    return re.sub(r"_+", "_", re.sub(r"[^\w.=,+-]", "_", label)).strip("_")


# ---- the dimensions of a pair -----------------------------------------------------------------
def tuned_dimensions(tune: dict, method_cls, fixed: set[str], recipe_settings: dict, use_recipe: bool, where: str) -> dict[str, Space]:
    """Dotted key -> space: the method's declared spaces, then the shared settings of
    `tune.shared` (space: the study's `tune.space`, else the recipe's, else the run schema's),
    less the keys the study fixes (`fixed`: a method entry, a grid axis) or the recipe sets."""
    dims = {f"method.{hp}": space for hp, space in method_cls.search_space().items() if f"method.{hp}" not in fixed}
    schema_spaces = shared_space()
    recipe_space = method_cls.recipe.space if use_recipe and method_cls.recipe else {}
    for key in tune["shared"]:
        if key not in schema_spaces:
            raise UserError(f"config key '{where}.shared': '{key}' has no search space; choose from {', '.join(schema_spaces)}")
        if key in fixed or key in recipe_settings:
            continue
        dims[key] = study_space(tune, key, where) or recipe_space.get(key) or schema_spaces[key]
    return dims


def study_space(tune: dict, key: str, where: str) -> Space | None:
    spec = tune["space"].get(key)
    if spec is None:
        return None
    space = space_from_json(spec, f"{where}.space.{key}")
    check_space(space, setting_schema(key), f"config key '{where}.space.{key}'")
    return space


def check_tune(tune: dict, test_seeds: list[int], where: str) -> None:
    """One line for tuning input that cannot work: overlapping seeds, unknown space keys."""
    overlap = sorted(set(tune["seeds"]) & set(test_seeds))
    if overlap:
        raise UserError(f"config key '{where}.seeds': tuning seeds {overlap} are also test seeds; tuning and testing must use disjoint seeds "
                        "(e.g. tune: {seeds: [100]})")
    unknown = sorted(set(tune["space"]) - set(tune["shared"]))
    if unknown:
        raise UserError(f"config key '{where}.space.{unknown[0]}': not a tuned shared setting; list it in {where}.shared ({', '.join(tune['shared'])})")


# ---- trials -------------------------------------------------------------------------------------
def draw_trials(dims: dict[str, Space], trials: int, seed: int, defaults_first: bool) -> list[dict[str, Any]]:
    """`trials` value sets over `dims`: scrambled Sobol points mapped through each space (trial 0
    the defaults, {}, with `defaults_first`). Nothing to tune: every trial is the defaults."""
    if not dims:
        return [{} for _ in range(trials)]
    from scipy.stats import qmc

    drawn = trials - 1 if defaults_first else trials
    with warnings.catch_warnings():  # balance properties need a power of 2; a prefix is what makes N extensible
        warnings.simplefilter("ignore", UserWarning)
        points = qmc.Sobol(len(dims), scramble=True, rng=seed).random(max(drawn, 1))[:drawn]
    keys = sorted(dims)
    sets = [{key: dims[key].at(float(u)) for key, u in zip(keys, point)} for point in points]
    return ([{}] if defaults_first else []) + sets


def with_values(cfg: dict, values: dict[str, Any]) -> dict:
    """A run config with the trial's values set (method.<hp> into the method section)."""
    from bench.config import set_key

    out = json.loads(json.dumps(cfg))
    for key, value in values.items():
        set_key(out, key, value)
    return out


# ---- selection ----------------------------------------------------------------------------------
def trial_scores(spec: dict, settings: dict) -> list[dict]:
    """Per trial: its validation score (mean over its tuning-seed runs) or a failure, and why."""
    import math

    from bench.stats.selection import validation_scores

    folders = Path(spec["results"])
    records = {}
    for trial in spec["trials"]:
        for run in trial["runs"]:
            records[run] = json.loads((folders / run / "run.json").read_text())
    completed = [run for run, record in records.items() if record["status"] == "completed"]
    scores = validation_scores([folders / run / "run.json" for run in completed], settings) if completed else {}
    out = []
    for trial in spec["trials"]:
        values = [scores.get(run, math.nan) for run in trial["runs"]]
        statuses = [records[run]["status"] for run in trial["runs"]]
        failed = [s for s in statuses if s != "completed"] or (["no validation score"] if any(math.isnan(v) for v in values) else [])
        score = None if failed else sum(values) / len(values)
        out.append({"trial": trial["trial"], "values": trial["values"], "runs": trial["runs"], "score": score,
                    "status": "completed" if not failed else f"{FAILED}: {', '.join(sorted(set(failed)))}"})
    return out


def select(spec: dict, settings: dict) -> dict:
    """The selection record of a pair: every trial's score and the chosen trial (the best
    oriented validation score; the earliest among equals; trial 0 when every trial failed)."""
    from bench.stats.scores import lower_is_better
    from bench.stats.selection import rule_text, selection_metric

    metric = selection_metric(settings)
    sign = -1.0 if lower_is_better(metric, settings) else 1.0
    scored = trial_scores(spec, settings)
    valid = [t for t in scored if t["score"] is not None]
    best = max(valid, key=lambda t: (sign * t["score"], -t["trial"])) if valid else scored[0]
    return {"key": spec["key"], "label": spec["label"], "metric": metric, "rule": rule_text(settings, "best_val"),
            "dims": spec["dims"], "trials": scored, "selected": {"trial": best["trial"], "values": best["values"], "score": best["score"]},
            "all_failed": not valid}


def read_selection(path: str | Path) -> dict:
    return json.loads(Path(path).read_text())
