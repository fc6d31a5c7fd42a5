"""The Snakemake workflow end to end on a tiny grid, the demo's dry run, and the report."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

from bench.collect import load_runs
from bench.errors import UserError
from bench.workflow import plan_runs
from conftest import REPO

SNAKEMAKE = [sys.executable, "-m", "snakemake"]


def tiny_workflow(tmp_path: Path) -> Path:
    config = {
        "results": str(tmp_path / "runs"),
        "reports": str(tmp_path / "reports"),
        "base": {"data": {"name": "synthetic"}, "model": {"name": "small_cnn", "widths": [8, 16]},
                 "train": {"rounds": 2, "lr": 0.003}, "runtime": {"threads": 1}},
        "grid": {"seed": [0, 1], "method": ["fedavg", {"name": "fedlsc", "per": 0.2}]},
    }
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def test_plan_expands_the_grid_and_dedupes_identical_runs():
    runs = plan_runs({"base": {"data": {"name": "synthetic"}}, "grid": {"seed": [0, 1], "method": ["fedavg", "fedavg", {"name": "fedlsc", "per": 0}]}})
    assert len(runs) == 4
    assert {cfg["method"]["name"] for cfg in runs.values()} == {"fedavg", "fedlsc"}
    with pytest.raises(UserError, match="grid.seed"):
        plan_runs({"grid": {"seed": []}})
    with pytest.raises(UserError, match="config key 'method.tau'"):
        plan_runs({"grid": {"method": [{"name": "fedlsc", "tau": 0}]}})


def test_default_demo_dry_run_plans_21_runs():
    proc = subprocess.run([*SNAKEMAKE, "-n", "--forceall", "--cores", "1", "--quiet", "rules"], cwd=REPO, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert re.search(r"^train\s+21$", proc.stdout, re.M), proc.stdout


@pytest.mark.slow
def test_snakemake_runs_a_tiny_grid_end_to_end(tmp_path):
    config = tiny_workflow(tmp_path)
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    proc = subprocess.run([*SNAKEMAKE, "--cores", "2", "--configfile", str(config), "--quiet"], cwd=REPO, capture_output=True, text=True, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    reports = tmp_path / "reports"
    table = pd.read_csv(reports / "results.csv")
    assert set(table["method"]) == {"fedavg", "fedlsc"} and (table["seeds"] == 2).all()
    assert (reports / "convergence.png").stat().st_size > 10_000
    assert "| synthetic | fedavg |" in (reports / "results.md").read_text()
    runs, metrics, problems = load_runs(tmp_path / "runs")
    assert len(runs) == 4 and set(runs["status"]) == {"completed"} and not problems
    assert {"run_id", "round", "scope", "metric", "value"} <= set(metrics.columns)


def test_collect_reports_and_skips_foreign_folders(tmp_path):
    (tmp_path / "not_a_run").mkdir()
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "run.json").write_text("{ half written")
    runs, metrics, problems = load_runs(tmp_path)
    assert runs.empty and len(problems) == 2
    assert any("broken" in p and "unreadable" in p for p in problems)
