"""A tuned study end to end with Snakemake's local executor: trials on the tuning seed, the select
checkpoint, test runs on the selection, statistics and the tuning report in one invocation; a
larger trial budget reuses the finished trials."""

from __future__ import annotations

import json
import re

import pandas as pd
import pytest
import yaml

from bench.tuning import read_selection
from bench.workflow import plan_workflow
from conftest import REPO
from test_workflow_report import run_workflow, snakemake

pytestmark = pytest.mark.slow
TUNE = REPO / "configs" / "test" / "tune.yaml"


@pytest.fixture(scope="module")
def tuned_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("tune")
    paths, config = run_workflow(out, TUNE)
    plan = plan_workflow(config)
    plan.add_selected()
    return out, paths, config, plan


def test_every_pair_is_selected_on_its_trials_and_tested_on_the_selection(tuned_run):
    out, _, config, plan = tuned_run
    tune = config["studies"]["tuned"]["tune"]
    assert plan.pairs
    for key, pair in plan.pairs.items():
        selection = read_selection(plan.selection_file(key))
        assert len(selection["trials"]) == tune["trials"] and all(t["status"] == "completed" for t in selection["trials"])
        chosen = selection["selected"]
        assert chosen["score"] == max(t["score"] for t in selection["trials"])
        tested = [json.loads((out / "runs" / rid / "run.json").read_text()) for rid, label in
                  plan.groups[f"{pair.study}/{pair.dataset}/{pair.setting}"].runs.items() if label == pair.label]
        assert sorted(r["seed"] for r in tested) == pair.test_seeds
        for record in tested:
            assert record["status"] == "completed" and record["config"]["train"]["tuned"].items() >= chosen["values"].items()
            assert set(record["config"]["train"]["tuned"]) == set(pair.dims)
    manifest = pd.read_csv(out / "reports" / "studies.csv")
    assert set(manifest.loc[manifest["study"] == "tuned", "run_id"]) == set(plan.studies["tuned"])  # the tested runs are ranked
    assert not set(plan.trials) & set(manifest["run_id"])  # the trials are not


def test_the_tuning_report_sets_tuned_against_untuned(tuned_run):
    out, _, config, plan = tuned_run
    summary = out / "reports" / "tuning" / "summary"
    comparison = pd.read_csv(summary / "tables" / "tuned_vs_untuned.csv")
    assert len(comparison) == len(config["studies"]["tuned"]["methods"]) and (comparison["pairs"] == len(plan.pairs[next(iter(plan.pairs))].test_seeds)).all()
    assert "Kendall's tau-b" in (summary / "summary.md").read_text()
    assert len(pd.read_csv(summary / "tables" / "selected.csv")) == len(plan.pairs)
    assert list((summary / "figures").glob("tuning_curves_*.png")) and list((summary / "figures").glob("sensitivity_*.png"))
    results = (out / "reports" / "results.md").read_text()
    assert "tuned-untuned" in results and "lr=by method" in results  # one setting per block, however the methods' lr differ


def test_a_larger_budget_reuses_every_finished_trial(tuned_run, tmp_path):
    out, paths, config, plan = tuned_run
    raised = yaml.safe_load(TUNE.read_text())
    raised["studies"]["tuned"]["tune"]["trials"] += 1
    (tmp_path / "raised.yaml").write_text(yaml.safe_dump(raised))
    nothing = snakemake("-n", "--cores", "2", "--configfile", str(TUNE), "--config", *paths)
    assert "Nothing to be done" in nothing.stdout + nothing.stderr
    dry = snakemake("-n", "--cores", "2", "--configfile", str(tmp_path / "raised.yaml"), "--config", *paths)
    assert dry.returncode == 0, dry.stderr[-3000:]
    trains = re.search(r"^train\s+(\d+)$", dry.stdout, re.M)
    assert trains and int(trains.group(1)) == len(plan.pairs) * len(config["studies"]["tuned"]["tune"]["seeds"])  # the new trial only
