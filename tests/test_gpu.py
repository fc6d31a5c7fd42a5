"""Checks that need a CUDA GPU, skipped without one (CI has none; benchmarks/gpu_figures.sh runs
them on a GPU machine): the training step loop never waits for the GPU, in every speed setting."""

from __future__ import annotations

import pytest
import torch

from bench.engine.batches import TensorData
from bench.engine.setup import build_experiment
from bench.engine.trainer import Learner, LocalTrainer
from conftest import tiny_config

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def refusing_syncs(function):
    """`function` run with CUDA's sync debug mode raising on any host synchronisation."""

    def checked(*args, **kwargs):
        torch.cuda.set_sync_debug_mode("error")
        try:
            return function(*args, **kwargs)
        finally:
            torch.cuda.set_sync_debug_mode("default")

    return checked


@pytest.mark.parametrize("runtime", [{}, {"runtime__precision": "bf16", "runtime__channels_last": True}])
def test_the_training_step_loop_never_waits_for_the_gpu(monkeypatch, runtime):
    cfg = tiny_config(runtime__device="cuda", augment__hflip=0.5, augment__rotation=10, **runtime)
    exp = build_experiment(cfg, torch.device("cuda"))
    client = exp.fed.clients[0]
    exp.fed.trainer.fit(client, 1, [Learner(exp.fed.model)])  # warm-up: cuDNN and allocator initialisation may synchronise
    monkeypatch.setattr(LocalTrainer, "_step", refusing_syncs(LocalTrainer._step))
    monkeypatch.setattr(TensorData, "batch", refusing_syncs(TensorData.batch))
    fit = exp.fed.trainer.fit(client, 2, [Learner(exp.fed.model)])  # the mean loss is read once, after the loop
    assert fit.steps > 1 and torch.isfinite(torch.tensor(fit.loss))
