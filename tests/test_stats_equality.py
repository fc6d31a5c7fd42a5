"""Speeding the statistics up changes no number: every statistic, table and the tidy table of a
small synthetic study (diverged, failed and missing runs included) equals, file by file, what
the code before the speed-ups wrote (tests/data/stats_digests.json).

The digests were written by running this file as a script against that code:

    PYTHONPATH=<checkout of the earlier code> python tests/test_stats_equality.py --write

Text files (CSV, Markdown, LaTeX) are compared byte for byte; Parquet files by their content
(columns, dtypes and every value, exactly), not by bytes, which embed the writer's version. The
tidy table by its measurements: every (run, round, scope, metric, value) with the run's fields,
whatever its layout (one row per metric in one file before, a column per metric in a folder of
files now), rows sorted.
"""

from __future__ import annotations

import hashlib
import json
import logging
import sys
from pathlib import Path

import pandas as pd
import pytest

DIGESTS = Path(__file__).resolve().parent / "data" / "stats_digests.json"
GRID = {"data.name": ["ham10000", "msid"], "partition.beta": [0.1, 1.0], "train.rounds": [6], "seed": [0, 1, 2]}


def digest(path: Path) -> str:
    if path.name == "results.parquet":
        return tidy_digest(path)
    if path.suffix == ".parquet":
        frame = pd.read_parquet(path)
        content = pd.util.hash_pandas_object(frame, index=True).to_numpy().tobytes() if len(frame) else b""
        return hashlib.sha256(repr([(c, str(t)) for c, t in frame.dtypes.items()]).encode() + content).hexdigest()
    return hashlib.sha256(path.read_bytes()).hexdigest()


def tidy_digest(path: Path) -> str:
    """Digest of the tidy table's measurements as long rows, text as text, rows sorted."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.dataset as ds

    table = ds.dataset(path).to_table()
    if "metric" not in table.column_names:  # a column per metric: one row per measured metric
        ids = table.column_names[:table.column_names.index("scope") + 1]
        parts = [table.select(ids).filter(pc.is_null(table["round"]))]  # a run without measurements
        parts[0] = parts[0].append_column("metric", pa.nulls(parts[0].num_rows, pa.string())).append_column("value", pa.nulls(parts[0].num_rows, pa.float64()))
        for name in table.column_names[len(ids):]:
            kept = table.filter(pc.is_valid(table[name]))
            parts.append(kept.select(ids).append_column("metric", pa.array([name] * kept.num_rows, pa.string())).append_column("value", kept[name]))
        table = pa.concat_tables(parts, promote_options="permissive")
    frame = table.to_pandas()
    frame = frame.astype({c: object for c in frame.columns if not pd.api.types.is_numeric_dtype(frame[c]) or isinstance(frame[c].dtype, pd.CategoricalDtype)})
    frame = frame.astype({"round": float})[sorted(frame.columns)].map(lambda v: v if v is None or isinstance(v, float) else str(v)) \
        .sort_values(["study", "run_id", "round", "scope", "metric"], ignore_index=True, na_position="first")
    content = pd.util.hash_pandas_object(frame, index=False).to_numpy().tobytes()
    return hashlib.sha256(repr(list(frame.columns)).encode() + content).hexdigest()


def report_digests(folder: Path) -> dict[str, str]:
    """Write the study, analyse it as `fedrank report` does (no figures), digest every output."""
    from bench.stats.analysis import analyse
    from bench.stats.collect import load_results
    from bench.stats.report import write_outputs
    from bench.stats.settings import resolve_stats
    from bench.stats.synthetic import PAPER_GRID_METHODS, write_study

    write_study(folder / "runs", {**GRID, "method": PAPER_GRID_METHODS}, diverged=0.05, failed=0.05, missing=0.05)
    settings = resolve_stats({})
    write_outputs(analyse(load_results(folder / "runs", settings, None, False), settings), folder / "report", ("stats", "tables"), False)
    report = folder / "report"
    return {str(p.relative_to(report)): digest(p) for p in sorted(report.rglob("*")) if p.is_file()
            and not p.is_relative_to(report / "results.parquet")} | {"results.parquet": tidy_digest(report / "results.parquet")}


@pytest.mark.slow
def test_every_statistic_and_table_is_unchanged(tmp_path):
    expected = json.loads(DIGESTS.read_text())
    found = report_digests(tmp_path)
    assert sorted(found) == sorted(expected)
    assert [name for name in expected if found[name] != expected[name]] == []


if __name__ == "__main__" and sys.argv[1:] == ["--write"]:
    import tempfile

    logging.basicConfig(level=logging.WARNING)
    with tempfile.TemporaryDirectory() as scratch:
        DIGESTS.parent.mkdir(exist_ok=True)
        DIGESTS.write_text(json.dumps(report_digests(Path(scratch)), indent=1) + "\n")
    print(f"wrote {DIGESTS}")
