"""Expand a workflow config (named studies, each a grid) into resolved runs keyed by run id.

A study runs datasets x method variants x grid points x seeds. Each run config is layered,
later layers winning:

    base < datasets.<dataset> < studies.<study>.base < the method entry < the grid point < the seed

`method.<hp>` in any layer or grid axis applies only to the methods that declare `<hp>`, so a
tau sweep multiplies FedLSC alone, and a dataset can carry a tuned `method.tau` that FedAvg
ignores. Every run is resolved (validated) here, when Snakemake builds its DAG: a typo fails
before any job starts, as one line naming the config key. Runs are keyed by their run id (a hash
of the resolved configuration), so a run shared by two studies runs once.

Reports are made per group: the runs of one study on one dataset at one setting of the study's
swept non-method keys (e.g. `partition.beta=0.1`), so a table never averages across a sweep.
"""

from __future__ import annotations

import copy
import itertools
import json
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from bench.config import fill_defaults, read_yaml, resolve, run_id, set_key, validate
from bench.errors import UserError

WORKFLOW_SCHEMA = str(resources.files("bench.schemas").joinpath("workflow.schema.yaml"))
# Grid keys that have a dedicated study key: sweeping them in `grid` would bypass its checks.
DEDICATED_KEYS = {"seed": "seeds", "method": "methods", "method.name": "methods", "data": "datasets", "data.name": "datasets"}
NO_SWEEP = "all"  # the setting name of a study that sweeps no non-method key


@cache
def workflow_schema() -> dict:
    return yaml.safe_load(Path(WORKFLOW_SCHEMA).read_text())


def check_config(config: dict) -> None:
    """One-line UserError naming the key for the first schema violation of a workflow config."""
    validate(workflow_schema(), config)


def prepare_workflow_config(config: dict) -> dict:
    """Check a workflow config and fill the schema defaults (what Snakemake does)."""
    check_config(config)
    return fill_defaults(workflow_schema(), config)


def load_workflow_config(path: str | Path) -> dict:
    """Read a workflow config file, checked and with its defaults filled."""
    return prepare_workflow_config(read_yaml(path))


@dataclass(frozen=True)
class Run:
    id: str
    config: dict  # the layered config as written by the user (env vars unexpanded): what a job gets
    resolved: dict  # defaults filled and validated


@dataclass
class Group:
    """The runs one report covers: one study, one dataset, one setting of its swept keys."""

    study: str
    dataset: str
    setting: str
    runs: dict[str, str] = field(default_factory=dict)  # run id -> method variant, e.g. "fedlsc (per=0.01)"

    @property
    def path(self) -> str:
        return f"{self.study}/{self.dataset}/{self.setting}"


@dataclass
class Plan:
    results: str = "results/runs"
    runs: dict[str, Run] = field(default_factory=dict)
    studies: dict[str, dict[str, None]] = field(default_factory=dict)  # study -> its run ids (an ordered set)
    groups: dict[str, Group] = field(default_factory=dict)  # Group.path -> group

    def add(self, group: Group, run: Run, label: str) -> None:
        self.runs.setdefault(run.id, run)
        self.studies.setdefault(group.study, {})[run.id] = None
        self.groups.setdefault(group.path, group).runs.setdefault(run.id, label)

    def group(self, wildcards) -> Group:
        """The group of a report job, from its study, dataset and setting wildcards."""
        return self.groups[f"{wildcards.study}/{wildcards.dataset}/{wildcards.setting}"]

    def record(self, run: str) -> str:
        return f"{self.results}/{run}/run.json"

    def records(self, wildcards) -> list[str]:
        """The run.json files a report job reads."""
        return [self.record(run) for run in self.group(wildcards).runs]

    def all_records(self) -> list[str]:
        """The run.json files of every study: what the all-studies statistics read."""
        return [self.record(run) for run in self.runs]

    def manifest(self) -> list[tuple[str, str]]:
        """(study, run id): one row per membership; a run shared by two studies appears twice."""
        return [(study, rid) for study, ids in self.studies.items() for rid in ids]


# ---- layers -----------------------------------------------------------------------------------
def deep_merge(into: dict, update: dict) -> dict:
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(into.get(key), dict):
            deep_merge(into[key], value)
        else:
            into[key] = copy.deepcopy(value)
    return into


def split_method(fragment: dict, where: str) -> tuple[dict, dict]:
    """(the fragment without `method`, its method options); a fragment never picks the method."""
    if not isinstance(fragment, dict):
        raise UserError(f"config key '{where}': must be a mapping of run-config keys")
    rest = {k: v for k, v in fragment.items() if k != "method"}
    options = fragment.get("method", {})
    if not isinstance(options, dict):
        raise UserError(f"config key '{where}.method': must map hyper-parameters to values (methods are chosen per study)")
    if "name" in options:
        raise UserError(f"config key '{where}.method.name': choose methods with studies.<study>.methods, not in a run-config fragment")
    return rest, options


def method_hparams() -> dict[str, set[str]]:
    from bench.methods import registry

    return {name: set(cls.hparams()) for name, cls in registry().items()}


def check_method_options(options: dict, where: str, hparams: dict[str, set[str]]) -> None:
    """A `method.<hp>` that no registered method declares is a typo, not a no-op."""
    declared = set().union(*hparams.values())
    for hp in options:
        if hp not in declared:
            raise UserError(f"config key '{where}.method.{hp}': no method has hyper-parameter '{hp}'; see `fedrank methods`")


def method_entries(study: str, spec: str | list, hparams: dict[str, set[str]]) -> list[dict]:
    """The study's method variants as {name, fixed hyper-parameters}; `all` is every registered method."""
    entries = [{"name": name} for name in hparams] if spec == "all" else [{"name": e} if isinstance(e, str) else dict(e) for e in spec]
    for entry in entries:
        if entry["name"] not in hparams:
            raise UserError(f"config key 'studies.{study}.methods': unknown method '{entry['name']}'; choose from {', '.join(hparams)} or `all`")
    return entries


def seed_list(seeds: int | list[int]) -> list[int]:
    return list(range(seeds)) if isinstance(seeds, int) else list(seeds)


def grid_points(grid: dict[str, list[Any]]) -> list[dict[str, Any]]:
    """Cartesian product of `key: [values]` (keys are run-config paths like partition.beta)."""
    keys = list(grid)
    return [dict(zip(keys, combo)) for combo in itertools.product(*(grid[k] for k in keys))]


def format_value(value: Any) -> str:
    text = f"{value:g}" if isinstance(value, float) else value if isinstance(value, str) else json.dumps(value, separators=(",", ":"))
    return text.replace("/", "_").replace(" ", "")


def setting_name(point: dict[str, Any]) -> str:
    return ",".join(f"{k}={format_value(v)}" for k, v in point.items()) or NO_SWEEP


def variant_label(name: str, options: dict) -> str:
    shown = ", ".join(f"{k}={format_value(v)}" for k, v in sorted(options.items()))
    return f"{name} ({shown})" if shown else name


# ---- one study ----------------------------------------------------------------------------------
@dataclass
class StudyGrid:
    """A study's axes, checked: non-method grid keys, method hyper-parameter axes, variants, seeds."""

    name: str
    datasets: list[str]
    entries: list[dict]
    common: dict[str, list]
    method_axes: dict[str, list]
    seeds: list[int]

    @classmethod
    def from_config(cls, name: str, study: dict, config: dict, hparams: dict[str, set[str]]) -> StudyGrid:
        grid = study["grid"]
        for key in grid:
            if key.strip() in DEDICATED_KEYS:
                raise UserError(f"config key 'studies.{name}.grid.{key}': set it with studies.{name}.{DEDICATED_KEYS[key.strip()]}, not in the grid")
        entries = method_entries(name, study["methods"], hparams)
        method_axes = {k.split(".", 1)[1]: v for k, v in grid.items() if k.startswith("method.")}
        for hp in method_axes:
            users = [e["name"] for e in entries if hp in hparams[e["name"]]]
            if not users:
                names = ", ".join(dict.fromkeys(e["name"] for e in entries))
                raise UserError(f"config key 'studies.{name}.grid.method.{hp}': no method of this study ({names}) has hyper-parameter '{hp}'")
            fixed = [e["name"] for e in entries if hp in e]
            if fixed:
                raise UserError(f"config key 'studies.{name}.grid.method.{hp}': the method entry {fixed[0]} also fixes {hp}; sweep it or fix it, not both")
        return cls(
            name=name,
            datasets=study["datasets"],
            entries=entries,
            common={k: v for k, v in grid.items() if not k.startswith("method.")},
            method_axes=method_axes,
            seeds=seed_list(study.get("seeds", config["seeds"])),
        )

    def variants(self, hparams: dict[str, set[str]]):
        """(method entry, {hp: value}) for every entry and every point of the axes it declares."""
        for entry in self.entries:
            axes = {hp: values for hp, values in self.method_axes.items() if hp in hparams[entry["name"]]}
            for point in grid_points(axes):
                yield entry, point


def dataset_fragment(config: dict, study: str, dataset: str) -> dict:
    from bench.data import DATASETS, import_loaders

    if dataset in config["datasets"]:
        fragment = copy.deepcopy(config["datasets"][dataset])
    else:
        import_loaders()
        if dataset not in DATASETS:
            known = sorted(set(config["datasets"]) | set(DATASETS))
            raise UserError(f"config key 'studies.{study}.datasets': unknown dataset '{dataset}'; define it under `datasets` or choose one of: {', '.join(known)}")
        fragment = {}
    data = fragment.setdefault("data", {})
    if not isinstance(data, dict):
        raise UserError(f"config key 'datasets.{dataset}.data': must be a mapping (name, root, image_size, ...)")
    data.setdefault("name", dataset)
    return fragment


def layer(parts: list[tuple[dict, dict]], method: str, hparams: set[str], fixed: dict, point: dict, seed: int) -> dict:
    """One run config from its layers, each split into (run-config keys, method options); method
    options apply only where the method declares them."""
    cfg: dict = {}
    options: dict = {}
    for rest, method_options in parts:
        deep_merge(cfg, rest)
        options.update({k: v for k, v in method_options.items() if k in hparams})
    cfg["method"] = {**options, **fixed, "name": method}
    for key, value in point.items():
        set_key(cfg, key, value)
    cfg["seed"] = seed
    return cfg


def expand_study(plan: Plan, name: str, study: dict, config: dict, hparams: dict[str, set[str]]) -> None:
    grid = StudyGrid.from_config(name, study, config, hparams)
    for dataset in grid.datasets:
        fragments = [("base", config["base"]), (f"datasets.{dataset}", dataset_fragment(config, name, dataset)), (f"studies.{name}.base", study["base"])]
        parts = [split_method(fragment, where) for where, fragment in fragments]
        for (where, _), (_, options) in zip(fragments, parts):
            check_method_options(options, where, hparams)
        for common in grid_points(grid.common):
            group = Group(name, dataset, setting_name(common))
            for entry, method_point in grid.variants(hparams):
                fixed = {k: v for k, v in entry.items() if k != "name"}
                label = variant_label(entry["name"], {**fixed, **method_point})
                point = {**common, **{f"method.{hp}": v for hp, v in method_point.items()}}
                for seed in grid.seeds:
                    cfg = layer(parts, entry["name"], hparams[entry["name"]], fixed, point, seed)
                    try:
                        resolved = resolve(cfg)
                    except UserError as exc:
                        where = ", ".join([dataset, label, *(f"{k}={format_value(v)}" for k, v in common.items())])
                        raise UserError(f"studies.{name} ({where}): {exc}") from None
                    plan.add(group, Run(run_id(resolved), cfg, resolved), label)


def selected_studies(config: dict) -> list[str]:
    chosen = config["run_studies"]
    if chosen == "all":
        return list(config["studies"])
    unknown = [s for s in chosen if s not in config["studies"]]
    if unknown:
        raise UserError(f"config key 'run_studies': unknown study '{unknown[0]}'; choose from {', '.join(config['studies'])} or all")
    return list(chosen)


def plan_workflow(config: dict) -> Plan:
    """Every run of the selected studies, resolved and deduplicated, with study and report groups.

    `config` is a checked workflow config with its defaults filled (see `load_workflow_config`)."""
    from bench.stats.settings import resolve_stats

    resolve_stats(config["stats"])  # a bad `stats:` key stops the DAG, not the last job
    hparams = method_hparams()
    plan = Plan(results=config["results"])
    for name in selected_studies(config):
        study = fill_defaults(workflow_schema()["$defs"]["study"], config["studies"][name])
        expand_study(plan, name, study, config, hparams)
    return plan


def job_attempts(workflow) -> int:
    """Attempts a Snakemake job gets (1 + --retries), where the job runs.

    The main Snakemake process counts retries; the Snakemake it starts inside each cluster job
    runs with --retries 0, so the main process hands the total down through the environment
    (cluster jobs inherit it: the SLURM executor submits with --export=ALL)."""
    import os

    settings = workflow.execution_settings
    if not workflow.remote_exec and settings is not None:
        os.environ["FEDRANK_ATTEMPTS"] = str(settings.retries + 1)
    return int(os.environ.get("FEDRANK_ATTEMPTS", "1"))
