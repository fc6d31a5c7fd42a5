"""`fedrank run`, `fedrank methods`, `fedrank datasets`: run experiments and list what exists."""

from __future__ import annotations

import argparse
import json
import logging
import textwrap
from pathlib import Path


def cmd_run(args: argparse.Namespace) -> int:
    from bench.config import load_config, resolve_json, run_id
    from bench.engine.run import execute

    cfg = resolve_json(args.config_json, args.set) if args.config_json else load_config(args.config, args.set)
    if args.print_config:
        print(json.dumps({"run_id": run_id(cfg), **cfg}, indent=2))
        return 0
    out = Path(args.out) if args.out else Path(args.runs) / run_id(cfg)
    record = execute(cfg, out, show_progress=not args.quiet)
    logging.getLogger("fedrank").info("%s: %s after %d rounds -> %s", record["run_id"], record["status"], record["rounds_completed"], out)
    return 0


def cmd_methods(args: argparse.Namespace) -> int:
    from bench.methods import registry

    methods = registry()
    if args.json:
        print(json.dumps({name: cls.hparam_schema() for name, cls in methods.items()}, indent=2))
        return 0
    for name, cls in methods.items():
        print(f"{name:<12} {cls.summary()}")
        for hp, field in cls.hparams().items():
            bounds = ", ".join(f"{k} {v}" for k, v in field.metadata["bounds"].items())
            print(f"    {hp} = {field.default!r:<8} {field.metadata['help']}" + (f" [{bounds}]" if bounds else ""))
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
            a finished run is not repeated. Config keys and defaults: bench/schemas/run.schema.yaml."""),
    )
    source = run.add_mutually_exclusive_group()
    source.add_argument("--config", "-c", help="YAML run config (default: built-in defaults, the digits demo)")
    source.add_argument("--config-json", metavar="JSON", help="the run config as one JSON object (what the workflow passes)")
    run.add_argument("--set", "-s", action="append", default=[], metavar="KEY=VALUE",
                     help="override a config key, value parsed as YAML; repeatable (e.g. --set method=fedlsc --set method.tau=0.5)")
    run.add_argument("--out", "-o", help="run directory (default: <runs>/<run id>)")
    run.add_argument("--runs", default="results/runs", help="parent folder of run directories (default: %(default)s)")
    run.add_argument("--print-config", action="store_true", help="print the resolved config and run id, run nothing")
    run.add_argument("--quiet", "-q", action="store_true", help="no progress bar")
    run.set_defaults(func=cmd_run)

    methods = sub.add_parser("methods", help="list methods with their hyper-parameters and defaults")
    methods.add_argument("--json", action="store_true", help="print each method's config JSON schema")
    methods.set_defaults(func=cmd_methods)

    datasets = sub.add_parser("datasets", help="list datasets")
    datasets.set_defaults(func=cmd_datasets)
