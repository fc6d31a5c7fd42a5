"""The GPU-hours estimate of `fedrank plan`: FLOPs from the model, rate assumed or measured."""

from __future__ import annotations

import json

import pytest

from bench.cli import main
from bench.compute import ASSUMED_TFLOPS, forward_flops, gpu_hours, run_flops
from bench.workflow import load_workflow_config, plan_workflow


def test_forward_flops_of_a_small_cnn_are_the_hand_count():
    # conv 3->8 at 8x8, pool, conv 8->16 at 4x4 (2 FLOPs per multiply-add), head 16->10
    expected = 2 * 9 * 3 * 8 * 8 * 8 + 2 * 9 * 8 * 16 * 4 * 4 + 2 * 16 * 10
    assert forward_flops(json.dumps({"name": "small_cnn", "widths": [8, 16]}), 8) == pytest.approx(expected, rel=0.01)


def test_gpu_hours_use_the_rate_measured_from_finished_gpu_runs(tmp_path, capsys):
    config = {"results": str(tmp_path / "runs"), "seeds": 2, "base": {"model": {"name": "small_cnn", "widths": [8, 16]}},
              "studies": {"s": {"datasets": ["synthetic"], "methods": ["fedavg"]}}}
    path = tmp_path / "w.yaml"
    path.write_text(json.dumps(config))
    plan = plan_workflow(load_workflow_config(path))
    hours, rate, source = gpu_hours(plan)
    assert rate == ASSUMED_TFLOPS and source.startswith("assumed")
    assert sum(hours.values()) == pytest.approx(sum(run_flops(r.resolved) for r in plan.runs.values()) / (ASSUMED_TFLOPS * 1e12) / 3600)
    first, run = next(iter(plan.runs.items()))
    longer = {**run.resolved, "train": {**run.resolved["train"], "rounds": 2 * run.resolved["train"]["rounds"]}}
    assert run_flops(longer) == pytest.approx(2 * run_flops(run.resolved))  # twice the rounds (each evaluated): twice the work
    record = tmp_path / "runs" / first / "run.json"
    record.parent.mkdir(parents=True)
    record.write_text(json.dumps({"status": "completed", "environment": {"device": "cuda:0 (NVIDIA H200)"},
                                  "timing": {"wall_seconds": run_flops(run.resolved) / 5e12}}))
    hours, rate, source = gpu_hours(plan)
    assert rate == pytest.approx(5.0) and source.startswith("measured")
    assert main(["plan", str(path), "--gpu-tflops", "10"]) == 0
    assert "at 10.0 TFLOP/s sustained (given with --gpu-tflops)" in capsys.readouterr().out
