"""The Snakefile's plan: the stored one while config, variables and code are unchanged, its input
files checked again; how much time that saves is benchmarks/bench_dag.py's to report."""

from __future__ import annotations

import copy
import shutil

import numpy as np
import pytest
from PIL import Image

import bench.workflow
from bench.errors import UserError
from bench.plan_cache import reused_plan
from bench.workflow import prepare_workflow_config


def msld_folder(root):
    for label in ("Monkeypox", "Others"):
        (root / label).mkdir(parents=True)
        Image.fromarray(np.zeros((8, 8, 3), dtype=np.uint8)).save(root / label / "a.png")
    return root


def test_the_stored_plan_is_reused_until_an_input_is_gone(tmp_path, monkeypatch):
    monkeypatch.setenv("FEDRANK_CACHE_DIR", str(tmp_path / "cache"))
    root = msld_folder(tmp_path / "msld")
    config = prepare_workflow_config({"results": str(tmp_path / "runs"), "seeds": 2,
                                      "studies": {"s": {"datasets": ["msld"], "methods": ["fedavg", "fedprox"]}},
                                      "datasets": {"msld": {"data": {"root": str(root)}}}})
    expansions = []
    real = bench.workflow.plan_workflow
    monkeypatch.setattr(bench.workflow, "plan_workflow", lambda config: expansions.append(1) or real(config))
    first = reused_plan(config)
    second = reused_plan(config)
    assert len(expansions) == 1 and second.runs.keys() == first.runs.keys() and len(first.runs) == 4
    assert [run.resolved for run in second.runs.values()] == [run.resolved for run in first.runs.values()]
    shutil.rmtree(root)
    with pytest.raises(UserError, match=f"config key 'data.root': {root} does not exist"):
        reused_plan(config)
    assert len(expansions) == 1  # the stored plan's check, not an expansion, found it


@pytest.mark.parametrize("changes", [{}, {"seed": -1}, {"seed": 1.5}, {"bogus": 1}, {"train": {"rounds": "x"}}, {"data": {"test_fraction": 2}},
                                     {"train": {"rounds": 0, "lr": -1}, "seed": -2}, {"augment": {"bogus": 1}}, {"runtime": {"device": 5}}])
def test_a_run_config_checked_section_by_section_gets_the_whole_checks_verdict(changes):
    """The remembered per-section verdicts (bench.config.schema_error) against jsonschema on the whole config, twice (remembered)."""
    from bench.config import best_error, fill_defaults, run_schema, schema_error
    from bench.workflow import deep_merge

    cfg = deep_merge(fill_defaults(run_schema(), {}), copy.deepcopy(changes))
    for _ in range(2):
        whole, parts = best_error(run_schema(), cfg), schema_error(run_schema(), cfg)
        assert (whole is None) == (parts is None) == (changes == {})
        if whole is not None:
            assert (list(parts.absolute_path), parts.message) == (list(whole.absolute_path), whole.message)
