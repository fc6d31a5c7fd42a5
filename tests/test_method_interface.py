"""Interface v2: what the engine offers methods (participation, lock-step training, frozen
modules, per-client results, extra and per-client models, public data, scalar diagnostics,
restorable state, hyper-parameters with caches and lists), each against a small test method
registered for the test; the engine knows none of them by name."""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass

import pandas as pd
import pytest
import torch
import yaml
from torch import nn

import bench.methods
from bench.engine.participation import clients_per_round, draw_round
from bench.engine.run import Progress, RunPaths, execute, play_round
from bench.engine.setup import build_experiment
from bench.engine.trainer import Learner, batches_per_epoch
from bench.errors import UserError
from bench.methods import Method, hparam, make_method, register, resolve_method_config
from bench.workflow import deep_merge
from conftest import REPO, assert_resume_is_exact, tiny_config

CPU = torch.device("cpu")


def registered(cls):
    """A fixture registering the test method `cls` for the duration of a test."""

    @pytest.fixture
    def fixture():
        register(cls)
        yield
        bench.methods._REGISTRY.pop(cls.name, None)

    return fixture


def diagnostics_of(path) -> pd.DataFrame:
    return pd.read_parquet(RunPaths(path).diagnostics)


def metrics_of(path) -> pd.DataFrame:
    return pd.read_parquet(RunPaths(path).metrics)


# ---- diagnostics and checkpointable state ------------------------------------------------------
class ScalarDiagnostic(Method):
    """Test method: records one number per round."""

    name = "scalar_test"

    def aggregate(self, fed, updates):
        fed.record("mean_loss", torch.tensor(sum(u.fit.loss for u in updates.items) / len(updates.items)), ())
        return super().aggregate(fed, updates)


with_scalar_diagnostic = registered(ScalarDiagnostic)


def test_a_scalar_diagnostic_is_one_row_per_round(with_scalar_diagnostic, tmp_path):
    execute(tiny_config(method="scalar_test", train__rounds=2), tmp_path / "run", show_progress=False)
    rows = diagnostics_of(tmp_path / "run").query("name == 'mean_loss'")
    assert rows["round"].tolist() == [1, 2] and rows["layer"].isna().all() and rows["client"].isna().all()


class NumpyState(Method):
    """Test method: keeps a NumPy array in client state (a checkpoint cannot restore it)."""

    name = "numpy_test"

    def keep(self, fed, client):
        client.state["seen"] = {"rounds": [fed.round], "array": torch.zeros(2).numpy()}


with_numpy_state = registered(NumpyState)


def test_state_a_checkpoint_cannot_restore_fails_at_the_first_checkpoint_naming_the_key(with_numpy_state, tmp_path):
    with pytest.raises(UserError, match=r"method numpy_test: client 0 state\['seen'\]\['array'\] is a numpy.ndarray.*store a torch tensor") as error:
        execute(tiny_config(method="numpy_test", train__rounds=3), tmp_path / "run", show_progress=False)
    assert "\n" not in str(error.value)


class TrainsAnExtraModelInPlace(Method):
    """Test method: a personal model per run trained in place every round and never stored in
    client state, with cumulative BatchNorm averages (momentum None: num_batches_tracked matters)."""

    name = "extra_model_test"

    def prepare(self, fed):
        for module in fed.extra_model("shadow").modules():
            if isinstance(module, nn.BatchNorm2d):
                module.momentum = None

    def train(self, fed, client):
        fed.fit(client, model=fed.extra_model("shadow"), state_key="shadow", stream=1)
        return super().train(fed, client)

    def personalized(self, fed):
        return True

    def client_model(self, fed, client):
        return fed.extra_model("shadow")


with_trains_an_extra_model_in_place = registered(TrainsAnExtraModelInPlace)


def test_extra_models_are_checkpointed_whole_so_a_resume_is_exact(with_trains_an_extra_model_in_place, tmp_path, monkeypatch):
    assert_resume_is_exact(tiny_config(method="extra_model_test", train__rounds=3), tmp_path, monkeypatch, crash_round=3)
    saved = torch.load(RunPaths(tmp_path / "resumed").checkpoint, weights_only=True) if RunPaths(tmp_path / "resumed").checkpoint.exists() else None
    assert saved is None  # removed once completed


# ---- hyper-parameters -------------------------------------------------------------------------
@dataclass(kw_only=True)
class WithCacheAndList(Method):
    """Test method: a list hyper-parameter and a cache field rebuilt by prepare()."""

    name = "cache_list_test"
    widths: list = hparam([4, 8], "a list of widths", items={"type": "integer", "minimum": 1})
    names: list = hparam(["a", "b"], "a list of names")
    table: dict = dataclasses.field(default_factory=dict, init=False, repr=False)

    def prepare(self, fed):
        self.table = {"layers": fed.layout.layers}


with_with_cache_and_list = registered(WithCacheAndList)


def test_list_hyper_parameters_have_item_schemas_and_caches_are_not_hyper_parameters(with_with_cache_and_list, tmp_path):
    schema = WithCacheAndList.hparam_schema()
    assert schema["properties"]["widths"] == {"type": "array", "items": {"type": "integer", "minimum": 1}, "default": [4, 8], "description": "a list of widths"}
    assert schema["properties"]["names"]["items"] == {"type": "string"} and "table" not in schema["properties"]
    assert resolve_method_config({"name": "cache_list_test"}) == {"name": "cache_list_test", "widths": [4, 8], "names": ["a", "b"]}
    with pytest.raises(UserError, match=r"config key 'method.widths.1'"):
        resolve_method_config({"name": "cache_list_test", "widths": [4, 0]})
    method = make_method(resolve_method_config({"name": "cache_list_test", "widths": [2, 3, 5]}))
    assert method.widths == (2, 3, 5) and method.config() == {"name": "cache_list_test", "widths": [2, 3, 5], "names": ["a", "b"]}
    record = execute(tiny_config(method="cache_list_test", train__rounds=1), tmp_path / "run", show_progress=False)
    assert record["status"] == "completed" and record["method"]["widths"] == [4, 8]


# ---- participation ----------------------------------------------------------------------------
def test_clients_per_round_is_a_fraction_or_a_count():
    assert [clients_per_round(f, 10) for f in (1.0, 0.3, 0.01, 0.55)] == [10, 3, 1, 6]
    assert clients_per_round(4, 10) == 4
    with pytest.raises(UserError, match=r"config key 'train.participation': 12 clients per round, but the partition has 10"):
        clients_per_round(12, 10)


def test_the_round_plan_depends_only_on_the_seed_and_round():
    train = {"participation": 0.4, "dropout": 0.3, "stragglers": 0.5}
    first = [draw_round(train, 7, r, 10) for r in range(1, 30)]
    assert first == [draw_round(train, 7, r, 10) for r in range(1, 30)]
    assert first != [draw_round(train, 8, r, 10) for r in range(1, 30)]
    assert all(len(p.sampled) == 4 and p.dropped <= set(p.sampled) for p in first)
    assert all(set(p.work) <= set(p.sampled) - p.dropped and all(0 <= w < 1 for w in p.work.values()) for p in first)
    # the dropout rate does not move who is sampled
    assert [p.sampled for p in first] == [draw_round({**train, "dropout": 0.0}, 7, r, 10).sampled for r in range(1, 30)]
    # across rounds the rates come out as asked (29 rounds x 4 clients)
    assert 0.15 < sum(len(p.dropped) for p in first) / (29 * 4) < 0.45


PARTIAL = {"partition__clients": 6, "partition__min_samples": 8, "train__participation": 0.5, "train__dropout": 0.3, "train__stragglers": 0.5, "train__rounds": 4}


def test_only_reporting_participants_train_and_their_bytes_are_counted(tmp_path):
    record = execute(tiny_config(method="fedavg", **PARTIAL), tmp_path / "run", show_progress=False)
    diag = diagnostics_of(tmp_path / "run").pivot_table(index=["round", "client"], columns="name", values="value")
    assert (diag["participation/took_part"].groupby("round").sum() == 3).all()
    assert ((diag["participation/reported"] <= diag["participation/took_part"])).all()
    assert (diag["participation/steps"][diag["participation/reported"] == 0] == 0).all()
    metrics = metrics_of(tmp_path / "run")
    comm = metrics[metrics["scope"] == "comm"].pivot(index="round", columns="metric", values="value")
    state = record["model"]["state_bytes"]
    took_part, reported = (diag[f"participation/{k}"].groupby("round").sum() for k in ("took_part", "reported"))
    assert (comm["bytes_down"] == took_part * state).all() and (comm["bytes_up"] == reported * state).all()
    assert reported.lt(took_part).any(), "some sampled client should have dropped out in 4 rounds at p = 0.3"


def test_stragglers_make_fewer_steps_and_participation_is_paired_across_methods(tmp_path):
    execute(tiny_config(method="fedavg", **PARTIAL), tmp_path / "a", show_progress=False)
    execute(tiny_config(method="fedlsc", **PARTIAL), tmp_path / "b", show_progress=False)
    a, b = (diagnostics_of(tmp_path / d).query("name.str.startswith('participation/')")[["round", "name", "client", "value"]] for d in "ab")
    for name in ("participation/took_part", "participation/reported"):
        pd.testing.assert_frame_equal(a[a["name"] == name].reset_index(drop=True), b[b["name"] == name].reset_index(drop=True))
    cfg = tiny_config(method="fedavg", **PARTIAL)
    clients = build_experiment(cfg, CPU).fed.clients
    steps = a[a["name"] == "participation/steps"].set_index(["round", "client"])["value"]
    stragglers = 0
    for r in range(1, 5):
        plan = draw_round(cfg["train"], cfg["seed"], r, len(clients))
        for c in set(plan.sampled) - plan.dropped:
            full = batches_per_epoch(len(clients[c].train), cfg["train"]["batch_size"])
            expected = 1 + math.floor(plan.work[c] * (full - 1)) if c in plan.work else full
            assert steps[r, c] == expected
            stragglers += c in plan.work and expected < full
    assert stragglers, "some straggler should have done less than its full work in 4 rounds at p = 0.5"


@dataclass(kw_only=True)
class OnlyFirstClient(Method):
    """Test method: overrides who takes part (always client 0 alone)."""

    name = "first_only_test"

    def select_clients(self, fed, sampled):
        return [fed.clients[0]]


with_only_first_client = registered(OnlyFirstClient)


def test_a_method_can_choose_who_takes_part(with_only_first_client, tmp_path):
    execute(tiny_config(method="first_only_test", train__rounds=2), tmp_path / "run", show_progress=False)
    train = metrics_of(tmp_path / "run").query("scope == 'train'")
    assert set(train["client"]) == {0}


# ---- local training -------------------------------------------------------------------------
def test_lock_step_learners_see_the_same_batches_with_their_own_losses_and_optimizers():
    exp = build_experiment(tiny_config(train__optimizer="sgd", train__lr=0.1, train__local_epochs=2), CPU)
    fed = exp.fed
    fed.round = 1
    seen: dict[str, list] = {"a": [], "b": []}
    lrs, epochs = [], []

    def recorder(name, scale):
        def loss(batch):
            seen[name].append(batch.index.tolist())
            assert set(batch.outputs) == {"a", "b"} and batch.logits is batch.outputs[name][1]
            return scale * nn.functional.cross_entropy(batch.logits, batch.y)
        return loss

    second = fed.make_model()
    learners = [Learner(fed.model, name="a", loss=recorder("a", 1.0), before_step=lambda step: lrs.append(step.lr)),
                Learner(second, name="b", loss=recorder("b", 0.0), lr=0.5)]
    before = [p.clone() for p in second.parameters()]
    fit = fed.fit_together(fed.clients[0], learners, on_epoch=epochs.append)
    assert seen["a"] == seen["b"] and len(seen["a"]) == fit.steps > 0
    assert epochs == [0, 1] and lrs == [0.1] * fit.steps and fit.lr_sum == pytest.approx(0.1 * fit.steps)
    assert set(fit.losses) == {"a", "b"} and fit.losses["b"] == 0.0
    # a zero loss moves no weight of the second model (its own optimizer, nothing leaks from the first)
    assert all(torch.equal(p, q) for p, q in zip(before, second.parameters()))


def test_frozen_modules_get_no_gradients_and_keep_their_batchnorm_statistics():
    exp = build_experiment(tiny_config(), CPU)
    fed = exp.fed
    fed.round = 1
    body = {k: v.clone() for k, v in fed.model.body.state_dict().items()}
    head = fed.model.head.weight.clone()
    fed.fit(fed.clients[0], frozen=[fed.model.body])
    assert all(torch.equal(body[k], v) for k, v in fed.model.body.state_dict().items())  # weights and running statistics
    assert not torch.equal(head, fed.model.head.weight)
    assert all(p.requires_grad for p in fed.model.parameters())  # restored after the fit


def test_a_method_can_train_on_other_indices_such_as_the_public_split():
    exp = build_experiment(tiny_config(data__public_fraction=0.25), CPU)
    fed = exp.fed
    fed.round = 1
    used = []
    fed.fit(fed.clients[0], indices=fed.public, extra_loss=lambda batch: used.append(batch.index) or torch.zeros(()))
    assert set(torch.cat(used).tolist()) == set(fed.public.tolist())


def test_the_public_split_belongs_to_no_client_and_is_the_same_for_every_seed(tmp_path):
    exps = [build_experiment(tiny_config(data__public_fraction=0.2, seed=s), CPU) for s in (0, 1)]
    for exp in exps:
        clients = torch.cat([torch.cat([c.train, c.test]) for c in exp.fed.clients])
        public = set(exp.fed.public.tolist())
        assert public and not public & set(clients.tolist()) and not public & set(exp.test_index.tolist())
    assert torch.equal(exps[0].fed.public, exps[1].fed.public)
    record = execute(tiny_config(data__public_fraction=0.2, train__rounds=1), tmp_path / "run", show_progress=False)
    assert record["data"]["public"] == len(exps[0].fed.public)


def test_the_paper_recipe_keeps_the_learning_rate_at_1e_4_in_round_50():
    """configs/paper.yaml's local training (fresh Adam and StepLR every round, as the FedLSC
    reference code): the rate at round 50 is the initial 1e-4; a persisted StepLR would be at 1e-8."""
    paper = yaml.safe_load((REPO / "configs" / "paper.yaml").read_text())
    train = deep_merge({"rounds": 50, "batch_size": 64}, {k: v for k, v in paper["base"]["train"].items() if k != "batch_size"})
    for persist, expected in ((False, 1e-4), (True, 1e-4 * 0.1 ** ((49 * train["local_epochs"]) // 10))):
        exp = build_experiment(tiny_config(train=train, train__persist_optimizer=persist, train__lr=1e-4), CPU)
        fed, client, seen = exp.fed, exp.fed.clients[0], []
        for r in range(1, 51):
            fed.round = r
            fed.fit(client, before_step=lambda step: seen.append(step.lr) if fed.round == 50 else None)
        assert seen and all(lr == pytest.approx(expected, rel=1e-9) for lr in seen), (persist, seen[:3])


# ---- models -----------------------------------------------------------------------------------
class Encoded(nn.Module):
    """A composite: a private encoder in front of the configured model's body."""

    def __init__(self, base, channels):
        super().__init__()
        self.encoder = nn.Conv2d(channels, channels, 1)
        self.inner = base.body

    def forward(self, x):
        return self.inner(x + self.encoder(x))


class CompositePersonalEncoder(Method):
    """Test method: builds a composite model whose encoder layers are personal."""

    name = "composite_test"

    def model(self, base, spec):
        base.body = Encoded(base, spec.channels)
        return base

    def personal_layers(self, fed):
        return fed.layout.layers_where(lambda key: key.startswith("body.encoder."))


with_composite_personal_encoder = registered(CompositePersonalEncoder)


def test_a_method_builds_a_composite_model_whose_encoder_stays_personal(with_composite_personal_encoder, tmp_path):
    record = execute(tiny_config(method="composite_test", train__rounds=2), tmp_path / "run", show_progress=False)
    plain = build_experiment(tiny_config(), CPU).fed.layout
    exp = build_experiment(tiny_config(method="composite_test"), CPU)
    assert exp.fed.layout.size > plain.size and "body.encoder.weight" in exp.fed.layout.keys
    encoder = exp.fed.layout.nbytes(exp.method.personal_layers(exp.fed))
    assert record["model"]["state_bytes"] == exp.fed.layout.nbytes()
    sent = metrics_of(tmp_path / "run").query("scope == 'comm' and metric == 'bytes'")["value"]
    assert (sent == 2 * 3 * (exp.fed.layout.nbytes() - encoder)).all()
    assert record["headline_scope"] == "personal"


class TwoArchitectures(Method):
    """Test method: odd clients have a wider small CNN; nobody communicates (local training)."""

    name = "hetero_test"
    has_global_model = False

    def client_architecture(self, client):
        return {"name": "small_cnn", "widths": [4, 8, 16]} if client % 2 else None

    def personal_layers(self, fed):
        return ~fed.layout.no_layers()

    def upload(self, fed, client, fit):
        client.state["own"] = fed.layout_of(client).gather(fed.model_of(client))
        return bench.engine.federation.Update(client.id, client.num_samples, fit)

    def keep(self, fed, client):
        pass

    def receive(self, fed, client):
        fed.layout_of(client).scatter(fed.model_of(client), client.state.get("own", self.start_state(fed, client)))

    def aggregate(self, fed, updates):
        return fed.global_state

    def download_bytes(self, fed, client):
        return 0

    def upload_bytes(self, fed, client, update):
        return 0


with_two_architectures = registered(TwoArchitectures)


def test_clients_can_have_their_own_architectures_and_the_record_says_so(with_two_architectures, tmp_path, monkeypatch):
    record = assert_resume_is_exact(tiny_config(method="hetero_test", train__rounds=3), tmp_path, monkeypatch, crash_round=2)
    archs = record["model"]["architectures"]
    assert set(archs) == {"main", "small_cnn"} and archs["small_cnn"]["clients"] == [1] and archs["main"]["clients"] == [0, 2]
    assert archs["small_cnn"]["parameters"] != archs["main"]["parameters"]
    exp = build_experiment(tiny_config(method="hetero_test"), CPU)
    assert exp.fed.model_of(exp.fed.clients[1]) is not exp.fed.model and exp.fed.model_of(exp.fed.clients[2]) is exp.fed.model


class PerClientModels(Method):
    """Test method: the server hands client i the mean of the others' states (per-client aggregation)."""

    name = "per_client_test"

    def aggregate(self, fed, updates):
        total = updates.states.sum(0)
        for row, client in enumerate(updates.clients):
            fed.to_clients[client] = (total - updates.states[row]) / (len(updates.items) - 1)
        return self.weighted_mean(updates)


with_per_client_models = registered(PerClientModels)


def test_the_server_can_hand_each_client_its_own_model(with_per_client_models, tmp_path, monkeypatch):
    exp = build_experiment(tiny_config(method="per_client_test"), CPU)
    exp.fed.round = 1
    play_round(exp, Progress())
    fed, method = exp.fed, exp.method
    states = fed.uploads[:3].clone()
    for i, client in enumerate(fed.clients):
        expected = (states.sum(0) - states[i]) / 2
        torch.testing.assert_close(fed.layout.gather(method.client_model(fed, client)), expected)
    assert method.personalized(fed)
    record = assert_resume_is_exact(tiny_config(method="per_client_test", train__rounds=3), tmp_path, monkeypatch, crash_round=3)
    assert record["headline_scope"] == "personal"


def test_buffers_are_flagged_in_the_trainable_mask():
    fed = build_experiment(tiny_config(), CPU).fed
    views = fed.layout.views(fed.trainable)
    assert views["body.0.weight"].all() and views["head.bias"].all()
    assert not views["body.1.running_mean"].any() and not views["body.1.running_var"].any()
    assert fed.trainable.device == fed.device and fed.trainable.sum() == sum(p.numel() for p in fed.model.parameters())


def test_a_method_instance_holds_no_state_between_runs_of_the_registry():
    """Every registered method's hyper-parameters survive a JSON round trip (what a job receives)."""
    for name, cls in bench.methods.registry().items():
        section = resolve_method_config({"name": name})
        assert resolve_method_config(json.loads(json.dumps(section))) == section


class FitsAtEvaluation(Method):
    """Test method: fine-tunes a scratch copy of the global model at evaluation, keeping nothing."""

    name = "eval_fit_test"

    def personalized(self, fed):
        return True

    def client_model(self, fed, client):
        model = fed.scratch_model("tuned")
        fed.layout.scatter(model, fed.global_state)
        fit = fed.fit(client, model=model, persist=False, stream=7)
        client.state.setdefault("eval_steps", []).append(fit.steps)
        return model


with_fits_at_evaluation = registered(FitsAtEvaluation)


def test_a_straggler_cuts_only_its_training_short_and_evaluation_fits_keep_no_optimizer(with_fits_at_evaluation):
    exp = build_experiment(tiny_config(method="eval_fit_test", train__stragglers=1.0, train__persist_optimizer=True), CPU)
    fed = exp.fed
    fed.round = 1
    progress = Progress()
    play_round(exp, progress)
    full = [batches_per_epoch(len(c.train), fed.config["train"]["batch_size"]) for c in fed.clients]
    trained = [d["values"] for d in fed.diagnostics if d["name"] == "participation/steps"][0].tolist()
    assert all(t < f for t, f in zip(trained, full))  # every client straggled in training
    assert [c.state["eval_steps"][-1] for c in fed.clients] == full  # ...but not at evaluation
    assert all("optimizer" in c.state for c in fed.clients)  # training's optimizer persisted
    assert "main/tuned" in fed.scratch and "main/tuned" not in fed.models  # scratch models are not checkpointed
