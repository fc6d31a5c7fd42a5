"""`fedrank`: run federated experiments, list methods and datasets, summarise results.

Bad input ends with a one-line `fedrank: error: ...` naming the problem and the fix, exit code 2.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import textwrap
from pathlib import Path

from bench.errors import UserError

EPILOG = """\
examples:
  fedrank run --config configs/default.yaml --set method=fedlsc --set method.tau=0.5
  fedrank run --config configs/ham10000_cpu.yaml --set seed=2 --out results/runs/mine
  fedrank methods                 # every method with its hyper-parameters and defaults
  fedrank report --runs results/runs --out reports
"""


def cmd_run(args: argparse.Namespace) -> int:
    from bench.config import load_config, resolve_json, run_id
    from bench.engine.run import execute

    if args.config_json:
        cfg = resolve_json(args.config_json, args.set)
    else:
        cfg = load_config(args.config, args.set)
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
    from bench.data import DATASETS, resolve_data_config

    resolve_data_config({"name": "digits", "root": None, "image_size": None})  # imports every loader
    for name, spec in sorted(DATASETS.items()):
        where = "needs data.root" if spec.needs_root else "bundled"
        print(f"{name:<12} {spec.summary} [{where}; default {spec.default_size}px]")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from bench.report import write_demo_report

    for path in write_demo_report([Path(p) for p in args.records] or Path(args.runs), Path(args.out)):
        print(path)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fedrank",
        description="Reproducible benchmark of federated-learning methods on medical image classification.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

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

    report = sub.add_parser("report", help="results table and convergence plot from a folder of runs")
    report.add_argument("records", nargs="*", help="run.json files to include (default: every run under --runs)")
    report.add_argument("--runs", default="results/runs", help="folder of run directories (default: %(default)s)")
    report.add_argument("--out", default="reports", help="output folder (default: %(default)s)")
    report.set_defaults(func=cmd_report)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s", datefmt="%H:%M:%S")
    try:
        return args.func(args)
    except UserError as exc:
        print(f"fedrank: error: {exc}", file=sys.stderr)
        return 2
