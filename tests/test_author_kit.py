"""The method author's kit: inner solvers and per-learner optimizers, a client's loss on its
training labels, the client -> server channel, diagnostics keyed by client id, the learning check,
and the test kit itself (bench.testing)."""

from __future__ import annotations

import contextlib
import math

import pandas as pd
import pytest
import torch
import torch.nn.functional as F

from bench.engine.run import RunPaths, execute
from bench.engine.trainer import FitResult, Learner
from bench.methods import Method, register
from bench.testing import federation, play, report, shifted, tiny_config
from bench.testing.conformance import check_learns


def squared_norm(model) -> torch.Tensor:
    return sum((p**2).sum() for p in model.parameters())


def test_an_inner_solver_takes_its_k_steps_on_each_batch_before_the_others_step():
    # both losses are 0.5 ||w||^2 (no forward): each plain SGD step at lr 0.1 multiplies w by 0.9,
    # so after S batches the inner learner (K = 3 steps per batch) holds 0.9^(3S) w0, the outer 0.9^S w0
    exp = federation("fedavg", train__clip_grad_norm=None, train__lr_step=100)
    fed, client = exp.fed, exp.fed.clients[0]
    outer, inner = fed.model, fed.scratch_model("inner")
    fed.layout.scatter(inner, fed.global_state)
    w0 = fed.global_state[fed.trainable].clone()
    calls = []

    def loss_of(name, model):
        def loss(batch):
            assert batch.logits is None and batch.features is None
            calls.append(name)
            return 0.5 * squared_norm(model)
        return loss

    sgd = {"optimizer": "sgd", "momentum": 0.0, "weight_decay": 0.0}  # train.optimizer stays Adam for everything else
    fit = fed.fit_together(client, [
        Learner(outer, loss=loss_of("outer", outer), forward=False, optimizer=sgd, lr=0.1, persist=False),
        Learner(inner, name="inner", loss=loss_of("inner", inner), forward=False, optimizer=sgd, lr=0.1, inner_steps=3, persist=False),
    ])
    steps = fit.steps
    assert steps > 1 and calls == ["inner", "inner", "inner", "outer"] * steps
    torch.testing.assert_close(fed.layout.gather(outer)[fed.trainable], w0 * 0.9**steps, rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(fed.layout.gather(inner)[fed.trainable], w0 * 0.9 ** (3 * steps), rtol=1e-5, atol=1e-7)
    # forward=False: BatchNorm statistics are untouched
    torch.testing.assert_close(fed.layout.gather(outer)[~fed.trainable], fed.global_state[~fed.trainable])
    assert set(fit.losses) == {"model", "inner"}


def test_a_learner_sees_the_inner_solvers_outputs_and_the_configured_optimizer_by_default():
    exp = federation("fedavg")
    fed, client = exp.fed, exp.fed.clients[0]
    inner = fed.scratch_model("inner")
    seen, optimizers = [], {}

    def outer_loss(batch):
        seen.append("inner" in batch.outputs and batch.outputs["inner"][1].shape == batch.logits.shape)
        return F.cross_entropy(batch.logits, batch.y)

    fed.fit_together(client, [
        Learner(fed.model, loss=outer_loss, before_step=lambda s: optimizers.setdefault("model", type(s.optimizer).__name__), persist=False),
        Learner(inner, name="inner", inner_steps=2, optimizer={"optimizer": "sgd"}, persist=False,
                before_step=lambda s: optimizers.setdefault("inner", type(s.optimizer).__name__)),
    ])
    assert seen and all(seen)
    assert optimizers == {"model": "Adam", "inner": "SGD"}


def test_learner_settings_are_checked():
    model = torch.nn.Linear(2, 2)
    with pytest.raises(TypeError, match="forward=False needs a loss"):
        Learner(model, forward=False)
    with pytest.raises(TypeError, match="optimizer overrides"):
        Learner(model, optimizer={"lr": 0.1})


def test_train_loss_reads_the_training_labels_noise_included():
    exp = federation("fedavg", data__label_noise={"rate": 0.5})
    fed, client = exp.fed, exp.fed.clients[0]
    assert fed.data.flip_rate(client.train) > 0.3
    model = fed.model.eval()
    with torch.no_grad():
        x, true = fed.data.batch(client.train)
        logits = model(x)
    noisy = fed.data.train_labels[client.train]
    assert fed.train_loss(client) == pytest.approx(F.cross_entropy(logits, noisy).item(), rel=1e-5)
    assert fed.train_loss(client) != pytest.approx(F.cross_entropy(logits, true).item(), rel=1e-3)


def test_the_default_upload_carries_the_fits_extra_to_the_server():
    exp = federation("fedavg")
    fed, client = exp.fed, exp.fed.clients[1]
    fed.slots = {client.id: 0}
    update = exp.method.upload(fed, client, FitResult(steps=1, samples=1, loss=0.5, extra={"loss_before": 2.0}))
    assert update.extra == {"loss_before": 2.0}
    torch.testing.assert_close(fed.uploads[0], fed.layout.gather(fed.model))


@contextlib.contextmanager
def registered(cls: type[Method]):
    """`cls` in the registry for the test only: registered at import, a test method would join every
    registry-driven test collected after this module (the conformance suite)."""
    import bench.methods

    register(cls)
    try:
        yield
    finally:
        bench.methods._REGISTRY.pop(cls.name, None)


class RecordsReporters(Method):
    """Records each reporting client's id on the client axis (a test method)."""

    name = "records_reporters_test"

    def aggregate(self, fed, updates):
        fed.record("reporter_id", torch.tensor(updates.clients, dtype=torch.float32), ("client",), clients=updates.clients)
        return super().aggregate(fed, updates)


def test_a_client_axis_is_keyed_by_client_id_under_partial_participation(tmp_path):
    with registered(RecordsReporters):
        cfg = tiny_config(method="records_reporters_test", partition__clients=10, partition__min_samples=8, train__participation=0.3, train__rounds=3)
        execute(cfg, tmp_path, show_progress=False)
        diagnostics = pd.read_parquet(RunPaths(tmp_path).diagnostics)
    rows = diagnostics[diagnostics["name"] == "reporter_id"]
    reported = diagnostics[(diagnostics["name"] == "participation/reported") & (diagnostics["value"] == 1)]
    assert len(rows) == 3 * 3  # 3 of 10 clients in each of 3 rounds
    assert (rows["client"].astype(float) == rows["value"]).all()  # each value sits at its own client id
    assert set(map(tuple, rows[["round", "client"]].astype(int).to_numpy())) == set(map(tuple, reported[["round", "client"]].astype(int).to_numpy()))
    assert set(rows["client"]) - set(range(3))  # not positions 0..2


def test_a_client_axis_over_some_clients_needs_their_ids():
    fed = federation("fedavg", clients=4).fed
    with pytest.raises(ValueError, match="pass clients="):
        fed.record("x", torch.zeros(2), ("client",))
    fed.record("x", torch.zeros(2), ("client",), clients=[1, 3])
    assert fed.diagnostics[-1]["clients"] == [1, 3]


class Frozen(Method):
    """Never moves the global model (a broken method for the learning check)."""

    name = "frozen_test"

    def aggregate(self, fed, updates):
        return fed.global_state


def test_the_learning_check_fails_a_method_that_does_not_learn_and_passes_fedavg(tmp_path):
    with registered(Frozen):
        with pytest.raises(AssertionError, match="does not learn the easy synthetic task"):
            check_learns("frozen_test", tmp_path / "frozen")
        Frozen.not_learning = "a test method"
        assert check_learns("frozen_test", tmp_path / "marked").startswith("not expected to learn here: a test method")
    assert "balanced accuracy" in check_learns("fedavg", tmp_path / "fedavg")


def test_the_kit_reports_given_states_sizes_and_extras():
    exp = federation("fedavg", clients=4)
    fed = exp.fed
    updates = report(fed, shifted(fed, [0.4, -0.2]), [3, 1], clients=[3, 0], extras=[{"a": 1}, {"a": 2}])
    assert updates.clients == [3, 0] and fed.slots == {3: 0, 0: 1} and [u.extra["a"] for u in updates.items] == [1, 2]
    # FedAvg: (3 * 0.4 + 1 * -0.2) / 4 = 0.25 on every element
    torch.testing.assert_close(exp.method.aggregate(fed, updates), fed.global_state + 0.25, rtol=0, atol=1e-6)
    with pytest.raises(ValueError, match="one of each per client"):
        report(fed, shifted(fed, [0.1]), [1, 2])
    rows = play(exp, rounds=2)
    assert exp.fed.round == 2 and any(r["scope"] == "global" and math.isfinite(r["value"]) for r in rows)


def test_the_readme_method_table_is_generated_from_the_registry():
    from bench.method_table import readme_block
    from bench.methods import registry
    from conftest import REPO

    readme = (REPO / "README.md").read_text()
    assert readme_block() in readme, "run: python -m bench.method_table README.md"
    assert all(f"| `{name}` |" in readme for name, cls in registry().items() if cls.__module__.startswith("bench.methods."))


def test_the_readme_test_kit_example_computes_what_its_comment_says():
    import re

    from conftest import REPO

    code = re.search(r"\*\*Tests\.\*\*.*?```python\n(.*?)```", (REPO / "README.md").read_text(), re.S).group(1)
    scope: dict = {}
    exec(compile(code, "README.md", "exec"), scope)
    fed, new = scope["fed"], scope["new"]
    torch.testing.assert_close(new[fed.trainable], fed.global_state[fed.trainable] + 0.02, rtol=0, atol=1e-6)
