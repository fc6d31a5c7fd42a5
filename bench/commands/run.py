"""`fedrank run`, `fedrank methods`, `fedrank models`, `fedrank datasets`: run experiments and list what exists."""

from __future__ import annotations

import argparse
import gc
import json
import logging
import textwrap
from pathlib import Path

from bench.listings import remembered


def cmd_run(args: argparse.Namespace) -> int:
    from bench.config import load_config, resolve_json, run_id

    with ImportsOutOfCollection() as collection:
        cfg = resolve_json(args.config_json, args.set) if args.config_json else load_config(args.config, args.set)  # imports torch, every method
        attempt = parse_attempt(args.attempt)
        if args.print_config:
            print(json.dumps({"run_id": run_id(cfg), **cfg}, indent=2))
            return 0
        from bench.engine.run import execute  # the engine (pandas, for the tables it writes) only to run

        collection.imported()
        out = Path(args.out) if args.out else Path(args.runs) / run_id(cfg)
        log = logging.getLogger("fedrank")
        if attempt:
            log.info("%s: attempt %d of %d", run_id(cfg), *attempt)
        try:
            record = execute(cfg, out, show_progress=not args.quiet)
        except Exception as exc:
            if not ends_as_failed_run(exc, attempt):
                raise
            record = record_failure(cfg, out, exc)
    log.info("%s: %s after %d rounds -> %s", record["run_id"], record["status"], record["rounds_completed"], out)
    return 0


class ImportsOutOfCollection:
    """Importing torch and pandas makes some 200,000 objects that live until exit: collections while
    they are made free nothing, and later ones walk them again (a synthetic run's 561 collections
    took 0.45 s; now 53 take 0.015 s). Inside, garbage collection waits until `imported()`, and what exists then stays
    out of it (gc.freeze) until the block ends (gc.unfreeze), so a process that runs many commands
    (the tests) still collects its garbage. Objects another caller froze are left as they are."""

    def __enter__(self) -> ImportsOutOfCollection:
        self.enabled, self.freezes = gc.isenabled(), not gc.get_freeze_count()
        gc.disable()
        return self

    def imported(self) -> None:
        """Collection resumes, leaving out what exists now."""
        if self.freezes:
            gc.freeze()
        if self.enabled:
            gc.enable()

    def __exit__(self, *exc) -> None:
        if self.freezes:
            gc.unfreeze()
        if self.enabled:
            gc.enable()


def parse_attempt(text: str | None) -> tuple[int, int] | None:
    """`--attempt N/M` as (N, M)."""
    from bench.errors import UserError

    if text is None:
        return None
    try:
        current, total = (int(part) for part in text.split("/"))
    except ValueError:
        raise UserError(f"--attempt '{text}': expected N/M, e.g. --attempt 1/3") from None
    return current, total


def ends_as_failed_run(exc: Exception, attempt: tuple[int, int] | None) -> bool:
    """Under the workflow (`--attempt N/M`), whether an error is recorded as a failed run: bad input
    found at run time at once (retrying cannot fix it), any other error on the last attempt."""
    from bench.errors import Stopped, UserError

    if isinstance(exc, Stopped):  # the folder in use, a full disk, Ctrl-C: the same command continues the run
        return False
    return attempt is not None and (isinstance(exc, UserError) or attempt[0] >= attempt[1])


def record_failure(cfg: dict, out: Path, exc: Exception) -> dict:
    """The failed run's record: the engine's own if it got that far, else a minimal one written here
    (bad input found at run time, e.g. a client left without data), so the run is never dropped."""
    from bench.config import config_digest, run_id
    from bench.engine.lock import run_folder_lock
    from bench.engine.outputs import check_output_folder, recorded
    from bench.engine.run import Progress, RunPaths, write_outputs

    paths = RunPaths(out)
    record = recorded(paths, config_digest(cfg))  # a folder holding another configuration's run is refused
    if record is None:
        check_output_folder(out)
        out.mkdir(parents=True, exist_ok=True)
        record = {
            "run_id": run_id(cfg), "status": "failed", "error": f"{type(exc).__name__}: {exc}", "rounds_completed": 0,
            "diverged_round": None, "resumed_from_round": None, "headline_scope": None, "seed": cfg["seed"],
            "method": cfg["method"], "config": cfg, "config_digest": config_digest(cfg),
        }
        with run_folder_lock(out):
            write_outputs(paths, Progress(), record)
    logging.getLogger("fedrank").error("%s recorded as failed: %s: %s", run_id(cfg), type(exc).__name__, exc)
    return record


def cmd_methods(args: argparse.Namespace) -> int:
    from bench.methods import registry
    from bench.methods.requirements import REQUIREMENTS
    from bench.search import shared_space

    methods = registry()
    if args.json:
        from bench.compatibility import compatibility

        privacy = compatibility()
        print(json.dumps({name: {**cls.hparam_schema(), "search": {hp: s.to_json() for hp, s in cls.search_space().items()},
                                 "recipe": recipe_json(cls.recipe), "requires": list(cls.requires), "privacy": privacy.get(name)}
                          for name, cls in methods.items()}, indent=2))
        return 0
    for name, cls in methods.items():
        print(f"{name:<12} {cls.summary()}")
        if cls.requires:
            print(f"    requires {', '.join(REQUIREMENTS[key].what for key in cls.requires)}")
        spaces = cls.search_space()
        for hp, field in cls.hparams().items():
            bounds = ", ".join(f"{k} {v}" for k, v in field.metadata["bounds"].items())
            print(aligned(f"    {hp} = {field.default!r}", field.metadata["help"] + (f" [{bounds}]" if bounds else "")))
            if hp in spaces:
                print(aligned("", f"search: {spaces[hp].describe()}" + (f"  ({spaces[hp].source})" if spaces[hp].source else "")))
        if cls.recipe is not None:
            print(f"    recipe (recipes: paper): {cls.recipe.describe()}")
    shared = ", ".join(f"{key} {space.describe()}" for key, space in shared_space().items())
    print(f"\nshared settings tuning searches (tune.shared; spaces from the run schema): {shared}")
    print_privacy_compatibility(methods)
    return 0


def print_privacy_compatibility(methods: dict) -> None:
    """Which privacy modes each method runs under, as derived by running them on synthetic."""
    from bench.compatibility import compatibility, compatibility_columns

    table = compatibility()
    print("\nprivacy (derived by running each mode on synthetic: python -m bench.engine.privacy; DP: client-level DP-FedAvg, record-level DP-SGD)")
    print(f"    {'method':<14}{'DP-compatible':<18}SecAgg-compatible")
    for name in methods:
        columns = compatibility_columns(name, table)
        print(f"    {name:<14}{columns['DP-compatible']:<18}{columns['SecAgg-compatible']}")


HELP_COLUMN = 32


def aligned(left: str, text: str) -> str:
    """`left` and `text` in two columns; a `left` too long for its column (a list default) puts
    `text` on the next line, in the same column."""
    if len(left) < HELP_COLUMN:
        return f"{left:<{HELP_COLUMN}}{text}"
    return f"{left}\n{'':<{HELP_COLUMN}}{text}"


def recipe_json(recipe) -> dict | None:
    if recipe is None:
        return None
    return {"settings": recipe.settings, "space": {k: s.to_json() for k, s in recipe.space.items()}, "source": recipe.source}


def cmd_models(args: argparse.Namespace) -> int:
    from bench.models import catalogue
    from bench.models.timm_models import save_weights_command

    for model in catalogue():
        print(f"{model['name']:<20} {model['summary']}")
        for option, default in model["options"].items():
            print(f"    {option} = {default!r}")
        if model["weights_of"]:
            print(f"    weights: model.weights = a local file of timm's {model['weights_of']} ImageNet weights; make it once on a machine with internet:")
            print(f"      {save_weights_command(model['weights_of'])}")
    return 0


def cmd_datasets(args: argparse.Namespace) -> int:
    from bench.data import DATASETS, import_loaders

    import_loaders()
    for name, spec in sorted(DATASETS.items()):
        where = "needs data.root" if spec.needs_root else "bundled"
        size = f"default {spec.default_size}px" if spec.default_size else "native size"
        print(f"{name:<12} {spec.summary} [{where}; {size}]")
    return 0


def add_parsers(sub: argparse._SubParsersAction) -> None:
    run = sub.add_parser(
        "run",
        help="run (or resume) one federated experiment",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=textwrap.dedent("""\
            Run one federated experiment from a YAML config plus --set overrides.
            Outputs go to --out (default results/runs/<run id>, the id derived from the resolved
            config): run.json, metrics.parquet, diagnostics.parquet. A run killed at any point
            resumes from its last completed round when started again with the same config;
            a finished run is not repeated. One process at a time runs in a folder (it holds run.lock
            there); Ctrl-C or a full disk stops with the round the same command resumes from.
            Config keys and defaults: bench/schemas/run.schema.yaml."""),
    )
    source = run.add_mutually_exclusive_group()
    source.add_argument("--config", "-c", help="YAML run config (default: built-in defaults, the digits demo)")
    source.add_argument("--config-json", metavar="JSON", help="the run config as one JSON object (what the workflow passes)")
    run.add_argument("--set", "-s", action="append", default=[], metavar="KEY=VALUE",
                     help="override a config key, value parsed as YAML; repeatable (e.g. --set method=fedlsc --set method.tau=0.5)")
    run.add_argument("--out", "-o", help="run directory (default: <runs>/<run id>)")
    run.add_argument("--runs", default="results/runs", help="parent folder of run directories (default: %(default)s)")
    run.add_argument("--print-config", action="store_true", help="print the resolved config and run id, run nothing")
    run.add_argument("--quiet", "-q", action="store_true", help="no progress bar or per-round messages: warnings and errors only")
    run.add_argument("--attempt", metavar="N/M",
                     help="this is attempt N of M (the workflow passes it): bad input found at run time, or any error on "
                          "the last attempt, is recorded as a failed run with exit code 0, so the failure reaches the statistics")
    run.set_defaults(func=cmd_run)

    methods = sub.add_parser(
        "methods", help="list methods with their hyper-parameters and defaults",
        description="Every registered federated method (one module in bench/methods/), what differs from FedAvg, and each "
                    "hyper-parameter with its default and bounds: the keys `method.<hp>` of a run config and of workflow grids.",
    )
    methods.add_argument("--json", action="store_true", help="print each method's config JSON schema")
    methods.set_defaults(func=remembered("methods", cmd_methods))

    models = sub.add_parser(
        "models", help="list models with their options",
        description="Every model `model.name` can take, its builder options (`model.<option>`) with their defaults, and for "
                    "models with pretrained weights the command that makes the local weights file `model.weights` reads "
                    "(fedrank never downloads weights).",
    )
    models.set_defaults(func=remembered("models", cmd_models))

    datasets = sub.add_parser(
        "datasets", help="list datasets",
        description="Every dataset loader `data.name` can take: what it is, whether it needs `data.root` (a folder you "
                    "downloaded; see README, section Data and weights) and its default image size.",
    )
    datasets.set_defaults(func=remembered("datasets", cmd_datasets))
