"""The method interface carries the methods later issues add, with no engine change.

Compact prototypes of FedBN (BatchNorm personal), SCAFFOLD (control variates on server and
clients, gradient correction), FedAdam (a server optimizer) and Ditto (a second, personal model
per client) are registered for the test, run, and resume bit-identically after a crash: their
state lives in `fed.server` / `client.state`, which the engine checkpoints without knowing them.
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest
import torch
from torch import nn

import bench.methods
from bench.methods import Method, hparam, proximal_term, register
from conftest import assert_resume_is_exact, tiny_config


class FedBN(Method):
    """FedBN: BatchNorm layers (affine and running statistics) stay personal."""

    name = "fedbn_test"

    def personal_layers(self, fed):
        norms = {n for n, m in fed.model.named_modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)}
        return fed.layout.layers_where(lambda key: key.rsplit(".", 1)[0] in norms)


class Scaffold(Method):
    """SCAFFOLD (option II): local gradients corrected by c - c_i; control variates aggregated."""

    name = "scaffold_test"

    def setup(self, fed):
        fed.server["c"] = torch.zeros_like(fed.global_state)
        for client in fed.clients:
            client.state["c"] = torch.zeros_like(fed.global_state)

    def train(self, fed, client):
        correction = fed.layout.views(fed.server["c"] - client.state["c"])
        params = dict(fed.model.named_parameters())

        def correct():
            for key, p in params.items():
                p.grad.add_(correction[key])

        return fed.fit(client, before_step=correct)

    def upload(self, fed, client, fit):
        update = super().upload(fed, client, fit)
        lr = fed.config["train"]["lr"]
        new_c = client.state["c"] - fed.server["c"] + (fed.global_state - fed.uploads[client.id]) / (fit.steps * lr)
        update.extra["delta_c"] = new_c - client.state["c"]
        client.state["c"] = new_c
        return update

    def aggregate(self, fed, updates):
        fed.server["c"] = fed.server["c"] + torch.stack([u.extra["delta_c"] for u in updates.items]).mean(0)
        return updates.states.mean(0)

    def bytes_per_round(self, fed):
        return 2 * super().bytes_per_round(fed)


@dataclass(kw_only=True)
class FedAdam(Method):
    """FedAdam: the mean client state defines a pseudo-gradient for a server-side Adam step."""

    name = "fedadam_test"
    server_lr: float = hparam(0.01, "server learning rate", exclusiveMinimum=0)

    def aggregate(self, fed, updates):
        step = super().aggregate(fed, updates) - fed.global_state
        m = 0.9 * fed.server.get("m", torch.zeros_like(step)) + 0.1 * step
        v = 0.99 * fed.server.get("v", torch.zeros_like(step)) + 0.01 * step**2
        fed.server.update(m=m, v=v)
        return fed.global_state + self.server_lr * m / (v.sqrt() + 1e-3)


@dataclass(kw_only=True)
class Ditto(Method):
    """Ditto: FedAvg for the global model plus a personal model per client, pulled towards it."""

    name = "ditto_test"
    lam: float = hparam(0.1, "weight of the pull towards the global model", minimum=0)

    def train(self, fed, client):
        fit = fed.fit(client)  # the global model's local update, sent to the server
        shared = fed.layout.gather(fed.model)
        fed.layout.scatter(fed.model, client.state.get("ditto", fed.global_state))
        fed.fit(client, extra_loss=proximal_term(fed, self.lam, ~fed.layout.no_layers()), state_key="ditto_optimizer", stream=1)
        client.state["ditto"] = fed.layout.gather(fed.model)
        fed.layout.scatter(fed.model, shared)
        return fit

    def personalized(self, fed):
        return True

    def client_model(self, fed, client):
        fed.layout.scatter(fed.model, client.state.get("ditto", fed.global_state))
        return fed.model


PROTOTYPES = [FedBN, Scaffold, FedAdam, Ditto]


@pytest.fixture(params=PROTOTYPES, ids=lambda cls: cls.name)
def method(request):
    register(request.param)
    yield request.param.name
    bench.methods._REGISTRY.pop(request.param.name, None)


def test_prototype_runs_and_resumes_exactly(method, tmp_path, monkeypatch):
    cfg = tiny_config(method=method, train__rounds=3, train__optimizer="sgd", train__lr=0.05)
    assert_resume_is_exact(cfg, tmp_path, monkeypatch, crash_round=3)


def test_fedbn_keeps_exactly_the_batchnorm_layers_personal():
    from bench.engine.setup import build_experiment

    register(FedBN)
    try:
        exp = build_experiment(tiny_config(method="fedbn_test"), torch.device("cpu"))
    finally:
        bench.methods._REGISTRY.pop("fedbn_test", None)
    personal = [k for k, p in zip(exp.fed.layout.keys, exp.method.personal_layers(exp.fed).tolist()) if p]
    assert personal and all(k.split(".")[-1] in {"weight", "bias", "running_mean", "running_var"} for k in personal)
    assert all(isinstance(exp.fed.model.get_submodule(k.rsplit(".", 1)[0]), nn.BatchNorm2d) for k in personal)
