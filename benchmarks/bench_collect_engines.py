"""Which engine scans a results folder's metrics files fastest: pyarrow.dataset (what
bench.stats.collect uses) against DuckDB and Polars, on the collection step of bench_stats.py.

    python benchmarks/bench_collect_engines.py [--root /tmp/fedrank_bench_stats] [--repeat 3]

Each engine reads every run's metrics.parquet and keeps what collection keeps: the evaluation
rows (client is null) and the per-client rows of the fairness / best_val scopes and metrics
(bench.stats.collect.read_measurements), each row with its file. The engines take turns within
each repeat (interleaved, so they see the same load); the rows' count and value sum must agree.
DuckDB and Polars are not fedrank dependencies: install them to run this (`pip install duckdb polars`).
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

from bench.stats.collect import CLIENT_SCOPES, client_metrics, read_measurements
from bench.stats.settings import resolve_stats


def with_pyarrow(folders: list[str], metrics: list[str]) -> tuple[int, float]:
    evaluation, clients, _ = read_measurements(folders, metrics)
    return evaluation.num_rows + clients.num_rows, sum(t["value"].to_numpy().sum() for t in (evaluation, clients))


def wanted_sql(metrics: list[str]) -> str:
    listed = lambda values: ", ".join(f"'{v}'" for v in values)  # noqa: E731 (fixed names, no user input)
    return f"client IS NULL OR (scope IN ({listed(CLIENT_SCOPES)}) AND metric IN ({listed(metrics)}))"


def with_duckdb(folders: list[str], metrics: list[str]) -> tuple[int, float]:
    import duckdb

    files = [str(Path(f) / "metrics.parquet") for f in folders]
    connection = duckdb.connect()
    connection.execute("SET threads TO 2")
    table = connection.execute(f"SELECT filename, round, scope, client, metric, value FROM read_parquet(?, filename = true) WHERE {wanted_sql(metrics)}",
                               [files]).to_arrow_table()
    return table.num_rows, float(table["value"].to_numpy().sum())


def with_polars(folders: list[str], metrics: list[str]) -> tuple[int, float]:
    import polars as pl

    files = [str(Path(f) / "metrics.parquet") for f in folders]
    wanted = pl.col("client").is_null() | (pl.col("scope").is_in(list(CLIENT_SCOPES)) & pl.col("metric").is_in(metrics))
    frame = pl.scan_parquet(files, include_file_paths="file").select("file", "round", "scope", "client", "metric", "value").filter(wanted).collect()
    return frame.height, float(frame["value"].sum())


ENGINES = {"pyarrow.dataset": with_pyarrow, "duckdb": with_duckdb, "polars": with_polars}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", default="/tmp/fedrank_bench_stats", help="a bench_stats.py folder (default: %(default)s)")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    folders = sorted(str(p) for p in (Path(args.root) / "runs").iterdir() if (p / "metrics.parquet").is_file())
    metrics = client_metrics(resolve_stats({}))
    seconds, answers = {name: [] for name in ENGINES}, {}
    for _ in range(args.repeat):
        for name, engine in ENGINES.items():
            tic = time.perf_counter()
            answers[name] = engine(folders, metrics)
            seconds[name].append(time.perf_counter() - tic)
    rows, total = answers["pyarrow.dataset"]
    print(f"{len(folders)} metrics files, {rows:,} rows kept; median of {args.repeat} interleaved repeats:")
    for name, times in seconds.items():
        agree = answers[name][0] == rows and abs(answers[name][1] - total) <= 1e-9 * abs(total)
        print(f"  {name:<16} {statistics.median(times):7.2f} s  ({' '.join(f'{t:.2f}' for t in times)}){'' if agree else '  ROWS DIFFER'}")


if __name__ == "__main__":
    main()
