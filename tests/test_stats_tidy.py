"""The tidy table as a report writes it, a folder of one Parquet file per study x dataset x method
(bench.stats.tidy.write_tidy_folder): it reads as the table `fedrank export` writes in one file;
a refresh writes only the files whose runs changed; the folder holds nothing else."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from bench.cli import main
from bench.stats.collect import load_results
from bench.stats.settings import resolve_stats
from bench.stats.synthetic import record_metrics_sha256, write_study
from bench.stats.tidy import MANIFEST, tidy_frame, write_tidy, write_tidy_folder

# FedProx-FC last: its config keys are FedProx's, so adding its runs adds no column (a method
# with a key no other has adds a column to every file, and every file is written again)
GRID = {"data.name": ["ham10000", "msid"], "train.rounds": [3], "seed": [0, 1], "method": ["fedavg", "fedprox", "fedprox_fc"]}


def results_of(runs):
    return load_results(runs, resolve_stats({}), None, False)


def table(path) -> pd.DataFrame:
    """The table at `path` (file or folder), text as text, in one row order."""
    frame = pd.read_parquet(path)
    frame = frame.astype({c: str for c in frame.columns if isinstance(frame[c].dtype, pd.CategoricalDtype)})
    return frame.sort_values(["study", "run_id", "round", "scope"], ignore_index=True)


def method_of(run_json) -> str:
    return json.loads(run_json.read_text())["method"]["name"]


def partition_of(run) -> Path:
    """The file of the folder (without its key) that holds the run's rows."""
    record = json.loads((run / "run.json").read_text())
    return Path("all", record["config"]["data"]["name"], record["method"]["name"])


def files_in(folder) -> set:
    return {p for p in folder.rglob("*") if p.is_file()}


def test_the_folder_reads_as_the_exported_file(tmp_path):
    write_study(tmp_path / "runs", GRID, failed=0.2)
    results = results_of(tmp_path / "runs")
    files, rows = write_tidy_folder(tmp_path / "results.parquet", results)
    assert files.pop() == tmp_path / "results.parquet" / MANIFEST
    assert len(files) == len(results.runs.drop_duplicates(["study", "data.name", "method.name"]))
    assert rows == write_tidy(tmp_path / "one.parquet", results) == sum(pq.read_metadata(f).num_rows for f in files)
    pd.testing.assert_frame_equal(table(tmp_path / "results.parquet"), table(tmp_path / "one.parquet"))


def test_a_refresh_writes_only_the_files_of_changed_runs(tmp_path):
    runs, folder, held = tmp_path / "runs", tmp_path / "results.parquet", tmp_path / "held"
    written = write_study(runs, GRID)
    last = method_of(written[-1])
    added = [p.parent for p in written if method_of(p) == last]
    held.mkdir()
    for run in added:
        run.rename(held / run.name)
    before, _ = write_tidy_folder(folder, results_of(runs))
    before.remove(folder / MANIFEST)
    stamps = {f: f.stat().st_mtime_ns for f in before}
    for run in added:
        (held / run.name).rename(run)

    results = results_of(runs)
    after, rows = write_tidy_folder(folder, results)
    after.remove(folder / MANIFEST)
    new = set(after) - set(before)
    assert set(before) <= set(after) and all(f.stat().st_mtime_ns == stamps[f] for f in before)  # untouched
    assert {f.name.rsplit("-", 1)[0] for f in new} == {last} and len(new) == len(GRID["data.name"])
    assert rows == sum(pq.read_metadata(f).num_rows for f in new)
    write_tidy_folder(tmp_path / "full.parquet", results)
    pd.testing.assert_frame_equal(table(folder), table(tmp_path / "full.parquet"))

    changed, removed = written[0].parent, written[-2].parent  # another run's metrics (its sha recorded), a removed run
    expected = {partition_of(changed), partition_of(removed)}
    metrics = pq.read_table(changed / "metrics.parquet")
    pq.write_table(metrics.set_column(metrics.schema.get_field_index("value"), "value", pc.multiply(metrics["value"], 0.5)), changed / "metrics.parquet")
    record_metrics_sha256(changed / "run.json")
    shutil.rmtree(removed)
    (folder / "notes.txt").write_text("a stray file")
    (after[0].parent / f"{after[0].name}.tmp.123").write_bytes(b"a killed write")
    results = results_of(runs)
    refreshed, _ = write_tidy_folder(folder, results)
    assert files_in(folder) == set(refreshed) and json.loads((folder / MANIFEST).read_text())["rows"] == len(table(folder))
    rewritten = {f.relative_to(folder).parent / f.name.rsplit("-", 1)[0] for f in set(refreshed) - set(after) - {folder / MANIFEST}}
    assert rewritten == expected and len(expected) == 2
    write_tidy_folder(tmp_path / "full2.parquet", results)
    pd.testing.assert_frame_equal(table(folder), table(tmp_path / "full2.parquet"))


def test_a_report_replaces_the_single_file_of_an_older_fedrank(tmp_path):
    write_study(tmp_path / "runs", {**GRID, "method": GRID["method"][:1]})
    out = tmp_path / "out"
    out.mkdir()
    (out / "results.parquet").write_bytes(b"the older single file")
    (out / "report.json").write_text(json.dumps({"outputs": {"stats": ["results.parquet"]}}))
    assert main(["stats", "--quiet", "--runs", str(tmp_path / "runs"), "--out", str(out)]) == 0
    assert (out / "results.parquet").is_dir() and len(table(out / "results.parquet")) > 0
    assert all(p.startswith("results.parquet/") for p in json.loads((out / "report.json").read_text())["outputs"]["stats"] if "results" in p)


@pytest.mark.parametrize("where", ["next to it", "after every other row"])
def test_two_values_of_one_metric_in_one_cell_are_an_error(tmp_path, where):
    write_study(tmp_path / "runs", {**GRID, "method": GRID["method"][:1], "seed": [0]})
    results = results_of(tmp_path / "runs")
    rows, again = results.metrics, results.metrics.iloc[[5]]
    results.metrics = pd.concat([rows.iloc[:6], again, rows.iloc[6:]] if where == "next to it" else [rows, again], ignore_index=True)
    with pytest.raises(ValueError, match="has two values of"):
        write_tidy_folder(tmp_path / "results.parquet", results)


def test_evaluation_rows_in_any_order_give_the_same_table(tmp_path):
    write_study(tmp_path / "runs", GRID, failed=0.2)
    results = results_of(tmp_path / "runs")
    expected = tidy_frame(results)
    results.metrics = results.metrics.sample(frac=1, random_state=0).reset_index(drop=True)  # no run's rows in one block
    pd.testing.assert_frame_equal(tidy_frame(results), expected)
