"""The tidy results table: one row per study x run x round x scope, one column per metric, every
config field a column.

Rows are the global model's evaluations and the means over clients of every evaluated scope, plus
the communication of each round (scope comm); per-client rows stay in each run's metrics.parquet.
A metric is a column (accuracy, auroc, ..., recall/<class>, bytes): a row holds everything measured
of one model on one scope in one round, 17x fewer rows than one per metric at 10,080 runs, and per-class metrics
are read as columns, not filtered out of rows. Every run is present whatever its status; a run
without any evaluation (failed at once) keeps one row with empty measurements.

A report writes it as a folder, one Parquet file per study x dataset x method, read as one table
by `pd.read_parquet("reports/results.parquet")` (or pyarrow.dataset, DuckDB, Polars over its files):

    results.parquet/<study>/<dataset>/<method>-<key>.parquet
    results.parquet/_manifest.json      the files and rows, written last

The key hashes what the file holds (its runs' fields and metrics files' SHA-256, the columns and
their types, the code), so a refresh writes only the files of runs that changed and keeps the
others (the layout of a Hive-partitioned dataset; Delta Lake and Iceberg likewise never rewrite
an unchanged file). Run-level columns are dictionary columns: a file is barely larger than its
measurements.
"""

from __future__ import annotations

import hashlib
import json
import re
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from bench.dictionary import described
from bench.io import atomic_path, write_json
from bench.stats.collect import Results

KIND = "results.parquet"  # its entry in the data dictionary
FORMAT = 2  # of the table: a new one rewrites every file of a folder written by an older one
RUN_COLUMNS = ["study", "run_id", "status", "error", "seed", "method", "label", "setting", "headline_scope", "rounds_completed", "diverged_round"]
HIDDEN = {"folder", "config_keys", "treatment_keys", "method_config", "classes", "class_counts", "setting_order", "method_order", "block", "metrics_sha256"}
PARTITION = ("study", "data.name", "method.name")  # one file of the folder per combination
# Written last, so a folder without it is incomplete (Spark's _SUCCESS marker; readers skip names
# starting with "_"): the workflow's output, so Snakemake deletes only it before a report, not the files.
MANIFEST = "_manifest.json"
# Min/max statistics (for filters pushed down by readers) only where queries filter: they
# double the writing time when kept for every column.
STATISTICS = ("study", "status", "method", "label", "setting", "data.name", "seed", "round", "scope")


def run_level_columns(runs: pd.DataFrame) -> list[str]:
    """Run fields first, then every flattened config field, then the rest of the run record."""
    config = sorted(c for c in runs.columns if "." in c)
    rest = [c for c in runs.columns if c not in RUN_COLUMNS and c not in config and c not in HIDDEN]
    return [c for c in RUN_COLUMNS if c in runs.columns] + config + rest


def dictionary_column(values: pd.Series) -> tuple[np.ndarray, pa.Array]:
    """(code per row, arrow dictionary) of a column; -1 = missing; mixed types become text."""
    if isinstance(values.dtype, pd.CategoricalDtype):
        codes, uniques = values.cat.codes.to_numpy(), values.cat.categories
    else:
        codes, uniques = pd.factorize(values, use_na_sentinel=True)
    try:
        dictionary = pa.array(np.asarray(uniques), from_pandas=True)
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        dictionary = pa.array([str(v) for v in uniques])
    return codes.astype(np.int32), dictionary


def dictionary_array(codes: np.ndarray, dictionary: pa.Array) -> pa.DictionaryArray:
    """Codes (-1 = null) into the dictionary, as an Arrow dictionary column."""
    missing = codes < 0
    return pa.DictionaryArray.from_arrays(pa.array(codes, mask=missing) if missing.any() else pa.array(codes), dictionary)


def gather(values: np.ndarray, rows: np.ndarray, fill) -> np.ndarray:
    """values[rows], with `fill` where rows is -1 (a run without measurements)."""
    out = np.full(len(rows), fill, dtype=values.dtype)
    present = rows >= 0
    out[present] = values[rows[present]]
    return out


@dataclass
class Measurements:
    """The evaluation rows of some runs pivoted: one row per run x round x scope, sorted so, and
    per metric a row of `values` and one of `present` (a metric a scope does not measure is
    empty, not NaN: a measured NaN stays NaN)."""

    run: np.ndarray  # the run's code in the metrics' run_id categories
    round: np.ndarray
    scope: np.ndarray  # code in the metrics' scope categories
    values: np.ndarray  # metric x row
    present: np.ndarray

    def rows_of(self, runs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(row numbers, rows per run) of runs given by code, in that order; a run without
        measurements gets one row numbered -1."""
        first, end = np.searchsorted(self.run, runs), np.searchsorted(self.run, runs + 1)
        sizes = np.maximum(end - first, 1)
        rows = np.repeat(first - (np.cumsum(sizes) - sizes), sizes) + np.arange(sizes.sum())
        rows[np.repeat(end == first, sizes)] = -1
        return rows, sizes


def pivot(metrics: pd.DataFrame, names: list[str], runs: np.ndarray | None = None) -> Measurements:
    """The evaluation rows (of the runs coded `runs`, or all) as Measurements with a row per
    metric of `names`; two values of one metric in one cell are an error, not a silent choice.
    A run's rows come from its file in order, so each run x round x scope is one block of rows:
    the blocks are found where the key changes and only they are sorted, and each value goes
    straight to its place (reordering 28.7 million rows took about 2 s per column here, most of
    it memory traffic). Rows in another order are sorted first."""
    run_ids, scopes = metrics["run_id"].cat, metrics["scope"].cat
    run = run_ids.codes.to_numpy()
    if runs is not None and len(runs) < len(run_ids.categories):
        wanted = np.zeros(len(run_ids.categories), bool)
        wanted[runs] = True
        rows = np.flatnonzero(wanted[run])
    else:
        rows = slice(None)
    rounds, value = metrics["round"].to_numpy()[rows], metrics["value"].to_numpy()[rows]
    metric = pd.Index(names).get_indexer(metrics["metric"].cat.categories)[metrics["metric"].cat.codes.to_numpy()[rows]]
    span_round, span_scope = int(rounds.max(initial=0)) + 1, max(len(scopes.categories), 1)
    row_key = (run[rows].astype(np.int64) * span_round + rounds) * span_scope + scopes.codes.to_numpy()[rows]
    starts, order, key = blocks(row_key)
    if (key[1:] == key[:-1]).any():  # a block split in two: sort the rows
        by_key = np.argsort(row_key, kind="stable")
        row_key, metric, value = row_key[by_key], metric[by_key], value[by_key]
        starts, order, key = blocks(row_key)
    rank = np.empty(len(key), np.int64)
    rank[order] = np.arange(len(key))
    flat = metric * len(key) + np.repeat(rank, np.diff(np.r_[starts, len(row_key)]))
    values, present = np.full(len(names) * len(key), np.nan), np.zeros(len(names) * len(key), bool)
    values[flat] = value
    present[flat] = True
    if present.sum() < len(flat):  # two rows wrote one cell
        cell = np.sort(flat)
        twice = cell[np.flatnonzero(cell[1:] == cell[:-1])[0]]
        where = key[twice % len(key)]
        raise ValueError(f"run {run_ids.categories[where // span_scope // span_round]} has two values of {names[twice // len(key)]} "
                         f"({scopes.categories[where % span_scope]}, round {where // span_scope % span_round}) in its evaluation rows")
    return Measurements(key // span_scope // span_round, (key // span_scope % span_round).astype(np.int32), key % span_scope,
                        values.reshape(len(names), len(key)), present.reshape(len(names), len(key)))


def blocks(row_key: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(first row of each block of equal keys, the order that sorts the blocks, their keys sorted)."""
    starts = np.r_[0, np.flatnonzero(row_key[1:] != row_key[:-1]) + 1] if len(row_key) else np.zeros(0, np.int64)
    order = np.argsort(row_key[starts], kind="stable")
    return starts, order, row_key[starts][order]


def no_measurements(names: list[str]) -> Measurements:
    return Measurements(np.zeros(0, np.int64), np.zeros(0, np.int32), np.zeros(0, np.int64), np.zeros((len(names), 0)), np.zeros((len(names), 0), bool))


class Layout:
    """What the tidy table of a set of results holds: its columns and their types, and per file
    of the folder its runs-table rows and key."""

    def __init__(self, results: Results):
        runs, metrics = results.runs, results.metrics
        self.results = results
        self.run_columns = {c: dictionary_column(runs[c]) for c in run_level_columns(runs)}
        used = np.bincount(metrics["metric"].cat.codes.to_numpy(), minlength=len(metrics["metric"].cat.categories)) > 0
        self.metric_names = sorted(metrics["metric"].cat.categories[used].astype(str))
        clash = set(self.metric_names) & (set(self.run_columns) | {"round", "scope"})
        if clash:
            raise ValueError(f"metric(s) {', '.join(sorted(clash))} would share a column name with a run field in {KIND}")
        self.scope_dictionary = pa.array(np.asarray(metrics["scope"].cat.categories, dtype=object), pa.string())
        self.run_code = pd.Index(metrics["run_id"].cat.categories).get_indexer(runs["run_id"])
        self.schema = self.table(np.zeros(0, np.int64), no_measurements(self.metric_names)).schema

    def table(self, members: np.ndarray, measured: Measurements) -> pa.Table:
        """The rows of the runs-table rows `members`, every field described."""
        rows, sizes = measured.rows_of(self.run_code[members])
        arrays = {c: dictionary_array(np.repeat(codes[members], sizes), dictionary) for c, (codes, dictionary) in self.run_columns.items()}
        arrays["round"] = pa.array(gather(measured.round, rows, 0), mask=rows < 0)
        arrays["scope"] = dictionary_array(gather(measured.scope.astype(np.int32), rows, -1), self.scope_dictionary)
        for i, name in enumerate(self.metric_names):
            arrays[name] = pa.array(gather(measured.values[i], rows, np.nan), mask=~gather(measured.present[i], rows, False))
        return described(pa.table(arrays), KIND)

    def partitions(self) -> dict[Path, np.ndarray]:
        """File path (relative, without key) -> its runs-table rows, in runs-table order."""
        runs = self.results.runs
        parts = [runs[c].astype(str) if c in runs.columns else pd.Series("none", index=runs.index) for c in PARTITION]
        frame = pd.DataFrame({c: part.to_numpy() for c, part in zip(PARTITION, parts)})
        return {Path(*(safe_name(v) for v in key)): np.asarray(rows, np.int64)
                for key, rows in frame.groupby(list(PARTITION), sort=True, observed=True).indices.items()}

    def keys(self, partitions: dict[Path, np.ndarray]) -> dict[Path, str]:
        """Per file the hash of what it holds: the code, the columns, each run's fields, metrics
        SHA-256 and number of evaluation rows (a run whose metrics stopped verifying has none)."""
        from bench.plan_cache import code_fingerprint

        runs = self.results.runs
        fields = pd.util.hash_pandas_object(runs[list(self.run_columns)], index=False).to_numpy()
        run_ids = self.results.metrics["run_id"].cat
        counts = np.bincount(run_ids.codes.to_numpy(), minlength=len(run_ids.categories))
        shas = runs["metrics_sha256"] if "metrics_sha256" in runs.columns else pd.Series(None, index=runs.index)
        salt = json.dumps([FORMAT, code_fingerprint(), str(self.schema)]).encode()
        out = {}
        for path, members in partitions.items():
            digest = hashlib.sha256(salt + str(path).encode())
            digest.update(fields[members].tobytes())
            digest.update(counts[self.run_code[members]].tobytes())
            # a run whose record holds no SHA-256 of its metrics (an older fedrank) is rewritten every time
            digest.update(json.dumps([sha if isinstance(sha, str) else secrets.token_hex(8) for sha in shas.iloc[members]]).encode())
            out[path] = digest.hexdigest()[:16]
        return out


def safe_name(text: str) -> str:
    """A study, dataset or method name as one path component."""
    return re.sub(r"[^A-Za-z0-9._=+-]+", "_", text).lstrip(".") or "_"


def write_tidy_folder(folder: Path, results: Results) -> tuple[list[Path], int]:
    """Write the tidy table as a folder of Parquet files (each atomically), writing only files
    whose key is new; every other file in the folder is removed, so the folder reads as exactly
    this table; then MANIFEST, last. Returns (every file written or kept, the rows written now)."""
    if folder.is_file():  # the single file of an older fedrank
        folder.unlink()
    layout = Layout(results)
    partitions = layout.partitions()
    keys = layout.keys(partitions)
    files = {path: folder / path.parent / f"{path.name}-{keys[path]}.parquet" for path in partitions}
    rows = {path: stored_rows(file) for path, file in files.items()}
    missing = [path for path, count in rows.items() if count is None]
    if missing:
        members = np.concatenate([partitions[p] for p in missing])
        measured = pivot(results.metrics, layout.metric_names, layout.run_code[members])
        for path in missing:
            rows[path] = write_tables(files[path], [layout.table(partitions[path], measured)])
    remove_others(folder, set(files.values()))
    tables = sorted(files.values())
    write_json(folder / MANIFEST, {"format": FORMAT, "rows": sum(rows.values()), "files": [f.relative_to(folder).as_posix() for f in tables]})
    return [*tables, folder / MANIFEST], sum(rows[p] for p in missing)


def stored_rows(path: Path) -> int | None:
    """The rows of a Parquet file already written, None if it is absent or unreadable."""
    try:
        return pq.read_metadata(path).num_rows
    except (OSError, pa.ArrowInvalid):
        return None


def remove_others(folder: Path, keep: set[Path]) -> None:
    """Delete what the folder holds besides `keep` (files of earlier reports, a killed write's
    temporary file), then its empty subfolders."""
    for path in sorted(folder.rglob("*"), reverse=True):
        if path.is_dir():
            if not any(path.iterdir()):
                path.rmdir()
        elif path not in keep:
            path.unlink()


def write_tables(path: Path, tables: Iterable[pa.Table]) -> int:
    """Write tables of one schema into one Parquet file, atomically; returns the rows written."""
    written, writer = 0, None
    with atomic_path(path) as tmp:
        for table in tables:
            writer = writer or pq.ParquetWriter(tmp, table.schema, write_statistics=[c for c in STATISTICS if c in table.column_names])
            writer.write_table(table)
            written += table.num_rows
        writer.close()
    return written


def tidy_tables(results: Results) -> Iterator[pa.Table]:
    """The whole tidy table, one Arrow table per file of the folder layout."""
    layout = Layout(results)
    measured = pivot(results.metrics, layout.metric_names)
    for members in layout.partitions().values():
        yield layout.table(members, measured)


def write_tidy(path, results: Results) -> int:
    """Write the tidy table to one Parquet file (atomically); returns the number of rows."""
    return write_tables(Path(path), tidy_tables(results))


def tidy_frame(results: Results) -> pd.DataFrame:
    """The tidy table as one DataFrame (text columns categorical)."""
    return pa.Table.from_batches([batch for table in tidy_tables(results) for batch in table.to_batches()]).to_pandas()


def load_runs(source: str | Path | list = "results/runs", studies: str | Path | None = None, **settings) -> pd.DataFrame:
    """Every run of a results folder (or list of run.json files) as one tidy DataFrame, the rows
    and columns of results.parquet (see bench/schemas/data_dictionary.yaml); `studies` is a
    manifest CSV (study,run_id); `settings` override statistics settings (e.g. paper_names=[]):

        from bench.stats.tidy import load_runs; runs = load_runs("results/runs")
    """
    from bench.stats.collect import load_results
    from bench.stats.settings import resolve_stats

    source = [Path(p) for p in source] if isinstance(source, list) else Path(source)
    return tidy_frame(load_results(source, resolve_stats(settings), Path(studies) if studies else None, progress=False))
