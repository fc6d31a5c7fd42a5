"""Server-side methods against hand-computed values: FedAdam, FedYogi, FedAdagrad (Reddi et al.
2021), FedAvgM (Hsu et al. 2019); and the layer choices of FedBN and FedPer, and Central's pooling."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from bench.engine.run import Progress, play_round
from bench.methods.fedbn import batchnorm_layers
from bench.methods.fedper import last_layers
from bench.testing import federation, report, shifted


def two_rounds(method: str, deltas=(0.2, -0.1), **hparams) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Initial global state and the global state after each round in which every client moved
    every element by `deltas[r]` (so the mean update is exactly that)."""
    exp = federation(method, **{f"method__{k}": v for k, v in hparams.items()})
    fed, start, after = exp.fed, exp.fed.global_state.clone(), []
    for delta in deltas:
        fed.global_state = exp.method.aggregate(fed, report(fed, shifted(fed, [delta] * 3), [5, 3, 2]))
        after.append(fed.global_state.clone())
    return start, after, fed


# Reddi et al. Algorithm 2 with eta = 1e-2, beta1 = 0.9, beta2 = 0.999, tau = 1e-3, v_0 = tau^2:
#   round 1, Delta = 0.2:  m = 0.1 * 0.2 = 0.02
#     Adam:    v = 0.999e-6 + 0.001 * 0.04 = 4.0999e-5        step = 0.01 * 0.02 / (sqrt(v) + 1e-3) = 0.0270159
#     Yogi:    v = 1e-6 - 0.001 * 0.04 * sign(1e-6 - 0.04) = 4.1e-5                         step = 0.0270156
#     Adagrad: v = 1e-6 + 0.04 = 0.040001                                                   step = 0.000995012
#   round 2, Delta = -0.1: m = 0.9 * 0.02 + 0.1 * (-0.1) = 0.008
#     Adam:    v = 0.999 * 4.0999e-5 + 0.001 * 0.01 = 5.09580e-5                            step = 0.00982984
#     Yogi:    v = 4.1e-5 - 0.001 * 0.01 * sign(4.1e-5 - 0.01) = 5.1e-5                     step = 0.00982629
#     Adagrad: v = 0.040001 + 0.01 = 0.050001                                               step = 0.000356174
@pytest.mark.parametrize(
    "method, steps",
    [("fedadam", (0.0270159061, 0.0098298366)), ("fedyogi", (0.0270156212, 0.0098262855)), ("fedadagrad", (0.000995012500, 0.000356174454))],
)
def test_adaptive_server_steps_by_hand(method, steps):
    start, (first, second), fed = two_rounds(method)
    trainable = fed.trainable
    torch.testing.assert_close(first[trainable], start[trainable] + steps[0], rtol=0, atol=2e-7)
    torch.testing.assert_close(second[trainable], first[trainable] + steps[1], rtol=0, atol=2e-7)
    # buffers (BatchNorm running statistics) are averaged, not stepped: they move by the mean update
    torch.testing.assert_close(first[~trainable], start[~trainable] + 0.2, rtol=0, atol=1e-6)
    torch.testing.assert_close(fed.server["m"][trainable][0].item(), 0.008, rtol=1e-6, atol=0)


def test_fedadagrad_has_no_beta2():
    from bench.methods import resolve_method_config

    assert "beta2" not in resolve_method_config({"name": "fedadagrad"})
    assert resolve_method_config({"name": "fedyogi"})["beta2"] == 0.999


def test_fedavgm_momentum_by_hand():
    # beta = 0.9, eta = 0.1: v1 = 0.2, x1 = x0 + 0.02; v2 = 0.9 * 0.2 - 0.1 = 0.08, x2 = x1 + 0.008
    start, (first, second), fed = two_rounds("fedavgm")
    trainable = fed.trainable
    torch.testing.assert_close(first[trainable], start[trainable] + 0.02, rtol=0, atol=1e-6)
    torch.testing.assert_close(second[trainable], first[trainable] + 0.008, rtol=0, atol=1e-6)


def test_fedavgm_with_momentum_0_and_server_lr_1_equals_fedavg():
    exps = {m: federation(m, **({"method__momentum": 0.0, "method__server_lr": 1.0} if m == "fedavgm" else {})) for m in ("fedavg", "fedavgm")}
    for exp in exps.values():
        exp.fed.round = 1
        play_round(exp, Progress())
        exp.fed.round = 2
        play_round(exp, Progress())
    torch.testing.assert_close(exps["fedavgm"].fed.global_state, exps["fedavg"].fed.global_state, rtol=0, atol=1e-6)


def test_adaptive_server_with_partial_participation_uses_the_reporting_clients_only():
    exp = federation("fedadam", clients=4)
    fed = exp.fed
    new = exp.method.aggregate(fed, report(fed, shifted(fed, [0.3, 0.1]), [1, 3], clients=[2, 3]))
    # Delta = (1 * 0.3 + 3 * 0.1) / 4 = 0.15; m = 0.015; v = 0.999e-6 + 0.001 * 0.0225 = 2.3499e-5
    step = 0.01 * 0.015 / (math.sqrt(0.999e-6 + 0.001 * 0.0225) + 1e-3)
    torch.testing.assert_close(new[fed.trainable], fed.global_state[fed.trainable] + step, rtol=0, atol=2e-7)


class NamedNorms(nn.Module):
    """A model whose norms are not called `bn`: FedBN must find them by type."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2))
        self.norm = nn.GroupNorm(1, 2)
        self.downsample = nn.Sequential(nn.Conv2d(2, 2, 1), nn.SyncBatchNorm(2))


def test_fedbn_finds_batchnorm_by_module_type():
    from bench.engine.layout import StateLayout

    model = NamedNorms()
    fed = type("Fed", (), {"model": model, "layout": StateLayout(model)})()
    chosen = [k for k, p in zip(fed.layout.keys, batchnorm_layers(fed).tolist()) if p]
    assert chosen == [f"{m}.{t}" for m in ("stem.1", "downsample.1") for t in ("weight", "bias", "running_mean", "running_var")]


def test_fedbn_keeps_batchnorm_personal_and_sends_the_rest():
    exp = federation("fedbn")
    fed, method = exp.fed, exp.method
    personal = method.personal_layers(fed)
    assert all(isinstance(fed.model.get_submodule(k.rpartition(".")[0]), nn.BatchNorm2d) for k, p in zip(fed.layout.keys, personal.tolist()) if p)
    assert method.download_bytes(fed, fed.clients[0]) == fed.layout.nbytes(~personal)


def test_fedper_keeps_the_last_layers_with_their_norms():
    exp = federation("fedper", model__widths=[4, 8, 16])
    keys = exp.fed.layout.keys
    head_only = [k for k, p in zip(keys, last_layers(exp.fed, 1).tolist()) if p]
    assert head_only == ["head.weight", "head.bias"]  # layers = 1 is FedAvg-FC's head
    two = [k for k, p in zip(keys, exp.method.personal_layers(exp.fed).tolist()) if p]
    assert two == ["body.8.weight", "body.9.weight", "body.9.bias", "body.9.running_mean", "body.9.running_var", "head.weight", "head.bias"]


def test_central_trains_one_model_on_every_clients_data_and_sends_nothing():
    exp = federation("central")
    fed = exp.fed
    fed.round = 1
    progress = Progress()
    play_round(exp, progress)
    trained = [r for r in progress.metrics if r["scope"] == "train"]
    assert [r["client"] for r in trained] == [0]
    steps = [d["values"] for d in fed.diagnostics if d["name"] == "participation/steps"][0]
    pooled = sum(len(c.train) for c in fed.clients)
    assert steps[0] == math.ceil(pooled / fed.config["train"]["batch_size"]) - (pooled % fed.config["train"]["batch_size"] == 1)
    assert [r["value"] for r in progress.metrics if r["scope"] == "comm" and r["metric"] == "bytes"] == [0.0]
    assert not exp.method.personalized(fed) and {r["scope"] for r in progress.metrics} >= {"global", "local"}
