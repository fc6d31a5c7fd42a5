"""`fedrank`: run federated experiments, list methods and datasets, summarise results.

Bad input ends with a one-line `fedrank: error: ...` naming the problem and the fix, exit code 2.
A reader that stops early (`fedrank plan --runs | head`) ends the command quietly.
"""

from __future__ import annotations

import argparse
import atexit
import gc
import importlib
import logging
import os
import signal
import sys

import bench
from bench.errors import Interrupted, UserError

# At exit the interpreter's last garbage collections walk every object torch made at import (about
# 0.35 s of every command that imports it): an ending process needs no collection. Finalisers of
# objects alive at exit were never guaranteed (Python's data model, object.__del__), and outputs
# are written and closed before a command returns.
atexit.register(gc.freeze)

SUBCOMMAND_MODULES = ("bench.commands.run", "bench.commands.new_method", "bench.commands.data", "bench.commands.report", "bench.commands.workflow", "bench.commands.tune")

EPILOG = """\
examples:
  fedrank run --set method=fedlsc --set method.tau=0.5 --set seed=2
  fedrank run --set data=ham10000 --set data.root=$FEDRANK_DATA_ROOT/ham10000_200x150 --out results/runs/mine
  fedrank methods                 # every method with its hyper-parameters and defaults
  fedrank models                  # every model with its options
  fedrank data describe msld --root $FEDRANK_DATA_ROOT/monkeypox_msld_v1    # a data card
  fedrank report --runs results/runs --out reports
  fedrank export --runs results/runs --out runs.parquet   # every run in one tidy table
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
    parser.add_argument("--version", action="version", version=f"fedrank {bench.__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in SUBCOMMAND_MODULES:
        importlib.import_module(name).add_parsers(sub)
    return parser


def log_level(args: argparse.Namespace) -> int:
    """-v: debug; a subcommand's --quiet: warnings and errors only; else progress messages."""
    if args.verbose:
        return logging.DEBUG
    return logging.WARNING if getattr(args, "quiet", False) else logging.INFO


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(format="%(asctime)s %(name)s %(levelname)s %(message)s", datefmt="%H:%M:%S")
    logging.getLogger().setLevel(log_level(args))  # also when called again in one process
    try:
        code = args.func(args)
        sys.stdout.flush()  # a reader gone away is seen here, not at interpreter exit
        return code
    except UserError as exc:
        print(f"fedrank: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("fedrank: interrupted", file=sys.stderr)
        return Interrupted.exit_code
    except BrokenPipeError:
        # The reader went away: point stdout at /dev/null so the interpreter's final flush
        # cannot fail again, and end as a process killed by SIGPIPE would.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 128 + signal.SIGPIPE
