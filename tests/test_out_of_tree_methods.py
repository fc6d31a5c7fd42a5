"""Methods outside the repository: a folder on the methods path (FEDRANK_METHODS_PATH or a
workflow config's `methods_path`) and an installed package's `fedrank.methods` entry point; a
name clash is one line naming both files; run.json says where a method's code came from; and
`fedrank check-method` passes a good method and names the failing check of a broken one."""

from __future__ import annotations

import hashlib
import json
import logging
import sys
from pathlib import Path

import pytest

import bench.methods
from bench.cli import main
from bench.engine.run import RunPaths, execute
from bench.errors import UserError
from bench.methods import METHODS_PATH_ENV, method_source, registry
from bench.testing import tiny_config

GOOD = '''
"""An out-of-tree method: FedAvg with a server learning rate."""
from dataclasses import dataclass

import torch

from bench.methods import Method, hparam, register


@register
@dataclass(kw_only=True)
class {cls}(Method):
    """{cls}: FedAvg with a server learning rate (an out-of-tree test method)."""

    name = "{name}"
    server_lr: float = hparam(1.0, "server learning rate", exclusiveMinimum=0)

    def aggregate(self, fed, updates):
        mean = self.weighted_mean(updates)
        return self.shared_only(fed, torch.where(fed.trainable, fed.global_state + self.server_lr * (mean - fed.global_state), mean))
'''

NAN = '''
"""A broken method: its aggregate returns NaN."""
import torch

from bench.methods import Method, register


@register
class NanAggregate(Method):
    """NanAggregate: returns a NaN state (a broken test method)."""

    name = "nan_aggregate_ext"

    def aggregate(self, fed, updates):
        return torch.full_like(fed.global_state, float("nan"))
'''


@pytest.fixture
def forget():
    """Drop the test methods from the registry afterwards (other tests list every method)."""
    before = set(registry())
    yield
    for name in set(bench.methods._REGISTRY) - before:
        del bench.methods._REGISTRY[name]
        bench.methods._PACKAGES.pop(name, None)
    for module in [m for m in sys.modules if m.startswith("fedrank_methods_path.") or m.startswith("fedrank_ep_test")]:
        del sys.modules[module]


def method_folder(tmp_path: Path, name: str, cls: str) -> Path:
    folder = tmp_path / "my-methods"
    folder.mkdir(exist_ok=True)
    (folder / f"{name}.py").write_text(GOOD.format(name=name, cls=cls))
    return folder


def test_a_folder_on_the_methods_path_is_discovered_and_run_json_records_its_source(tmp_path, monkeypatch, forget):
    folder = method_folder(tmp_path, "fedfolder_ext", "FedFolder")
    monkeypatch.setenv(METHODS_PATH_ENV, str(folder))
    assert "fedfolder_ext" in registry()
    record = execute(tiny_config(method="fedfolder_ext", train__rounds=1), tmp_path / "run", show_progress=False)
    file = folder / "fedfolder_ext.py"
    assert record["method_source"] == {"file": str(file.resolve()), "sha256": hashlib.sha256(file.read_bytes()).hexdigest(), "package": None}
    assert json.loads(RunPaths(tmp_path / "run").record.read_text())["method_source"]["package"] is None
    assert method_source("fedavg")["package"]["name"] == "fedrank"


def test_methods_all_in_a_workflow_config_includes_the_methods_path(tmp_path, monkeypatch, forget):
    from bench.workflow import plan_workflow, prepare_workflow_config

    folder = method_folder(tmp_path, "fedplanned_ext", "FedPlanned")
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv(METHODS_PATH_ENV, raising=False)
    config = prepare_workflow_config({"methods_path": ["my-methods"], "seeds": 1, "results": str(tmp_path / "runs"),
                                      "base": {"data": {"public_fraction": 0.2}},  # feddf, fedmd, mdhfl need one
                                      "studies": {"all": {"datasets": ["synthetic"], "methods": "all"}}})
    plan = plan_workflow(config)
    methods = {run.resolved["method"]["name"] for run in plan.runs.values()}
    assert methods == {name for name, cls in registry().items() if cls.in_all} and "fedplanned_ext" in methods
    import os
    assert str(folder.resolve()) in os.environ[METHODS_PATH_ENV].split(os.pathsep)  # what every job inherits
    with pytest.raises(UserError, match="methods_path.*not a folder"):
        plan_workflow({**config, "methods_path": ["nowhere"]})


def test_an_installed_package_registers_methods_through_its_entry_point(tmp_path, monkeypatch, forget):
    site = tmp_path / "site"
    (site / "fedrank_ep_test").mkdir(parents=True)
    (site / "fedrank_ep_test" / "__init__.py").write_text(GOOD.format(name="fedpackaged_ext", cls="FedPackaged"))
    info = site / "fedrank_ep_test-1.2.3.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: fedrank-ep-test\nVersion: 1.2.3\n")
    (info / "entry_points.txt").write_text("[fedrank.methods]\nfedpackaged = fedrank_ep_test\n")
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.setattr(bench.methods, "_ENTRY_POINTS_LOADED", [])
    assert "fedpackaged_ext" in registry()
    source = method_source("fedpackaged_ext")
    assert source["package"] == {"name": "fedrank-ep-test", "version": "1.2.3"}
    assert source["file"] == str((site / "fedrank_ep_test" / "__init__.py").resolve())


def test_a_name_clash_is_one_line_naming_both_files(tmp_path, monkeypatch, forget):
    folder = tmp_path / "clash"
    folder.mkdir()
    (folder / "myavg.py").write_text(GOOD.format(name="fedavg", cls="MyAvg"))
    monkeypatch.setenv(METHODS_PATH_ENV, str(folder))
    with pytest.raises(UserError) as error:
        registry()
    message = str(error.value)
    assert "\n" not in message and str((folder / "myavg.py").resolve()) in message and "bench/methods/fedavg.py" in message
    assert main(["methods"]) == 2  # the CLI says it in one line, no traceback


def test_check_method_passes_a_good_file_and_names_the_failing_check_and_hooks_of_a_broken_one(tmp_path, capsys, forget):
    good = method_folder(tmp_path, "fedchecked_ext", "FedChecked") / "fedchecked_ext.py"
    level = logging.getLogger("fedrank").level
    assert main(["check-method", str(good)]) == 0
    assert logging.getLogger("fedrank").level == level  # quiet while the suite ran, and only then
    out = capsys.readouterr().out
    assert "PASS learns" in out and "FAIL" not in out and "server_lr: number = 1.0" in out and "bytes per round" in out
    broken = tmp_path / "nan_aggregate_ext.py"
    broken.write_text(NAN)
    assert main(["check-method", str(broken)]) == 1
    lines = capsys.readouterr().out.splitlines()
    failed = [line for line in lines if line.startswith("FAIL runs (full)")]
    assert failed and "aggregate" in failed[0] and "aggregated state" in failed[0] and "round 1" in failed[0]
    assert any(line.startswith("SKIP resume (full)") for line in lines)
    assert main(["check-method", "no_such_method"]) == 2


@pytest.mark.slow
def test_a_method_in_a_methods_path_folder_is_run_and_ranked_by_the_workflow(tmp_path):
    """Snakemake on a config whose methods_path names a folder outside fedrank: its method runs in
    every job (they inherit FEDRANK_METHODS_PATH) and reaches the leaderboard, no fedrank edit."""
    import yaml

    from test_workflow_report import run_workflow

    folder = method_folder(tmp_path, "fedranked_ext", "FedRanked")
    config = {"methods_path": [str(folder)], "seeds": 2,
              "base": {"data": {"name": "synthetic"}, "model": {"name": "small_cnn", "widths": [8, 16]}, "train": {"rounds": 2, "lr": 0.003}},
              "studies": {"outside": {"description": "FedAvg against a method from outside fedrank.", "datasets": ["synthetic"],
                                      "methods": ["fedavg", "fedranked_ext"]}}}
    (tmp_path / "outside.yaml").write_text(yaml.safe_dump(config))
    run_workflow(tmp_path / "out", tmp_path / "outside.yaml")
    leaderboard = (tmp_path / "out" / "reports" / "tables" / "leaderboard.md").read_text()
    assert "fedranked_ext" in leaderboard
    records = [json.loads(p.read_text()) for p in (tmp_path / "out" / "runs").glob("*fedranked_ext*/run.json")]
    assert len(records) == 2 and all(r["status"] == "completed" and r["method_source"]["file"] == str((folder / "fedranked_ext.py").resolve())
                                      for r in records)

