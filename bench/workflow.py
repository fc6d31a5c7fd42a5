"""Expand a workflow config (named studies, each a grid) into resolved runs keyed by run id.

A study runs datasets x method variants x grid points x seeds. Each run config is layered,
later layers winning:

    base < datasets.<dataset> < studies.<study>.base < the method entry < the grid point < the seed

Method settings in a layer are scoped to a method, `method: {fedlsc: {tau: 2.5}}` (grid axis
`method.fedlsc.tau`), and reach only that method, so a tau sweep multiplies FedLSC alone and a
dataset's tuned FedLSC tau never sets FedAdam's tau. The unscoped short form `method: {per: 0.01}`
(`method.per`) is accepted for a hyper-parameter exactly one registered method declares; one that
several declare is a one-line error saying how to scope it. Every run is resolved (validated)
here, when Snakemake builds its DAG: a typo fails before any job starts, as one line naming the
config key. Runs are keyed by their run id (a hash
of the resolved configuration), so a run shared by two studies runs once.

A study's `kind` adds the grid points of an evaluation protocol: `leave_one_centre_out` holds
each centre of the dataset's `partition.sites` out in turn (`partition.holdout`);
`communication_frequency` runs each local-epoch count E of `local_epochs` for `budget / E`
rounds, so every run has the same rounds x local epochs.

Reports are made per group: the runs of one study on one dataset at one setting of the study's
swept non-method keys (e.g. `partition.beta=0.1`), so a table never averages across a sweep.
"""

from __future__ import annotations

import copy
import itertools
import json
import shlex
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any, Callable

import yaml

from bench.config import fill_defaults, get_key, missing_inputs_recorded, read_yaml, resolve, run_id, set_key, validate
from bench.errors import UserError, closest
from bench.tuning import Pair, check_tune, draw_trials, tuned_dimensions, with_values

WORKFLOW_SCHEMA = str(resources.files("bench.schemas").joinpath("workflow.schema.yaml"))
# Grid keys that have a dedicated study key: sweeping them in `grid` would bypass its checks.
DEDICATED_KEYS = {"seed": "seeds", "method": "methods", "method.name": "methods", "data": "datasets", "data.name": "datasets"}
NO_SWEEP = "all"
UNTUNED = "-untuned"  # the suffix of the study a tuned study runs its untuned configurations in  # the setting name of a study that sweeps no non-method key


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
    pairs: list[str] = field(default_factory=list)  # keys of the tuned pairs whose test runs join the group once selected

    @property
    def path(self) -> str:
        return f"{self.study}/{self.dataset}/{self.setting}"


@dataclass
class Plan:
    results: str = "results/runs"
    runs: dict[str, Run] = field(default_factory=dict)
    studies: dict[str, dict[str, None]] = field(default_factory=dict)  # study -> its run ids (an ordered set)
    groups: dict[str, Group] = field(default_factory=dict)  # Group.path -> group
    reports: str = "reports"
    missing: dict[str, str] = field(default_factory=dict)  # missing input path -> what to do (plan_workflow)
    pairs: dict[str, Pair] = field(default_factory=dict)  # tuned (study, dataset, setting, method) -> its trials
    trials: dict[str, None] = field(default_factory=dict)  # run ids of tuning trials (in no study: never ranked)

    def add(self, group: Group, run: Run, label: str) -> None:
        self.runs.setdefault(run.id, run)
        self.studies.setdefault(group.study, {})[run.id] = None
        self.groups.setdefault(group.path, group).runs.setdefault(run.id, label)

    def add_trial(self, run: Run) -> None:
        self.runs.setdefault(run.id, run)
        self.trials[run.id] = None

    def add_pair(self, group: Group, pair: Pair) -> None:
        self.studies.setdefault(group.study, {})
        self.groups.setdefault(group.path, group).pairs.append(pair.key)
        self.pairs[pair.key] = pair

    def selection_file(self, key: str) -> str:
        return f"{self.reports}/tuning/selections/{key}.json"

    def tested_runs(self, key: str, selection: dict) -> list[Run]:
        """The test runs of a tuned pair on its selected configuration."""
        pair = self.pairs[key]
        if selection.get("key") != key:
            raise UserError(f"{self.selection_file(key)} is the selection of '{selection.get('key')}', not of {key}: delete it and rerun")
        return [pair.variant.run(selection["selected"]["values"], seed, tuned=list(pair.dims)) for seed in pair.test_seeds]

    def add_tested(self, key: str, selection: dict) -> list[Run]:
        """The test runs of a tuned pair on its selected configuration, added to its study and group."""
        pair = self.pairs[key]
        runs = self.tested_runs(key, selection)
        group = self.groups[f"{pair.study}/{pair.dataset}/{pair.setting}"]
        for run in runs:
            self.add(group, run, pair.label)
        return runs

    def run_ids_on_disk(self) -> list[str]:
        """Every planned run id, and those of the tuned test runs whose selection is on disk (not
        added to the plan: the workflow adds them once their `select` checkpoint is done)."""
        from bench.tuning import read_selection

        tested = []
        for key in self.pairs:
            try:
                tested += [run.id for run in self.tested_runs(key, read_selection(self.selection_file(key)))]
            except (OSError, ValueError, KeyError, TypeError, UserError):
                continue  # not selected yet, or a selection its checkpoint writes again
        return [*self.runs, *tested]

    def add_selected(self) -> None:
        """The test runs of every pair whose selection file exists (outside the workflow's DAG:
        `fedrank plan`, `fedrank status`, a cluster job looking up its run's config)."""
        from bench.tuning import read_selection

        for key in self.pairs:
            if Path(self.selection_file(key)).is_file():
                self.add_tested(key, read_selection(self.selection_file(key)))

    def config_of(self, run: str) -> dict:
        """A run's config; a tuned test run's is found from the selections on disk."""
        if run not in self.runs:
            self.add_selected()
        return self.runs[run].config

    def group(self, wildcards) -> Group:
        """The group of a report job, from its study, dataset and setting wildcards."""
        return self.groups[f"{wildcards.study}/{wildcards.dataset}/{wildcards.setting}"]

    def record(self, run: str) -> str:
        return f"{self.results}/{run}/run.json"

    def records(self, wildcards) -> list[str]:
        """The run.json files a report job reads."""
        return [self.record(run) for run in self.group(wildcards).runs]

    def all_records(self) -> list[str]:
        """The run.json files of every study's runs known so far: what the all-studies
        statistics read (tuning trials are in no study; tuned test runs join once selected)."""
        return [self.record(run) for run in dict.fromkeys(r for ids in self.studies.values() for r in ids)]

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
        raise UserError(f"config key '{where}.method': must map method names to their hyper-parameters (methods are chosen per study)")
    if "name" in options:
        raise UserError(f"config key '{where}.method.name': choose methods with studies.<study>.methods, not in a run-config fragment")
    return rest, options


def method_hparams() -> dict[str, set[str]]:
    from bench.methods import registry

    return {name: set(cls.hparams()) for name, cls in registry().items()}


def owner_of(hp: str, where: str, hparams: dict[str, set[str]], scoped_form: Callable[[str], str]) -> str:
    """The one registered method declaring an unscoped hyper-parameter `hp`, or a one-line error
    (`scoped_form(method)` shows how to write it scoped)."""
    owners = [name for name, declared in hparams.items() if hp in declared]
    if not owners:
        raise UserError(f"config key '{where}': no method has hyper-parameter '{hp}'; see `fedrank methods`")
    if len(owners) > 1:
        raise UserError(f"config key '{where}': '{hp}' is a hyper-parameter of several methods ({', '.join(owners)}); "
                        f"scope it to the one you mean, e.g. {scoped_form(owners[0])}")
    return owners[0]


def scoped_options(options: dict, where: str, hparams: dict[str, set[str]]) -> dict[str, dict]:
    """A layer's method options as {method: {hp: value}}: `{fedlsc: {tau: 2.5}}` as written, or
    `{per: 0.01}` given to the one method that declares it."""
    scoped: dict[str, dict] = {}
    for key, value in options.items():
        if key in hparams and isinstance(value, dict):
            for hp in value:
                if hp not in hparams[key]:
                    raise UserError(f"config key '{where}.method.{key}.{hp}': method {key} has no hyper-parameter '{hp}'; "
                                    f"its hyper-parameters: {', '.join(sorted(hparams[key])) or 'none'}")
            scoped.setdefault(key, {}).update(value)
        else:
            owner = owner_of(key, f"{where}.method.{key}", hparams, lambda m: f"method: {{{m}: {{{key}: {value!r}}}}}")
            scoped.setdefault(owner, {})[key] = value
    return scoped


def method_entries(study: str, spec: str | list, hparams: dict[str, set[str]]) -> list[dict]:
    """The study's method variants as {name, fixed hyper-parameters}; `all` is every registered
    method but adapters (`in_all` False: Flower, named with its strategy)."""
    from bench.methods import registry

    entries = [{"name": name} for name, cls in registry().items() if cls.in_all] if spec == "all" else [{"name": e} if isinstance(e, str) else dict(e) for e in spec]
    for entry in entries:
        if entry["name"] not in hparams:
            raise UserError(f"config key 'studies.{study}.methods': unknown method '{entry['name']}'{closest(entry['name'], hparams)}; choose from {', '.join(hparams)} or `all`")
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
    method_axes: dict[tuple[str, str], list]  # (method, hyper-parameter) -> values
    seeds: list[int]

    @classmethod
    def from_config(cls, name: str, study: dict, config: dict, hparams: dict[str, set[str]]) -> StudyGrid:
        grid = study["grid"]
        for key in grid:
            if key.strip() in DEDICATED_KEYS:
                raise UserError(f"config key 'studies.{name}.grid.{key}': set it with studies.{name}.{DEDICATED_KEYS[key.strip()]}, not in the grid")
        entries = method_entries(name, study["methods"], hparams)
        written = {method_axis(key, f"studies.{name}.grid.{key}", hparams): key for key in grid if key.startswith("method.")}
        method_axes = {axis: grid[key] for axis, key in written.items()}
        studied = list(dict.fromkeys(e["name"] for e in entries))
        for (method, hp), key in written.items():
            where = f"studies.{name}.grid.{key}"
            if method not in studied:
                raise UserError(f"config key '{where}': no method of this study ({', '.join(studied)}) has hyper-parameter '{hp}' (it is {method}'s)")
            if any(e["name"] == method and hp in e for e in entries):
                raise UserError(f"config key '{where}': the method entry {method} also fixes {hp}; sweep it or fix it, not both")
        return cls(
            name=name,
            datasets=study["datasets"],
            entries=entries,
            common={k: v for k, v in grid.items() if not k.startswith("method.")},
            method_axes=method_axes,
            seeds=seed_list(study.get("seeds", config["seeds"])),
        )

    def variants(self):
        """(method entry, {hp: value}) for every entry and every point of its own axes."""
        for entry in self.entries:
            axes = {hp: values for (method, hp), values in self.method_axes.items() if method == entry["name"]}
            for point in grid_points(axes):
                yield entry, point


def method_axis(key: str, where: str, hparams: dict[str, set[str]]) -> tuple[str, str]:
    """(method, hyper-parameter) of a grid key `method.<method>.<hp>` or `method.<hp>`."""
    parts = key.strip().split(".")[1:]
    if len(parts) == 2 and parts[0] in hparams:
        method, hp = parts
        if hp not in hparams[method]:
            raise UserError(f"config key '{where}': method {method} has no hyper-parameter '{hp}'; its hyper-parameters: {', '.join(sorted(hparams[method])) or 'none'}")
        return method, hp
    if len(parts) != 1:
        raise UserError(f"config key '{where}': write method.<method>.<hyper-parameter> (e.g. method.fedlsc.tau) or method.<hyper-parameter>")
    return owner_of(parts[0], where, hparams, lambda m: f"method.{m}.{parts[0]}"), parts[0]


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


def layer(parts: list[tuple[dict, dict[str, dict]]], method: str, fixed: dict, point: dict, seed: int, recipe: dict | None = None) -> dict:
    """One run config from its layers, each split into (run-config keys, method options scoped by
    method); only the options scoped to `method` reach it. A method's `recipe` settings come over
    the layers and under the grid point; the ones the point leaves are recorded in train.recipe."""
    cfg: dict = {}
    options: dict = {}
    for rest, scoped in parts:
        deep_merge(cfg, rest)
        options.update(scoped.get(method, {}))
    recorded = {k: v for k, v in (recipe or {}).items() if k not in point}
    for key, value in recorded.items():
        set_key(cfg, key, value)
    if recorded:
        set_key(cfg, "train.recipe", recorded)
    cfg["method"] = {**options, **fixed, "name": method}
    for key, value in point.items():
        set_key(cfg, key, value)
    cfg["seed"] = seed
    return cfg


# ---- study kinds: protocols as extra grid points ------------------------------------------------
KIND_KEYS = {"leave_one_centre_out": ("partition.holdout", "partition.sites"), "communication_frequency": ("train.local_epochs", "train.rounds")}
KIND_OPTIONS = {"communication_frequency": ("budget", "local_epochs")}


def check_kind(name: str, study: dict) -> None:
    """A study kind's own keys are given, and its swept keys are not also in the grid."""
    kind = study["kind"]
    for option in ("budget", "local_epochs"):
        if option in study and option not in KIND_OPTIONS.get(kind, ()):
            raise UserError(f"config key 'studies.{name}.{option}': only a communication_frequency study takes it (this study's kind is {kind})")
    for option in KIND_OPTIONS.get(kind, ()):
        if option not in study:
            raise UserError(f"config key 'studies.{name}.{option}': a {kind} study needs it (e.g. budget: 40, local_epochs: [1, 2, 4, 8])")
    for key in study["grid"]:
        if key.strip() in KIND_KEYS.get(kind, ()):
            raise UserError(f"config key 'studies.{name}.grid.{key}': a {kind} study sets {key.strip()} itself; leave it out of the grid")


def frequency_points(name: str, study: dict) -> list[dict[str, Any]]:
    """Each local-epoch count E at the fixed budget: train.rounds = budget / E."""
    budget = study["budget"]
    uneven = [e for e in study["local_epochs"] if budget % e]
    if uneven:
        raise UserError(f"config key 'studies.{name}.local_epochs': {uneven} do not divide the budget {budget} (rounds x local epochs); choose divisors")
    return [{"train.local_epochs": e, "train.rounds": budget // e} for e in study["local_epochs"]]


def holdout_points(name: str, dataset: str, layered: dict) -> list[dict[str, Any]]:
    """Each centre of the dataset's natural partition held out in turn."""
    partition = layered.get("partition", {})
    if partition.get("scheme") != "natural" or not partition.get("sites"):
        raise UserError(f"studies.{name} ({dataset}): a leave_one_centre_out study needs partition.scheme: natural and the centres listed in "
                        f"partition.sites (of the dataset or the study's base), e.g. partition: {{scheme: natural, sites: [A, B, C]}}")
    if len(partition["sites"]) < 3:
        raise UserError(f"studies.{name} ({dataset}): leave-one-centre-out needs at least 3 centres in partition.sites (each run trains on the others)")
    return [{"partition.holdout": centre} for centre in partition["sites"]]


def kind_points(name: str, study: dict, dataset: str, parts: list[tuple[dict, dict]]) -> list[dict[str, Any]]:
    """The grid points a study's kind adds (one empty point for a plain grid)."""
    if study["kind"] == "communication_frequency":
        return frequency_points(name, study)
    if study["kind"] == "leave_one_centre_out":
        layered: dict = {}
        for rest, _ in parts:
            deep_merge(layered, rest)
        return holdout_points(name, dataset, layered)
    return [{}]


def expand_study(plan: Plan, name: str, study: dict, config: dict, hparams: dict[str, set[str]]) -> None:
    check_kind(name, study)
    grid = StudyGrid.from_config(name, study, config, hparams)
    for dataset in grid.datasets:
        fragments = [("base", config["base"]), (f"datasets.{dataset}", dataset_fragment(config, name, dataset)), (f"studies.{name}.base", study["base"])]
        parts = []
        for where, fragment in fragments:
            rest, options = split_method(fragment, where)
            parts.append((rest, scoped_options(options, where, hparams)))
        extra = kind_points(name, study, dataset, parts)
        for common in ({**point, **added} for point in grid_points(grid.common) for added in extra):
            group = Group(name, dataset, setting_name(common))
            for entry, method_point in grid.variants():
                fixed = {k: v for k, v in entry.items() if k != "name"}
                label = variant_label(entry["name"], {**fixed, **method_point})
                point = {**common, **{f"method.{hp}": v for hp, v in method_point.items()}}
                recipe = recipe_settings(entry["name"], study)
                variant = Variant(name, dataset, label, common, layer(parts, entry["name"], fixed, point, 0, recipe))
                if study.get("tune"):
                    fixed_keys = {*point, *(f"method.{k}" for k in fixed)}
                    tune_variant(plan, group, variant, study, entry["name"], fixed_keys, recipe, grid.seeds)
                    continue
                for seed in grid.seeds:
                    plan.add(group, variant.run({}, seed), label)


@dataclass
class Variant:
    """One method variant of a study at one setting: its run configs by seed (and trial values)."""

    study: str
    dataset: str
    label: str
    common: dict
    config: dict  # the layered run config (its seed replaced per run)

    def run(self, values: dict, seed: int, tuned: list[str] = ()) -> Run:
        """The resolved run at `seed` with trial `values` set; a bad value is one line naming the run.
        `tuned`: the keys tuning chose, recorded with their values in train.tuned (the defaults'
        where the selection left them), so they count as the treatment's, not the setting's."""
        cfg = {**with_values(self.config, values), "seed": seed}
        if tuned:
            defaults = resolve(cfg)
            set_key(cfg, "train.tuned", {key: get_key(defaults, key) for key in tuned})
        try:
            resolved = resolve(cfg)
        except UserError as exc:
            where = ", ".join([self.dataset, self.label, *(f"{k}={format_value(v)}" for k, v in {**self.common, **values}.items())])
            raise UserError(f"studies.{self.study} ({where}): {exc}") from None
        return Run(run_id(resolved), cfg, resolved)


def recipe_settings(method: str, study: dict) -> dict:
    """The settings of the method's recipe where the study runs recipes (`recipes: paper`)."""
    from bench.methods import registry

    recipe = registry()[method].recipe
    return dict(recipe.settings) if study["recipes"] == "paper" and recipe is not None else {}


def tune_variant(plan: Plan, group: Group, variant: Variant, study: dict, method: str, fixed: set[str], recipe: dict, test_seeds: list[int]) -> None:
    """The variant's trials on the tuning seeds; its test runs wait for the selection. With
    `tune.untuned` the untuned configuration runs on the test seeds as study <name>-untuned."""
    from bench.methods import registry

    tune = fill_defaults(workflow_schema()["$defs"]["tune"], study["tune"])
    where = f"studies.{variant.study}.tune"
    check_tune(tune, test_seeds, where)
    dims = tuned_dimensions(tune, registry()[method], fixed, recipe, study["recipes"] == "paper", where)
    tuning_seeds = seed_list(tune["seeds"])
    pair = Pair(variant.study, variant.dataset, group.setting, variant.label, dims, draw_trials(dims, tune["trials"], tune["seed"], tune["defaults_first"]),
                test_seeds=test_seeds, variant=variant)
    for values in pair.trials:
        runs = [variant.run(values, seed) for seed in tuning_seeds]
        for run in runs:
            plan.add_trial(run)
        pair.trial_runs.append([run.id for run in runs])
    plan.add_pair(group, pair)
    if tune["untuned"]:
        untuned = Group(f"{variant.study}{UNTUNED}", variant.dataset, group.setting)
        for seed in test_seeds:
            plan.add(untuned, variant.run({}, seed), variant.label)


def selected_studies(config: dict) -> list[str]:
    chosen = config["run_studies"]
    if chosen == "all":
        return list(config["studies"])
    unknown = [s for s in chosen if s not in config["studies"]]
    if unknown:
        raise UserError(f"config key 'run_studies': unknown study '{unknown[0]}'; choose from {', '.join(config['studies'])} or all")
    return list(chosen)


def plan_workflow(config: dict, allow_missing: bool = False) -> Plan:
    """Every run of the selected studies, resolved and deduplicated, with study and report groups.

    `config` is a checked workflow config with its defaults filled (see `load_workflow_config`).
    Every missing data root or weights file is found, not only the first: the error names them all,
    or with `allow_missing` (`fedrank plan` on a machine without the data) `plan.missing` holds them."""
    from bench.methods import add_methods_path
    from bench.stats.settings import resolve_stats

    resolve_stats(config["stats"])  # a bad `stats:` key stops the DAG, not the last job
    add_methods_path(config.get("methods_path", []))  # before the registry is read: `methods: all` includes them
    hparams = method_hparams()
    plan = Plan(results=config["results"], reports=config["reports"])
    with missing_inputs_recorded() as plan.missing:
        for name in selected_studies(config):
            study = fill_defaults(workflow_schema()["$defs"]["study"], config["studies"][name])
            if study.get("tune") and study["tune"].get("untuned", True) and f"{name}{UNTUNED}" in config["studies"]:
                raise UserError(f"config key 'studies.{name}{UNTUNED}': the tuned study {name} runs its untuned configurations under that name; rename one")
            expand_study(plan, name, study, config, hparams)
    if plan.missing and not allow_missing:
        raise UserError(f"{len(plan.missing)} input(s) missing: {'; '.join(plan.missing.values())} "
                        "(`fedrank plan CONFIG` lists them as a checklist)")
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


def concurrent_group_job(argv: list[str], finished: Callable[[str], bool]) -> list[str] | None:
    """The arguments that run a SLURM group job's jobs at once, for the Snakemake inside that job;
    None for any other Snakemake process. `finished(run)` says whether a run's outputs are all there.

    The SLURM executor plugin starts a group job's own Snakemake with `--executor slurm-jobstep
    --jobs 1`, which runs the jobs of the group one after another (snakemake-executor-plugin-slurm
    issue #469), so packed training runs would not share the job's GPU. With Snakemake's local
    executor the same process runs them side by side, within the --cores and --resources the group
    job was sized with (only group jobs get --local-groupid). When a killed group job is retried,
    its runs that finished before the kill are left out of its --target-jobs (Snakemake forces
    every target job, deleting its outputs first): only the others run, resuming from their
    checkpoints. An empty list: every run of the job had finished."""
    pairs = list(zip(argv, argv[1:]))
    if "--local-groupid" not in argv or ("--executor", "slurm-jobstep") not in pairs or ("--jobs", "1") not in pairs:
        return None
    out = list(argv)
    out[pairs.index(("--executor", "slurm-jobstep")) + 1] = "local"
    jobs = pairs.index(("--jobs", "1"))
    out = out[:jobs] + out[jobs + 2:]
    if dict(pairs).get("--attempt", "1") == "1":
        return out
    start = out.index("--target-jobs") + 1
    end = next((i for i in range(start, len(out)) if out[i].startswith("--")), len(out))
    left = [target for target in out[start:end] if not finished(target.split("=", 1)[1])]
    return out[:start] + left + out[end:] if left else []


def closing_lines(plan: Plan, configfiles: list[str], default_config: str) -> list[str]:
    """What a finished workflow prints last: where the results are and the report command (with
    the same --configfile, which the report needs to find them)."""
    chosen = [str(f) for f in configfiles if str(f) != default_config]
    again = "".join(f" --configfile {shlex.quote(f)}" for f in chosen)
    lines = [f"Results: {plan.reports}/results.md (leaderboard and a table per setting); tables in {plan.reports}/tables/ "
             f"(CSV, Markdown, LaTeX), figures in {plan.reports}/figures/, per-run logs in {plan.results}/<run id>/train.log."]
    if plan.pairs:
        lines.append(f"Tuning: {plan.reports}/tuning/summary/ (the selected hyper-parameters, tuned against untuned).")
    lines.append(f"HTML report: snakemake --report {plan.reports}/report.html{again}")
    return lines
