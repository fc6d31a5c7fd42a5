"""`fedrank select`: score a tuned pair's trials on validation data and write its selection;
`fedrank tuning`: what tuning did, as tables and figures."""

from __future__ import annotations

import argparse
import logging

log = logging.getLogger("fedrank")


def cmd_select(args: argparse.Namespace) -> int:
    from bench.config import parse_config_json
    from bench.io import write_json
    from bench.stats.settings import resolve_stats
    from bench.tuning import select

    selection = select(parse_config_json(args.spec_json), resolve_stats(parse_config_json(args.stats_json)))
    write_json(args.out, selection)
    chosen = selection["selected"]
    failed = sum(t["score"] is None for t in selection["trials"])
    if selection["all_failed"]:
        log.warning("%s: every trial failed; the untuned configuration (trial 0) is kept", selection["key"])
    shown = ", ".join(f"{k}={v}" for k, v in chosen["values"].items()) or "the defaults"
    score = "no score" if chosen["score"] is None else f"validation {selection['metric']} {chosen['score']:.4f}"
    print(f"{selection['key']}: trial {chosen['trial']} of {len(selection['trials'])} ({shown}; {score}; {failed} failed) -> {args.out}")
    return 0


def cmd_tuning(args: argparse.Namespace) -> int:
    from pathlib import Path

    from bench.commands.workflow import load_plan
    from bench.io import output_folder
    from bench.stats.settings import resolve_stats
    from bench.stats.tuning import build, write_report

    config, plan = load_plan(args)
    settings = resolve_stats(config["stats"])
    with output_folder(args.out) as out:
        written = write_report(build(plan, settings), Path(out), settings)
    print(f"{len(written)} files written under {args.out} (start with {Path(args.out) / 'summary.md'})")
    return 0


def add_parsers(sub: argparse._SubParsersAction) -> None:
    from bench.commands.workflow import add_config_arguments

    select = sub.add_parser(
        "select",
        help="score a tuned pair's trials on validation data and write the selected configuration (the workflow's select job)",
        description="Score every trial of one tuned (setting, method) pair on validation data only (stats.selection's best_val rule, "
                    "the mean over the tuning seeds; a diverged or failed trial scores as a failure) and write the selection: every "
                    "trial's score and the chosen one (the best; the earliest among equals). The workflow runs it; see bench/tuning.py.",
    )
    select.add_argument("--spec-json", required=True, metavar="JSON", help="the pair: its trials, their values and run ids, the results folder")
    select.add_argument("--stats-json", default="{}", metavar="JSON", help="the statistics settings (selection_metric, selection_after, ...)")
    select.add_argument("--out", required=True, metavar="JSON", help="where the selection is written (atomically)")
    select.set_defaults(func=cmd_select)

    tuning = sub.add_parser(
        "tuning",
        help="what tuning did: selected values, tuning curves, sensitivity, tuned against untuned leaderboards",
        description="Read a workflow config's tuned studies (their selections and test runs) and write summary.md, tables/ "
                    "(selected, tuned_vs_untuned with Kendall's tau and each method's tuning gain) and figures/ (tuning curves, "
                    "sensitivity) under --out. The workflow runs it into <reports>/tuning/summary.",
    )
    add_config_arguments(tuning)
    tuning.add_argument("--out", required=True, metavar="DIR", help="output folder")
    tuning.set_defaults(func=cmd_tuning)
