"""MOON, FedRep, FedBABU, Ditto, APFL and FedRoD: each update equation against hand-computed
values (small tensors, the numbers worked out in comments) and each method's behaviour on a real
tiny federation: what stays personal, what is sent, what each client is evaluated on."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch
import torch.nn.functional as F

from bench.engine.participation import RoundPlan
from bench.engine.run import Progress, play_round
from bench.engine.setup import build_experiment
from bench.engine.trainer import Batch
from bench.methods.apfl import ALPHA, alpha_gradient, mixture_loss
from bench.methods.fedrod import balanced_softmax_loss, class_log_prior
from bench.methods.model_copies import PERSONAL_MODEL
from bench.methods.moon import PREVIOUS_MODEL, ProjectedEncoder, model_contrastive_loss
from conftest import tiny_config

CPU = torch.device("cpu")
# plain SGD steps v - eta grad, no clipping; one step per epoch with a batch larger than any client's split
SGD = {"train__optimizer": "sgd", "train__momentum": 0.0, "train__clip_grad_norm": None}
ONE_SGD_STEP = {**SGD, "train__batch_size": 512}


def experiment(method: str, **overrides):
    """A tiny federation before round 1, its method set up as a fresh run would be."""
    exp = build_experiment(tiny_config(method=method, **overrides), CPU)
    exp.method.setup(exp.fed)
    exp.method.prepare(exp.fed)
    exp.fed.round = 1
    return exp


def round_bytes(exp) -> int:
    """Download + upload bytes of a round in which every client takes part and reports."""
    fed, method = exp.fed, exp.method
    return sum(method.download_bytes(fed, c) + method.upload_bytes(fed, c, None) for c in fed.clients)


def keys_bytes(fed, prefix: str) -> int:
    return fed.layout.nbytes(fed.layout.layers_where(lambda key: key.startswith(prefix)))


def batch_of(fed, client, model, size: int = 8) -> Batch:
    """A training batch of the client's first samples through `model` (train mode)."""
    index = client.train[:size]
    x, y = fed.data.batch(index)
    model.train()
    features = model.body(x)
    logits = model.head(features)
    return Batch(x, y, index, features, logits, {"model": (features, logits)}, epoch=0, step=0)


def play_rounds(exp, rounds: int) -> None:
    for r in range(1, rounds + 1):
        exp.fed.round = r
        play_round(exp, Progress())


def trainable_mask(fed) -> torch.Tensor:
    return fed.trainable.float()


# ---- MOON ---------------------------------------------------------------------------------------
def test_moon_contrastive_loss_by_hand():
    z = torch.tensor([[1.0, 0.0], [1.0, 1.0]])
    z_glob = torch.tensor([[1.0, 0.0], [1.0, 0.0]])
    z_prev = torch.tensor([[0.0, 1.0], [1.0, 1.0]])
    # sample 1: sim(z, z_glob) = 1, sim(z, z_prev) = 0:       -log(e^2 / (e^2 + e^0))   = log(1 + e^-2)       = 0.126928
    # sample 2: sim(z, z_glob) = 1/sqrt 2 = 0.707107, sim(z, z_prev) = 1:
    #           -log(e^1.414214 / (e^1.414214 + e^2))      = log(1 + e^0.585786) = log(2.796447) = 1.028334
    # mean: (0.126928 + 1.028334) / 2 = 0.577631
    assert model_contrastive_loss(z, z_glob, z_prev, tau=0.5).item() == pytest.approx(0.577631, abs=1e-6)
    # the reference code's form: cross-entropy of [sim_glob, sim_prev] / tau with label 0
    logits = torch.stack([F.cosine_similarity(z, z_glob), F.cosine_similarity(z, z_prev)], 1) / 0.5
    torch.testing.assert_close(model_contrastive_loss(z, z_glob, z_prev, 0.5), F.cross_entropy(logits, torch.zeros(2, dtype=torch.long)))


def test_moon_projection_head_feeds_the_classifier_and_is_aggregated():
    exp = experiment("moon")
    fed, method = exp.fed, exp.method
    body = fed.model.body
    assert isinstance(body, ProjectedEncoder)
    assert [m.__class__.__name__ for m in body.projection] == ["Linear", "ReLU", "Linear"]
    assert (body.projection[0].in_features, body.projection[0].out_features, body.projection[2].out_features) == (16, 16, 256)
    assert fed.model.head.in_features == 256 and fed.model.head.out_features == 4
    assert fed.model.body(fed.data.batch(fed.clients[0].train[:2])[0]).shape == (2, 256)
    assert "body.projection.0.weight" in fed.layout.keys and method.aggregated_layers(fed).all()
    assert round_bytes(exp) == 2 * 3 * fed.layout.nbytes() and not method.personalized(fed)
    plain = experiment("moon", method__projection=False).fed
    assert plain.layout.keys == experiment("fedavg").fed.layout.keys


def test_moon_has_no_contrastive_term_before_a_client_has_a_previous_model():
    exp = experiment("moon")
    fed, method = exp.fed, exp.method
    assert all(method.local_loss(fed, c) is None for c in fed.clients)  # round 1: no negatives, l_con = 0 (reference code)
    play_rounds(exp, 1)
    for i, client in enumerate(fed.clients):
        torch.testing.assert_close(client.state[PREVIOUS_MODEL], fed.uploads[i])  # the state it uploaded, kept whole
    assert dataclasses.replace(method, mu=0.0).local_loss(fed, fed.clients[0]) is None  # mu = 0: no term at all


def test_moon_term_runs_frozen_global_and_previous_models():
    exp = experiment("moon", method__mu=2.0)
    fed, method = exp.fed, exp.method
    client = fed.clients[0]
    # previous model = this round's global model: sim(z, z_prev) = sim(z, z_glob) for every sample,
    # so l_con = log(1 + e^0) = log 2 whatever z is, and the term is mu log 2 = 1.386294
    client.state[PREVIOUS_MODEL] = fed.global_state.clone()
    method.receive(fed, client)
    term = method.local_loss(fed, client)
    batch = batch_of(fed, client, fed.model)
    assert term(batch).item() == pytest.approx(2 * math.log(2), abs=1e-5)
    # a different previous model: the term's gradient reaches the local model only
    client.state[PREVIOUS_MODEL] = fed.global_state + 0.3 * trainable_mask(fed)
    term = method.local_loss(fed, client)
    reference, previous = fed.scratch_model("global"), fed.scratch_model("previous")
    statistics = [m.body.encoder[1].running_mean.clone() for m in (reference, previous)]
    term(batch_of(fed, client, fed.model)).backward()
    assert fed.model.body.projection[0].weight.grad.abs().sum() > 0
    assert all(p.grad is None for m in (reference, previous) for p in m.parameters())
    assert not reference.training and not previous.training  # eval mode: BatchNorm statistics untouched
    assert all(torch.equal(s, m.body.encoder[1].running_mean) for s, m in zip(statistics, (reference, previous)))
    torch.testing.assert_close(fed.layout.gather(previous), client.state[PREVIOUS_MODEL])
    torch.testing.assert_close(fed.layout.gather(reference), fed.global_state)


# ---- FedRep -------------------------------------------------------------------------------------
def test_fedrep_trains_the_head_with_the_body_frozen_then_the_body_with_the_head_frozen(monkeypatch):
    exp = experiment("fedrep", method__head_epochs=3)
    fed, method, client = exp.fed, exp.method, exp.fed.clients[0]
    body, head = fed.model.body, fed.model.head
    stages = []
    real_fit = fed.trainer.fit

    def spy(client, round, learners, **options):
        before = {"body": fed.layout.select(fed.layout.gather(fed.model), ~fed.classifier_layers),
                  "head": fed.layout.select(fed.layout.gather(fed.model), fed.classifier_layers)}
        fit = real_fit(client, round, learners, **options)
        after = fed.layout.gather(fed.model)
        moved = {"body": not torch.equal(before["body"], fed.layout.select(after, ~fed.classifier_layers)),
                 "head": not torch.equal(before["head"], fed.layout.select(after, fed.classifier_layers))}
        stages.append({"epochs": options["epochs"], "stream": options["stream"], "frozen": list(learners[0].frozen), "moved": moved})
        return fit

    monkeypatch.setattr(fed.trainer, "fit", spy)
    method.receive(fed, client)
    method.train(fed, client)
    head_stage, body_stage = stages
    assert head_stage["epochs"] == 3 and head_stage["stream"] == 1 and head_stage["frozen"] == [body]
    assert head_stage["moved"] == {"body": False, "head": True}  # BatchNorm statistics included
    # train.local_epochs on FedAvg's batches
    assert body_stage["epochs"] is None and body_stage["stream"] == 0 and body_stage["frozen"] == [head]
    assert body_stage["moved"] == {"body": True, "head": False}


def test_fedrep_keeps_heads_personal_and_sends_only_the_body():
    exp = experiment("fedrep", method__head_epochs=1)
    fed, method = exp.fed, exp.method
    head = fed.layout.expand(fed.classifier_layers)
    initial = fed.global_state.clone()
    play_rounds(exp, 1)
    torch.testing.assert_close(fed.global_state[head], initial[head])  # heads are not aggregated
    uploads = fed.uploads[:3].clone()
    samples = torch.tensor([float(c.num_samples) for c in fed.clients])
    torch.testing.assert_close(fed.global_state[~head], (samples / samples.sum()) @ uploads[:, ~head])  # FedAvg on the body
    for i, client in enumerate(fed.clients):
        model = fed.layout.gather(method.client_model(fed, client))
        torch.testing.assert_close(model[head], uploads[i][head])  # its own head
        torch.testing.assert_close(model[~head], fed.global_state[~head])  # the global body
    assert round_bytes(exp) == 2 * 3 * keys_bytes(fed, "body.") and method.personalized(fed)


# ---- FedBABU ------------------------------------------------------------------------------------
def test_fedbabu_never_trains_or_sends_the_head():
    exp = experiment("fedbabu")
    fed, method = exp.fed, exp.method
    head = fed.layout.expand(fed.classifier_layers)
    initial = fed.global_state.clone()
    play_rounds(exp, 1)
    assert all(torch.equal(row[head], initial[head]) for row in fed.uploads[:3])  # frozen during local training
    assert torch.equal(fed.global_state[head], initial[head]) and not torch.equal(fed.global_state[~head], initial[~head])
    assert round_bytes(exp) == 2 * 3 * keys_bytes(fed, "body.") and method.personalized(fed)


def test_fedbabu_evaluation_fine_tunes_a_scratch_copy_of_the_whole_model_and_keeps_no_state():
    exp = experiment("fedbabu", method__finetune_epochs=2, train__persist_optimizer=True)
    fed, method = exp.fed, exp.method
    play_rounds(exp, 1)
    client = fed.clients[1]
    head = fed.layout.expand(fed.classifier_layers)
    saved = {"global": fed.global_state.clone(), "main": fed.layout.gather(fed.model), "state": dict(client.state)}
    tuned = fed.layout.gather(method.client_model(fed, client))
    assert method.client_model(fed, client) is fed.scratch_model("finetune") and fed.scratch_model("finetune") is not fed.model
    assert not torch.equal(tuned[head], fed.global_state[head]) and not torch.equal(tuned[~head], fed.global_state[~head])  # body and head
    assert torch.equal(fed.layout.gather(method.client_model(fed, client)), tuned)  # deterministic
    assert torch.equal(fed.global_state, saved["global"]) and torch.equal(fed.layout.gather(fed.model), saved["main"])
    assert client.state.keys() == saved["state"].keys() and "finetune_optimizer" not in client.state
    # a straggler of this round still fine-tunes fully at evaluation
    fed.plan = RoundPlan(fed.plan.sampled, fed.plan.dropped, {client.id: 0.0})
    assert torch.equal(fed.layout.gather(method.client_model(fed, client)), tuned)


# ---- Ditto --------------------------------------------------------------------------------------
def personal_after_one_step(lam: float, offset: float):
    """Client 0's v_i after one round of one SGD step (lr 0.1), starting from w^0 + offset."""
    exp = experiment("ditto", method__lam=lam, train__lr=0.1, **ONE_SGD_STEP)
    fed, client = exp.fed, exp.fed.clients[0]
    client.state[PERSONAL_MODEL] = fed.global_state + offset * trainable_mask(fed)
    exp.method.receive(fed, client)
    exp.method.train(fed, client)
    return fed, client.state[PERSONAL_MODEL]


def test_ditto_personal_step_adds_lambda_times_the_distance_to_the_global_model():
    # v' = v - eta (grad F(v) + lam (v - w^t)); with v - w^t = 0.5 on every trainable element, the
    # same v and the same batch, v'(lam = 2) - v'(lam = 0) = -0.1 * 2 * 0.5 = -0.1 there, 0 on buffers
    fed, with_term = personal_after_one_step(2.0, 0.5)
    _, without = personal_after_one_step(0.0, 0.5)
    difference = with_term - without
    torch.testing.assert_close(difference[fed.trainable], torch.full_like(difference[fed.trainable], -0.1), atol=2e-6, rtol=0)
    torch.testing.assert_close(difference[~fed.trainable], torch.zeros_like(difference[~fed.trainable]))


def test_ditto_global_model_is_fedavgs():
    ditto, fedavg = experiment("ditto"), experiment("fedavg")
    for exp in (ditto, fedavg):
        play_rounds(exp, 1)
    assert torch.equal(ditto.fed.global_state, fedavg.fed.global_state)
    assert ditto.method.global_model(ditto.fed) is ditto.fed.model and ditto.method.personalized(ditto.fed)
    assert round_bytes(ditto) == 2 * 3 * ditto.fed.layout.nbytes()  # w both ways; v_i is never sent


def test_ditto_with_a_huge_lambda_keeps_the_personal_model_at_the_global_one():
    # lam = 1e6, eta = 1e-6: v' = v - eta grad F(v) - (v - w^t) = w^t - 1e-6 grad F(v) at every step
    exp = experiment("ditto", method__lam=1e6, train__lr=1e-6, train__local_epochs=2, **SGD)
    fed, method = exp.fed, exp.method
    start = fed.global_state.clone()
    for client in fed.clients:
        client.state[PERSONAL_MODEL] = start + 1.0 * trainable_mask(fed)  # far from w^t
    play_rounds(exp, 1)
    for client in fed.clients:
        personal = fed.layout.gather(method.client_model(fed, client))
        torch.testing.assert_close(personal[fed.trainable], start[fed.trainable], atol=1e-4, rtol=0)


def test_ditto_personal_models_start_from_the_initial_model():
    exp = experiment("ditto")
    fed, method = exp.fed, exp.method
    start = fed.global_state.clone()
    fed.global_state = start + 1.0  # a later round's global model
    assert torch.equal(fed.layout.gather(method.client_model(fed, fed.clients[2])), start)
    assert PERSONAL_MODEL not in fed.clients[2].state  # evaluation stores nothing


# ---- APFL ---------------------------------------------------------------------------------------
PERSONAL = torch.tensor([[2.0, 0.0], [0.0, 1.0]])
GENERIC = torch.tensor([[0.0, 0.0], [1.0, 0.0]])
LABELS = torch.tensor([0, 1])


def test_apfl_alpha_gradient_by_hand():
    # alpha = 0.5: mixed = [[1, 0], [0.5, 0.5]]
    # sample 1: softmax(1, 0) = (0.731059, 0.268941), y = 0: residual (-0.268941, 0.268941),
    #           personal - generic = (2, 0):   -0.537883
    # sample 2: softmax = (0.5, 0.5), y = 1: residual (0.5, -0.5), personal - generic = (-1, 1):  -1.0
    # mean: -0.768941
    mixed = 0.5 * PERSONAL + 0.5 * GENERIC
    assert alpha_gradient(mixed, LABELS, PERSONAL, GENERIC).item() == pytest.approx(-0.768941, abs=1e-6)
    alpha = torch.tensor(0.5, requires_grad=True)
    F.cross_entropy(alpha * PERSONAL + (1 - alpha) * GENERIC, LABELS).backward()
    assert alpha.grad.item() == pytest.approx(-0.768941, abs=1e-6)  # the exact d CE / d alpha


def apfl_batch(personal: torch.Tensor) -> Batch:
    outputs = {"personal": (None, personal), "global": (None, GENERIC.clone().requires_grad_())}
    return Batch(None, LABELS, None, None, personal, outputs, epoch=0, step=0)


def test_apfl_mixture_loss_trains_the_personal_model_and_steps_alpha():
    personal = PERSONAL.clone().requires_grad_()
    batch = apfl_batch(personal)
    alpha = torch.tensor(0.5)
    loss = mixture_loss(alpha, alpha_lr=0.1)(batch)
    # CE([1, 0], 0) = log(1 + e^-1) = 0.313262; CE([0.5, 0.5], 1) = log 2 = 0.693147; mean 0.503204
    assert loss.item() == pytest.approx(0.503204, abs=1e-6)
    # alpha <- 0.5 - 0.1 * (-0.768941) = 0.576894, for the next step
    assert alpha.item() == pytest.approx(0.576894, abs=1e-6)
    loss.backward()
    # d loss / d personal = alpha (softmax - onehot) / B with the alpha of this step (0.5):
    # sample 1: 0.25 * (-0.268941, 0.268941) = (-0.067235, 0.067235); sample 2: 0.25 * (0.5, -0.5)
    torch.testing.assert_close(personal.grad, torch.tensor([[-0.067235, 0.067235], [0.125, -0.125]]), atol=1e-6, rtol=0)
    assert batch.outputs["global"][1].grad is None  # w is held fixed in the mixture
    high = torch.tensor(0.99)
    mixture_loss(high, alpha_lr=1.0)(apfl_batch(PERSONAL.clone()))
    assert high.item() == 1.0  # 0.99 + 0.768941 clipped to [0, 1]


def test_apfl_round_trains_w_as_fedavg_and_each_client_is_its_mixture():
    apfl, fedavg = experiment("apfl", method__alpha_lr=0.05), experiment("fedavg")
    for exp in (apfl, fedavg):  # in round 1 v_i = w (both start at w^0, Adam takes the same steps): alpha moves from round 2
        play_rounds(exp, 2)
    fed, method = apfl.fed, apfl.method
    torch.testing.assert_close(fed.global_state, fedavg.fed.global_state)  # lock-step leaves w as FedAvg's
    assert round_bytes(apfl) == 2 * 3 * fed.layout.nbytes() and method.personalized(fed)
    client = fed.clients[1]
    alpha = client.state[ALPHA]
    assert alpha.dim() == 0 and alpha.item() != 0.5  # learnt
    x = fed.data.batch(client.test[:5])[0]
    mixture = method.client_model(fed, client).eval()
    with torch.no_grad():
        personal = fed.extra_model("personal")(x)
        generic = fed.model(x)
        torch.testing.assert_close(mixture(x), alpha * personal + (1 - alpha) * generic)
    torch.testing.assert_close(fed.layout.gather(fed.extra_model("personal")), client.state[PERSONAL_MODEL])
    torch.testing.assert_close(fed.layout.gather(fed.model), fed.global_state)
    fixed = experiment("apfl", method__alpha_lr=0.0)
    play_rounds(fixed, 1)
    assert all(c.state[ALPHA].item() == 0.5 for c in fixed.fed.clients)


# ---- FedRoD -------------------------------------------------------------------------------------
def test_balanced_softmax_by_hand():
    log_prior = class_log_prior(torch.tensor([0, 0, 0, 1]), 3)
    # class frequencies (3/4, 1/4, 0): log prior (-0.287682, -1.386294, -inf)
    torch.testing.assert_close(log_prior[:2], torch.tensor([math.log(0.75), math.log(0.25)]))
    assert log_prior[2] == -math.inf
    # zero logits: the loss is -log pi_y; y = (0, 1): (0.287682 + 1.386294) / 2 = 0.836988
    logits = torch.zeros(2, 3, requires_grad=True)
    loss = balanced_softmax_loss(logits, torch.tensor([0, 1]), log_prior)
    assert loss.item() == pytest.approx(0.836988, abs=1e-6)
    loss.backward()
    # d/dlogits = (pi - onehot) / 2 (the shifted softmax is the prior): sample 1 (0.75 - 1, 0.25, 0) / 2
    torch.testing.assert_close(logits.grad, torch.tensor([[-0.125, 0.125, 0.0], [0.375, -0.375, 0.0]]))


def test_fedrod_loss_by_hand_with_zero_heads():
    exp = experiment("fedrod")
    fed, method, client = exp.fed, exp.method, exp.fed.clients[2]
    with torch.no_grad():  # g(z) = p(z) = 0 for every sample
        for p in fed.model.head.parameters():
            p.zero_()
    batch = batch_of(fed, client, fed.model)
    prior = torch.bincount(fed.data.labels[client.train], minlength=4).float() / client.num_samples
    # L_BR = mean_b -log pi_{y_b} (zero logits, as in test_balanced_softmax_by_hand);
    # L_P = CE(0 + 0, y) = log 4 = 1.386294 per sample (4 classes)
    expected = -prior[batch.y].log().mean() + math.log(4)
    assert method.client_loss(fed, client)(batch).item() == pytest.approx(expected.item(), abs=1e-5)


def gradients(model, *parts) -> list[list[torch.Tensor]]:
    """Each part's parameter gradients; then clears them all."""
    grads = [[p.grad.clone() for m in part for p in m.parameters()] for part in parts]
    model.zero_grad(set_to_none=True)
    return grads


def test_fedrod_balanced_loss_trains_body_and_g_head_and_the_personal_loss_only_the_p_head():
    exp = experiment("fedrod")
    fed, method, client = exp.fed, exp.method, exp.fed.clients[2]
    model, heads = fed.model, fed.model.head
    shared = (model.body, heads.generic)
    method.client_loss(fed, client)(batch_of(fed, client, model)).backward()
    got_shared, got_personal = gradients(model, shared, [heads.personal])
    batch = batch_of(fed, client, model)
    balanced_softmax_loss(heads.generic(batch.features), batch.y, class_log_prior(fed.data.labels[client.train], 4)).backward()
    (want_shared,) = gradients(model, shared)
    for got, want in zip(got_shared, want_shared):
        torch.testing.assert_close(got, want)  # nothing of the personal loss reaches f or g
    batch = batch_of(fed, client, model)
    F.cross_entropy(heads.generic(batch.features).detach() + heads.personal(batch.features.detach()), batch.y).backward()
    (want_personal,) = gradients(model, [heads.personal])
    for got, want in zip(got_personal, want_personal):
        torch.testing.assert_close(got, want)


def test_fedrod_generic_model_is_global_personal_is_generic_plus_personal_head():
    exp = experiment("fedrod")
    fed, method = exp.fed, exp.method
    personal = fed.layout.layers_where(lambda key: key.startswith("head.personal."))
    assert torch.equal(method.personal_layers(fed), personal)
    assert torch.equal(fed.model.head.personal.weight, fed.model.head.generic.weight)  # a copy of the G-head's init
    initial = fed.global_state.clone()
    play_rounds(exp, 1)
    in_personal = fed.layout.expand(personal)
    torch.testing.assert_close(fed.global_state[in_personal], initial[in_personal])  # P-heads are not aggregated
    assert round_bytes(exp) == 2 * 3 * (fed.layout.nbytes() - fed.layout.nbytes(personal)) and method.personalized(fed)
    client = fed.clients[0]
    x = fed.data.batch(client.test[:5])[0]
    with torch.no_grad():
        generic = method.global_model(fed).eval()
        z = fed.model.body(x)
        torch.testing.assert_close(generic(x), fed.model.head.generic(z))  # the generic model: g(f(x)) only
        model = method.client_model(fed, client).eval()
        torch.testing.assert_close(fed.layout.gather(model)[in_personal], fed.uploads[0][in_personal])  # its own P-head
        z = model.body(x)
        torch.testing.assert_close(model(x), model.head.generic(z) + model.head.personal(z))
