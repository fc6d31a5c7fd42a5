"""`fedrank plan`, `fedrank status`: what a workflow config expands to, and how far it has run."""

from __future__ import annotations

import argparse
import json
import math
from collections import Counter
from pathlib import Path

STATUSES = ("completed", "diverged", "failed", "interrupted", "pending")


def load_plan(args: argparse.Namespace, reuse: bool = False, allow_missing: bool = False):
    """The checked config and its plan, expanded afresh (and stored for `status`), or with
    `reuse` the plan stored for exactly this config and code where there is one."""
    from bench.config import parse_config_json
    from bench.plan_cache import store_plan, stored_plan
    from bench.workflow import load_workflow_config, plan_workflow, prepare_workflow_config

    if args.config_json:
        config = prepare_workflow_config(parse_config_json(args.config_json))
    else:
        config = load_workflow_config(args.config)
    plan = stored_plan(config) if reuse else None
    if plan is None:
        plan = plan_workflow(config, allow_missing)
        store_plan(config, plan)
    plan.add_selected()  # tuned test runs whose selection exists (files that change without the config)
    return config, plan


def run_status(folder: Path) -> str:
    """completed / diverged / failed from run.json; interrupted (a checkpoint to resume); pending."""
    from bench.engine.paths import RunPaths

    paths = RunPaths(folder)
    record = paths.record
    if record.is_file():
        try:
            return json.loads(record.read_text()).get("status", "failed")
        except (OSError, json.JSONDecodeError):
            return "interrupted"
    return "interrupted" if paths.checkpoint.is_file() else "pending"


def cmd_plan(args: argparse.Namespace) -> int:
    import pandas as pd
    import yaml

    from bench.compute import gpu_hours, run_flops
    from bench.io import check_writable, write_csv, write_text

    config, plan = load_plan(args, allow_missing=not (args.config_of or args.write_manifest or args.write_stats))
    for key in ("results", "reports"):  # what the workflow will write: refused now, not by its first job
        check_writable(Path(config[key]), f"config key '{key}':", f"choose a folder you can write in for {key}")
    if args.config_of:
        if args.config_of not in plan.runs:
            from bench.errors import UserError

            raise UserError(f"--config-of '{args.config_of}': no such run in this config; list them with --runs")
        print(json.dumps(plan.runs[args.config_of].config, sort_keys=True))
        return 0
    if args.runs:
        for group in plan.groups.values():
            for rid, label in group.runs.items():
                print(f"{rid}  {group.path}  {label}")
        for key, pair in plan.pairs.items():
            for trial, runs in enumerate(pair.trial_runs):
                for rid in runs:
                    print(f"{rid}  tuning/{key}  {pair.label} (trial {trial})")
        return 0
    if args.write_manifest:
        write_csv(args.write_manifest, pd.DataFrame(plan.manifest(), columns=["study", "run_id"]))
    if args.write_stats:
        write_text(args.write_stats, yaml.safe_dump({"stats": config["stats"]}, sort_keys=False))  # a config with a `stats:` section
    estimate = not (args.write_manifest or args.write_stats)  # the workflow's manifest job needs no estimate
    hours, rate, source = gpu_hours(plan, args.gpu_tflops) if estimate else ({}, None, "")
    pending = pending_tests(plan)
    if estimate:
        hours.update({f"{key}@{seed}": run_flops(run.resolved) / (rate * 1e12) / 3600 for waiting in pending.values() for (key, seed), run in waiting.items()})
    width = max(16, *(len(study) + 1 for study in plan.studies))
    print(f"{'study':<{width}} {'runs':>7} {'groups':>7} {'GPU-hours' if estimate else '':>10}  datasets")
    for study, ids in plan.studies.items():
        groups = [g for g in plan.groups.values() if g.study == study]
        datasets = ", ".join(dict.fromkeys(g.dataset for g in groups))
        waiting = pending.get(study, {})
        count = f"{len(ids)}+{len(waiting)}" if waiting else f"{len(ids)}"
        study_hours = sum(hours[i] for i in ids) + sum(hours[f"{key}@{seed}"] for key, seed in waiting) if estimate else 0
        print(f"{study:<{width}} {count:>7} {len(groups):>7} {hours_text(study_hours) if estimate else '':>10}  {datasets}")
    if plan.pairs:
        trial_hours = f", {hours_text(sum(hours[i] for i in plan.trials))} GPU-hours" if estimate else ""
        print(f"tuning: {len(plan.pairs)} (setting, method) pairs x {len(next(iter(plan.pairs.values())).trials)} trials = {len(plan.trials)} distinct trial runs{trial_hours}; "
              f"+N: test runs that start once their pair's trials are selected (their estimate: the untuned configuration's)")
    distinct = len(plan.runs) - len(plan.trials) + sum(map(len, pending.values()))
    memberships = len(plan.manifest()) + sum(map(len, pending.values()))
    print(f"{distinct} distinct runs ({memberships - distinct} shared between studies){f' and {len(plan.trials)} trial runs' if plan.trials else ''} "
          f"under {config['results']}; reports under {config['reports']}")
    if estimate:
        total = sum(hours.values())
        known = "" if not math.isnan(total) else f"at least {sum(h for h in hours.values() if not math.isnan(h)):.1f} (runs on a dataset of unknown size counted 0)"
        print(f"GPU-hours: about {known or hours_text(total)} for the distinct runs on one GPU at {rate:.1f} TFLOP/s sustained ({source}); "
              "the work is each model's FLOPs per image (torch's FLOP counter) x 3 for training x rounds x local epochs x images, "
              "plus evaluation (bench/compute.py); a dataset not on this machine counts its published size (fedrank datasets)")
    if plan.missing:
        print(f"\nMissing inputs: snakemake will not start until each exists ({len(plan.missing)}):")
        print("\n".join(f"  [ ] {message}" for message in plan.missing.values()))
    return 0


def hours_text(hours: float) -> str:
    """'12.3', or '?' where a dataset is neither on this machine nor of a published size."""
    return "?" if math.isnan(hours) else f"{hours:.1f}"


def pending_tests(plan) -> dict[str, dict[tuple[str, int], object]]:
    """Per tuned study, its test runs still waiting for a selection: (pair, seed) -> the untuned
    configuration's run at that seed, which stands in for its cost."""
    pending: dict[str, dict[tuple[str, int], object]] = {}
    for key, pair in plan.pairs.items():
        if not Path(plan.selection_file(key)).is_file():
            for seed in pair.test_seeds:
                pending.setdefault(pair.study, {})[(key, seed)] = pair.variant.run({}, seed)
    return pending


def cmd_status(args: argparse.Namespace) -> int:
    config, plan = load_plan(args, reuse=True)
    results = Path(config["results"])
    status = {rid: run_status(results / rid) for rid in plan.runs}
    if args.failed:
        for rid, state in status.items():
            if state == "failed":
                print(Path(plan.record(rid)))
        return 0
    waiting = {study: len(runs) for study, runs in pending_tests(plan).items()}  # test runs of tuned pairs not yet selected
    width = max(16, *(len(study) + 1 for study in plan.studies))
    print(f"{'study':<{width}} " + " ".join(f"{s:>11}" for s in STATUSES))
    rows = [*plan.studies.items(), *([("(trials)", list(plan.trials))] if plan.trials else []), ("(distinct)", list(plan.runs))]
    for study, ids in rows:
        counts = Counter(status[rid] for rid in ids)
        counts["pending"] += waiting.get(study, 0) + (sum(waiting.values()) if study == "(distinct)" else 0)
        print(f"{study:<{width}} " + " ".join(f"{counts[s]:>11}" for s in STATUSES))
    return 0


def add_config_arguments(parser: argparse.ArgumentParser) -> None:
    source = parser.add_mutually_exclusive_group()
    source.add_argument("config", nargs="?", default="configs/default.yaml", help="workflow config YAML (default: %(default)s)")
    source.add_argument("--config-json", metavar="JSON", help="the workflow config as one JSON object (what the Snakefile passes)")


def add_parsers(sub: argparse._SubParsersAction) -> None:
    plan = sub.add_parser(
        "plan",
        help="expand a workflow config: studies, runs, report groups, GPU-hours",
        description="Check a workflow config and expand its studies into runs, exactly as `snakemake` does at DAG-build time, "
                    "and estimate the GPU-hours they need (each run's FLOPs from its model, image size, data set size, rounds and "
                    "local epochs, at a sustained FLOP rate: see --gpu-tflops).",
    )
    add_config_arguments(plan)
    plan.add_argument("--runs", action="store_true", help="list every run: run id, report group (tuning/<pair> for a tuning trial), method variant")
    plan.add_argument("--config-of", metavar="RUN_ID",
                      help='print the config a run\'s job gets; run it by hand with fedrank run --config-json "$(fedrank plan CONFIG --config-of RUN_ID)"')
    plan.add_argument("--write-manifest", metavar="CSV", help="write the study manifest (columns study,run_id; one row per membership)")
    plan.add_argument("--write-stats", metavar="YAML", help="write the config's `stats` settings for the statistics stage")
    plan.add_argument("--gpu-tflops", type=float, metavar="T",
                      help="sustained TFLOP/s of your GPU for the GPU-hours estimate (default: measured from the plan's finished GPU runs, "
                           "else an assumed A100-class rate)")
    plan.set_defaults(func=cmd_plan)

    status = sub.add_parser(
        "status",
        help="how far a workflow config has run: run statuses per study",
        description=(
            "Count the runs of each study by status: completed, diverged, failed (recorded after the last "
            "attempt), interrupted (a checkpoint to resume from) and pending. To retry failed runs: "
            "snakemake --cores all --configfile CONFIG --forcerun $(fedrank status CONFIG --failed). "
            "The expanded plan is remembered (under $FEDRANK_CACHE_DIR, default ~/.cache/fedrank) for exactly this "
            "config, the variables it names and this code, so a second status takes about a second."
        ),
    )
    add_config_arguments(status)
    status.add_argument("--failed", action="store_true", help="print the run.json path of every failed run (targets for --forcerun)")
    status.set_defaults(func=cmd_status)
