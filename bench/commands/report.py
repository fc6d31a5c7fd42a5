"""`fedrank report | stats | tables | plots | rank`: statistics, tables and figures of any
results folder (or list of run.json files), inside or outside Snakemake; `fedrank export`: its
runs as one tidy table."""

from __future__ import annotations

import argparse
import textwrap
from pathlib import Path

from bench.errors import UserError

COMMANDS = {
    "report": (("stats", "tables", "figures", "report"), "everything: tidy table, statistics, tables, figures, results.md/csv, convergence.png"),
    "stats": (("stats",), "the tidy results table (results.parquet) and every statistic (stats/*.parquet)"),
    "tables": (("tables",), "the paper's tables and the leaderboard as CSV, Markdown and LaTeX (tables/)"),
    "plots": (("figures",), "every figure as PNG and PDF (figures/)"),
    "rank": (("rank",), "rank all methods: leaderboard (printed and in tables/), pairwise tests, CD diagram"),
}

DESCRIPTION = """\
{summary}.

Reads run directories (run.json + metrics.parquet, any status; folders without a readable
run.json are reported and skipped) from --runs, or the run.json files given as arguments.
A setting is a study plus the config fields that vary between runs (dataset, beta, clients,
local epochs, ...); a method variant (e.g. FedLSC per=0 vs per=0.01, or a tau sweep) is its
own treatment; comparisons are paired by seed within a setting.

Outputs under --out: results.parquet, stats/, tables/, figures/, results.md, results.csv,
convergence.png, report.json (what was read, skipped and written). Statistics settings
(metric, targets, references, alpha, bootstrap, paper names, sweeps) and their defaults:
bench/schemas/stats.schema.yaml; pass them with --stats-config and/or --set."""

EXAMPLES = """\
examples:
  fedrank report --runs results/runs --out reports
  fedrank report --out reports results/runs/*/run.json
  fedrank rank --runs results/runs --set metric=balanced_accuracy
  fedrank tables --stats-config configs/study.yaml --studies results/studies.csv
  fedrank plots --set targets.ham10000.value=0.8 --set figures.formats=[png]
"""


def run_source(args: argparse.Namespace) -> Path | list[Path]:
    """The run.json files named, a run folder's or a results folder's (a folder is what people
    pass), else the --runs folder; a path that does not exist is one line naming it."""
    if not args.records:
        return Path(args.runs)
    files = []
    for given in map(Path, args.records):
        if given.is_dir():
            files += [given / "run.json"] if (given / "run.json").is_file() else sorted(given.glob("*/run.json"))
        elif given.is_file():
            files.append(given)
        else:
            raise UserError(f"{given} does not exist; name run.json files or run folders, or pass --runs DIR (default results/runs)")
    return files


def cmd(args: argparse.Namespace) -> int:
    from bench.io import output_folder
    from bench.stats.report import produce
    from bench.stats.settings import load_stats_settings

    settings = load_stats_settings(args.stats_config, args.set)
    with output_folder(args.out) as out:
        written = produce(run_source(args), out, settings, Path(args.studies) if args.studies else None, COMMANDS[args.command][0], progress=not args.quiet)
    if not args.quiet:
        count = sum(len(paths) for paths in written.values())
        print(f"{count} files written under {args.out} (list: {Path(args.out) / 'report.json'})")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from bench.io import output_folder, write_csv
    from bench.stats.collect import load_results
    from bench.stats.settings import load_stats_settings
    from bench.stats.tidy import tidy_frame, write_tidy

    out = Path(args.out)
    if out.suffix not in (".parquet", ".csv"):
        raise UserError(f"--out {out}: name a .parquet or a .csv file")
    with output_folder(out.parent):
        results = load_results(run_source(args), load_stats_settings(args.stats_config, args.set), Path(args.studies) if args.studies else None, not args.quiet)
        if out.suffix == ".csv":
            write_csv(out, tidy_frame(results))
        else:
            write_tidy(out, results)
    if not args.quiet:
        print(f"{results.runs['run_id'].nunique()} runs -> {out}")
    return 0


def add_source_arguments(parser: argparse.ArgumentParser) -> None:
    """Which runs to read (and how to name them), shared by the report commands and export."""
    parser.add_argument("records", nargs="*", help="run.json files to include (default: every run under --runs)")
    parser.add_argument("--runs", default="results/runs", help="folder of run directories (default: %(default)s)")
    parser.add_argument("--studies", metavar="CSV", help="study manifest with columns study,run_id (default: every run in one study 'all')")
    parser.add_argument("--stats-config", metavar="YAML", help="statistics settings: the mapping itself or a config with a `stats:` section")
    parser.add_argument("--set", "-s", action="append", default=[], metavar="KEY=VALUE",
                        help="override a statistics setting, value parsed as YAML; repeatable (e.g. --set metric=f1 --set last_k=5)")
    parser.add_argument("--quiet", "-q", action="store_true", help="no progress bars or progress messages: warnings and errors only")


def add_parsers(sub: argparse._SubParsersAction) -> None:
    for name, (_, summary) in COMMANDS.items():
        parser = sub.add_parser(name, help=summary, description=DESCRIPTION.format(summary=summary[0].upper() + summary[1:]),
                                epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
        add_source_arguments(parser)
        parser.add_argument("--out", default="reports", help="output folder (default: %(default)s)")
        parser.set_defaults(func=cmd)

    export = sub.add_parser(
        "export", help="every run of a folder in one tidy table (Parquet or CSV)",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=textwrap.dedent("""\
            Write every run of a results folder (any status) as one tidy table: one row per run x round x
            scope of the global model and the client means, a column per metric and per config field; the
            rows and columns of results.parquet, described in README, section "Data dictionary" (and in the
            Parquet file's field metadata). In Python: from bench.stats.tidy import load_runs; load_runs("results/runs")."""),
        epilog=textwrap.dedent("""\
            examples:
              fedrank export --runs results/runs --out runs.parquet
              fedrank export --out ham.csv results/runs/ham10000-*/run.json"""),
    )
    add_source_arguments(export)
    export.add_argument("--out", default="runs.parquet", help="the table to write: .parquet or .csv (default: %(default)s)")
    export.set_defaults(func=cmd_export)
