"""Results describe themselves: every column and run.json field is in the data dictionary, the
Parquet files carry its descriptions and their run id, and `fedrank export` / `load_runs`
give every run of a folder as one table."""

from __future__ import annotations

import json

import pandas as pd
import pyarrow.parquet as pq
import pytest

from bench.cli import main
from bench.dictionary import dictionary, readme_block
from bench.engine.run import RunPaths, execute
from bench.stats.tidy import load_runs
from conftest import REPO, tiny_config


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Two real (tiny) runs: FedLSC records diagnostics, FedAvg does not."""
    root = tmp_path_factory.mktemp("runs")
    records = [execute(tiny_config(method=m, train__rounds=2), root / m, show_progress=False) for m in ("fedlsc", "fedavg")]
    return root, records


def flat_fields(record: dict, documented: set[str], prefix: str = "") -> set[str]:
    """Dotted names of a run record's fields; a documented mapping (config, packages) is one field."""
    names = set()
    for key, value in record.items():
        name = f"{prefix}{key}"
        names |= flat_fields(value, documented, f"{name}.") if isinstance(value, dict) and name not in documented else {name}
    return names


def test_run_tables_carry_their_run_id_and_describe_every_column(runs):
    root, records = runs
    for record, folder in zip(records, ("fedlsc", "fedavg")):
        for kind in ("metrics.parquet", "diagnostics.parquet"):
            path = root / folder / kind
            schema = pq.read_schema(path)
            assert schema.names[0] == "run_id" and schema.names[1:] == list(dictionary()[kind]["columns"])[1:]
            for field in schema:
                assert field.metadata[b"description"], (kind, field.name)
            ids = pd.read_parquet(path, columns=["run_id"])["run_id"]
            assert len(ids) == 0 or set(ids) == {record["run_id"]}
    assert len(pd.read_parquet(RunPaths(root / "fedlsc").diagnostics)) > 0


def test_every_run_json_field_is_documented_and_every_documented_field_exists(runs):
    root, _ = runs
    record = json.loads(RunPaths(root / "fedlsc").record.read_text())
    documented = set(dictionary()["run.json"]["fields"])
    assert flat_fields(record, documented) == documented


def test_export_and_load_runs_give_every_run_in_one_described_table(runs, tmp_path):
    root, records = runs
    frame = load_runs(root)
    assert set(frame["run_id"]) == {r["run_id"] for r in records}
    metrics = pd.concat(pd.read_parquet(RunPaths(root / f).metrics) for f in ("fedlsc", "fedavg"))
    assert len(frame) == len(metrics[metrics["client"].isna()].drop_duplicates(["run_id", "round", "scope"]))  # the global model, client means and comm rows of every run
    evaluated = metrics[metrics["client"].isna()].pivot(index=["run_id", "round", "scope"], columns="metric", values="value")
    assert set(evaluated.columns) <= set(frame.columns)  # a column per metric, per-class ones included
    pd.testing.assert_frame_equal(frame.astype({"run_id": str, "scope": str}).set_index(["run_id", "round", "scope"])[evaluated.columns].sort_index(),
                                  evaluated.sort_index(), check_names=False, check_index_type=False)
    documented = dictionary()["results.parquet"]["columns"]
    assert set(documented) <= set(frame.columns)
    assert main(["export", "--quiet", "--runs", str(root), "--out", str(tmp_path / "runs.parquet")]) == 0
    assert main(["export", "--quiet", "--runs", str(root), "--out", str(tmp_path / "runs.csv")]) == 0
    schema = pq.read_schema(tmp_path / "runs.parquet")
    for field in schema:
        assert field.metadata and field.metadata[b"description"], field.name
    assert schema.field("train.rounds").metadata[b"description"].startswith(b"run config train.rounds: ")
    assert len(pd.read_parquet(tmp_path / "runs.parquet")) == len(pd.read_csv(tmp_path / "runs.csv")) == len(frame)
    assert main(["export", "--runs", str(root), "--out", str(tmp_path / "runs.xlsx")]) == 2


def test_the_readme_holds_the_current_data_dictionary():
    assert readme_block() in (REPO / "README.md").read_text(), "run: python -m bench.dictionary README.md"
