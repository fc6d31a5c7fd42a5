"""The one tidy results table: study x run x round x scope x metric, every config field a column.

Rows are the global model's metrics and the means over clients of every evaluated scope, plus
the bytes sent per round (`scope` comm); per-client rows stay in each run's metrics.parquet.
Every run is present whatever its status. Run-level columns are written as dictionary columns
whose indices point at the run, so 10,000 runs x 50 rounds stream out in seconds and the file
is barely larger than the measurements themselves.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from bench.dictionary import described
from bench.io import atomic_path
from bench.stats.collect import Results

KIND = "results.parquet"  # its entry in the data dictionary
RUN_COLUMNS = ["study", "run_id", "status", "error", "seed", "method", "label", "setting", "headline_scope", "rounds_completed", "diverged_round"]
HIDDEN = {"folder", "config_keys", "treatment_keys", "method_config", "classes", "class_counts", "setting_order", "method_order", "block"}
ROWS_PER_GROUP = 2_000_000
# Min/max statistics (for filters pushed down by readers) only where queries filter: they
# double the writing time when kept for every column.
STATISTICS = ("study", "status", "method", "label", "setting", "data.name", "seed", "round", "scope", "metric")


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


def tidy_tables(results: Results) -> Iterator[pa.Table]:
    """The tidy table in chunks of about ROWS_PER_GROUP rows, every field described. A run
    without any evaluation (failed at once) still has one row, with empty measurements."""
    runs, metrics = results.runs, results.metrics
    run_columns = {c: dictionary_column(runs[c]) for c in run_level_columns(runs)}
    codes = metrics["run_id"].cat.codes.to_numpy()
    order = np.argsort(codes, kind="stable")
    bounds = np.searchsorted(codes[order], np.arange(len(metrics["run_id"].cat.categories) + 1))
    measured = {c: dictionary_column(metrics[c]) for c in ("scope", "metric")}
    numbers = {"round": metrics["round"].to_numpy(), "value": metrics["value"].to_numpy()}
    run_of = pd.Index(metrics["run_id"].cat.categories).get_indexer(runs["run_id"])
    for chunk in membership_chunks(bounds, run_of):
        spans = [order[bounds[r]:bounds[r + 1]] if bounds[r + 1] > bounds[r] else np.array([-1]) for r in run_of[chunk]]
        rows = np.concatenate(spans)
        sizes = np.array([len(s) for s in spans])
        arrays = {c: dictionary_array(np.repeat(codes[chunk], sizes), dictionary) for c, (codes, dictionary) in run_columns.items()}
        arrays.update({c: dictionary_array(gather(codes, rows, -1), dictionary) for c, (codes, dictionary) in measured.items()})
        arrays.update({c: pa.array(gather(values, rows, 0), mask=rows < 0) for c, values in numbers.items()})
        yield described(pa.table(arrays), KIND)


def write_tidy(path, results: Results) -> int:
    """Write the tidy table to `path` (Parquet, atomically); returns the number of rows."""
    written = 0
    with atomic_path(path) as tmp:
        writer = None
        for table in tidy_tables(results):
            writer = writer or pq.ParquetWriter(tmp, table.schema, write_statistics=[c for c in STATISTICS if c in table.column_names])
            writer.write_table(table)
            written += table.num_rows
        writer.close()
    return written


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


def membership_chunks(bounds: np.ndarray, run_of: np.ndarray) -> list[np.ndarray]:
    """Runs-table row numbers in chunks of about ROWS_PER_GROUP metric rows."""
    sizes = np.maximum(bounds[run_of + 1] - bounds[run_of], 1)
    cut = np.searchsorted(np.cumsum(sizes), np.arange(ROWS_PER_GROUP, sizes.sum(), ROWS_PER_GROUP), side="right")
    return [part for part in np.split(np.arange(len(sizes)), cut) if len(part)]
