"""`fedrank`: run federated experiments, list methods and datasets, summarise results.

Bad input ends with a one-line `fedrank: error: ...` naming the problem and the fix, exit code 2.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from bench.errors import UserError

SUBCOMMAND_MODULES = ("bench.commands.run", "bench.commands.new_method", "bench.commands.data", "bench.commands.report", "bench.commands.workflow")

EPILOG = """\
examples:
  fedrank run --set method=fedlsc --set method.tau=0.5 --set seed=2
  fedrank run --set data=ham10000 --set data.root=../shared/data/ham10000_200x150 --out results/runs/mine
  fedrank methods                 # every method with its hyper-parameters and defaults
  fedrank data describe msld --root ../shared/data/monkeypox_msld_v1    # a data card
  fedrank report --runs results/runs --out reports
  fedrank plan configs/paper.yaml  # the studies and runs of a workflow config (--runs: each run)
  fedrank status configs/paper.yaml  # how far they have run
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fedrank",
        description="Reproducible benchmark of federated-learning methods on medical image classification.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in SUBCOMMAND_MODULES:
        importlib.import_module(name).add_parsers(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s", datefmt="%H:%M:%S")
    try:
        return args.func(args)
    except UserError as exc:
        print(f"fedrank: error: {exc}", file=sys.stderr)
        return 2
