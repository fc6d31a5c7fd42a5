"""A report refreshed from the per-run summaries cache (bench.stats.run_cache) equals a full
rebuild, file by file: after adding a method's runs, changing a run's metrics or removing a run;
and the refresh reads only the runs that are new or changed."""

from __future__ import annotations

import json
import shutil

import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from test_stats_equality import digest

import bench.stats.run_cache as run_cache
from bench.stats.analysis import analyse
from bench.stats.collect import load_results
from bench.stats.report import write_outputs
from bench.stats.settings import resolve_stats
from bench.stats.synthetic import PAPER_GRID_METHODS, record_metrics_sha256, write_study

GRID = {"data.name": ["ham10000"], "partition.beta": [0.1, 1.0], "train.rounds": [4], "seed": [0, 1, 2]}


def report(runs, out, cache=None) -> dict[str, str]:
    """Digest of every statistics and table file of the runs (the cache used when given)."""
    settings = resolve_stats({})
    write_outputs(analyse(load_results(runs, settings, None, False, cache), settings), out, ("stats", "tables"), False)
    return {str(p.relative_to(out)): digest(p) for p in sorted(out.rglob("*")) if p.is_file()}


@pytest.fixture
def reads(monkeypatch) -> list[int]:
    """How many runs each load reduced (read from their files) rather than took from the cache."""
    counts = []
    reduce = run_cache.reduce_runs

    def counted(paths, *args):
        counts.append(len(paths))
        return reduce(paths, *args)

    monkeypatch.setattr(run_cache, "reduce_runs", counted)
    return counts


@pytest.mark.slow
def test_refresh_equals_full_rebuild(tmp_path, reads):
    runs, cache, held = tmp_path / "runs", tmp_path / "cache", tmp_path / "held"
    written = write_study(runs, {**GRID, "method": PAPER_GRID_METHODS}, diverged=0.1, failed=0.1)
    last = json.loads(written[-1].read_text())["method"]["name"]  # a method added last
    added = [p.parent for p in written if json.loads(p.read_text())["method"]["name"] == last]
    held.mkdir()
    for folder in added:
        folder.rename(held / folder.name)
    report(runs, tmp_path / "before", cache)
    for folder in added:
        (held / folder.name).rename(folder)

    full = report(runs, tmp_path / "full")
    assert report(runs, tmp_path / "refreshed", cache) == full
    assert reads == [len(written) - len(added), len(added)]

    changed = added[0] / "metrics.parquet"  # another file, its sha recorded: re-read
    table = pq.read_table(changed)
    pq.write_table(table.set_column(table.schema.get_field_index("value"), "value", pc.multiply(table["value"], 0.5)), changed)
    record_metrics_sha256(added[0] / "run.json")
    shutil.rmtree(written[0].parent)  # a removed run
    reads.clear()
    refreshed = report(runs, tmp_path / "refreshed2", cache)
    assert refreshed == report(runs, tmp_path / "full2") != full
    assert reads == [1]


def test_an_incomplete_segment_is_read_again(tmp_path, reads):
    """A segment whose runs.json was never written (a report killed while storing it) is ignored
    and its files replaced: its runs are read again, the statistics unchanged."""
    runs, cache = tmp_path / "runs", tmp_path / "cache"
    written = write_study(runs, {**GRID, "partition.beta": [1.0], "seed": [0, 1], "method": PAPER_GRID_METHODS[:2]})
    first = report(runs, tmp_path / "first", cache)
    (segment,) = cache.glob(f"*{run_cache.RUNS}")
    segment.unlink()
    assert report(runs, tmp_path / "again", cache) == first
    assert reads == [len(written), len(written)]
    assert len(list(cache.glob(f"*{run_cache.RUNS}"))) == 1
