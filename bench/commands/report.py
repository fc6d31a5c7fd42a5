"""`fedrank report`: the results table and convergence plot of a set of runs."""

from __future__ import annotations

import argparse
from pathlib import Path


def cmd_report(args: argparse.Namespace) -> int:
    from bench.report import write_demo_report

    for path in write_demo_report([Path(p) for p in args.records] or Path(args.runs), Path(args.out)):
        print(path)
    return 0


def add_parsers(sub: argparse._SubParsersAction) -> None:
    report = sub.add_parser("report", help="results table and convergence plot from a folder of runs")
    report.add_argument("records", nargs="*", help="run.json files to include (default: every run under --runs)")
    report.add_argument("--runs", default="results/runs", help="folder of run directories (default: %(default)s)")
    report.add_argument("--out", default="reports", help="output folder (default: %(default)s)")
    report.set_defaults(func=cmd_report)
