"""Speeding the statistics up changes no number: every statistic, table and the tidy table of a
small synthetic study (diverged, failed and missing runs included) equals, file by file, what
the code before the speed-ups wrote (tests/data/stats_digests.json).

The digests were written by running this file as a script against that code:

    PYTHONPATH=<checkout of the earlier code> python tests/test_stats_equality.py --write

Text files (CSV, Markdown, LaTeX) are compared byte for byte; Parquet files by their content
(columns, dtypes and every value, exactly), not by bytes, which embed the writer's version.
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
    if path.suffix == ".parquet":
        frame = pd.read_parquet(path)
        content = pd.util.hash_pandas_object(frame, index=True).to_numpy().tobytes() if len(frame) else b""
        return hashlib.sha256(repr([(c, str(t)) for c, t in frame.dtypes.items()]).encode() + content).hexdigest()
    return hashlib.sha256(path.read_bytes()).hexdigest()


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
    return {str(p.relative_to(folder / "report")): digest(p) for p in sorted((folder / "report").rglob("*")) if p.is_file()}


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
