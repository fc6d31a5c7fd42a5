"""Aggregation speed: 10,080 runs x 50 rounds of results into the tidy table, every statistic,
every table and the ranking (target: 15 s on 2 CPU cores), and the refresh of that study after
one method's 1,440 runs are added to it (target: 5 s).

    python benchmarks/bench_stats.py [--root /tmp/fedrank_bench_stats] [--workers 2] [--figures] [--refresh]

The runs are synthetic but in the exact run-directory format the engine writes (run.json,
metrics.parquet with global, personal, local, train and comm rows per client and round,
diagnostics.parquet with FedLSC's per-layer records): 4 datasets x 5 betas x 4 client counts x
3 local-epoch settings x the paper's 7 methods x 6 seeds, 1% diverged and 1% failed. They are
generated once under --root (minutes) and reused. The timed part is what `fedrank report`
does minus the figures: collecting the folder, computing the statistics, writing the tidy
Parquet table, the statistics and all tables (the Parquet files in a background thread, as the
report does); --figures also times the figures (not in the target: their number grows with the
settings). --refresh then times the incremental refresh: the study's per-run summaries cache
(bench.stats.run_cache) is built without FedProx-FC's runs (untimed, as a finished study's
report), then the report of all runs is timed, reading only FedProx-FC's runs. Timings vary with
other load on the machine: the script prints each step.
"""

from __future__ import annotations

import argparse
import logging
import shutil
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import pyarrow.parquet as pq

GRID = {
    "data.name": ["ham10000", "isic2019", "msid", "modd"],
    "partition.beta": [0.1, 0.3, 0.5, 1.0, 5.0],
    "partition.clients": [3, 5, 8, 10],
    "train.local_epochs": [1, 2, 5],
    "train.rounds": [50],
    "seed": list(range(6)),
}
TARGET_SECONDS = 15.0
REFRESH_TARGET_SECONDS = 5.0
ADDED_METHOD = "fedprox_fc"  # the method whose runs the refresh adds


def generate_part(root: str, datasets: list[str]) -> int:
    from bench.stats.synthetic import PAPER_GRID_METHODS, write_study

    return len(write_study(Path(root), {**GRID, "data.name": datasets, "method": PAPER_GRID_METHODS}, diverged=0.01, failed=0.01))


def generate(root: Path, workers: int) -> None:
    """Write the runs once (one worker per dataset share); reuse them on later calls."""
    marker = root / "COMPLETE"
    if marker.exists():
        return
    print(f"generating synthetic runs under {root} (once; a few minutes) ...", flush=True)
    tic = time.perf_counter()
    shares = [GRID["data.name"][i::workers] for i in range(workers)]
    with ProcessPoolExecutor(workers) as pool:
        written = sum(pool.map(generate_part, [str(root / "runs")] * workers, shares))
    marker.write_text(f"{written}\n")
    print(f"  {written} runs in {time.perf_counter() - tic:.0f} s")


def timed(label: str, timings: dict, fn, *args):
    tic = time.perf_counter()
    out = fn(*args)
    timings[label] = time.perf_counter() - tic
    print(f"  {label:<38} {timings[label]:7.2f} s", flush=True)
    return out


def report(label: str, timings: dict, source, settings: dict, out: Path, cache: Path | None = None):
    """Collect, analyse and write the stats and tables as `fedrank report` does; each step timed."""
    from bench.stats.analysis import analyse
    from bench.stats.collect import load_results
    from bench.stats.report import write_outputs

    results = timed(f"{label}collect run directories", timings, load_results, source, settings, None, False, cache)
    analysis = timed(f"{label}statistics and ranking", timings, analyse, results, settings)
    for step, seconds in analysis.timings.items():
        print(f"    {step:<36} {seconds:7.2f} s")
    written = timed(f"{label}write tidy table, statistics, tables", timings, write_outputs, analysis, out, ("stats", "tables"), False)
    return results, analysis, written


def refresh(root: Path, settings: dict) -> float:
    """Seconds to refresh the report after ADDED_METHOD's runs join the study (see the doc)."""
    paths = sorted((root / "runs").glob("*/run.json"))
    before = [p for p in paths if f"-{ADDED_METHOD}-s" not in p.parent.name]
    out = root / "refresh"
    shutil.rmtree(out, ignore_errors=True)
    print(f"refresh: the study's report without {ADDED_METHOD} ({len(before)} runs), its cache built (untimed) ...", flush=True)
    warm: dict[str, float] = {}
    report("before: ", warm, before, settings, out, out / "cache")
    timings: dict[str, float] = {}
    report("refresh: ", timings, paths, settings, out, out / "cache")
    total = sum(timings.values())
    print(f"REFRESH after adding {len(paths) - len(before)} runs of {ADDED_METHOD} to {len(before)}: {total:.1f} s "
          f"(cold build with the cache written: {sum(warm.values()):.1f} s; target < {REFRESH_TARGET_SECONDS:.0f} s: "
          f"{'met' if total < REFRESH_TARGET_SECONDS else 'NOT met'})")
    return total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", default="/tmp/fedrank_bench_stats", help="where the synthetic runs live (default: %(default)s)")
    parser.add_argument("--workers", type=int, default=2, help="processes generating runs (default: %(default)s)")
    parser.add_argument("--figures", action="store_true", help="also time all figures (not part of the target)")
    parser.add_argument("--refresh", action="store_true", help="also time the incremental refresh after adding one method's runs")
    args = parser.parse_args()
    root = Path(args.root)
    generate(root, args.workers)
    logging.basicConfig(level=logging.WARNING)

    tic = time.perf_counter()
    import bench.stats.analysis  # noqa: F401 (timed as imports, not as the first step)
    import bench.stats.collect  # noqa: F401
    from bench.stats.report import write_outputs
    from bench.stats.settings import resolve_stats

    timings = {"imports": time.perf_counter() - tic}
    print(f"  {'imports (torch, pandas, scipy, ...)':<38} {timings['imports']:7.2f} s")
    out = root / "report"
    shutil.rmtree(out, ignore_errors=True)  # a full build: none of the tidy table's files kept from a last call
    settings = resolve_stats({})
    results, analysis, written = report("", timings, root / "runs", settings, out)
    total = sum(seconds for step, seconds in timings.items() if step != "imports")
    runs = results.runs["run_id"].nunique()
    rows = len(results.metrics)
    tidy_rows = sum(pq.read_metadata(path).num_rows for path in (out / "results.parquet").rglob("*.parquet"))
    print(f"{runs} runs, {rows:,} evaluation rows ({tidy_rows:,} in results.parquet), {results.runs[['study', 'setting']].drop_duplicates().shape[0]} settings, "
          f"{len(results.methods)} methods, {len(written['tables']) // 3} tables")
    print(f"TOTAL aggregation into all tables and the ranking: {total:.1f} s without imports, {total + timings['imports']:.1f} s with "
          f"(target < {TARGET_SECONDS:.0f} s: {'met' if total < TARGET_SECONDS else 'NOT met'})")
    if args.figures:
        paths = timed("all figures (PNG + PDF)", timings, write_outputs, analysis, out, ("figures",), False)["figures"]
        print(f"  {len(paths)} figure files")
    if args.refresh:
        refresh(root, settings)


if __name__ == "__main__":
    main()
