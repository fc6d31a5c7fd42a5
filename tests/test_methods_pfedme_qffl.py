"""pFedMe (Dinh et al. NeurIPS 2020) and q-FFL (Li et al. ICLR 2020) against hand-computed values,
built with the authors' kit (bench.testing)."""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F

from bench.engine.seeds import derive_seed
from bench.methods.model_copies import PERSONAL_MODEL
from bench.methods.qffl import LOSS_BEFORE
from bench.testing import federation, report, shifted

SGD = {"train__optimizer": "sgd", "train__momentum": 0.0, "train__clip_grad_norm": None}


def first_batch(fed, client):
    """The batch the trainer draws first for this client in round 1 (stream 0)."""
    generator = torch.Generator().manual_seed(derive_seed(fed.config["seed"], 1, client.id, 0))
    order = client.train[torch.randperm(len(client.train), generator=generator)]
    return fed.data.batch(order[: fed.config["train"]["batch_size"]], generator)


def test_pfedme_takes_k_personal_steps_then_moves_the_local_model_towards_them():
    # one batch (a straggler's share 0): theta = K plain SGD steps on CE + (lam/2)||theta - w0||^2 from w0,
    # then w1 = w0 - eta lam (w0 - theta) (Algorithm 1, line 8); w takes theta's BatchNorm statistics
    lam, eta, eta_p, k = 2.0, 0.05, 0.04, 3
    exp = federation("pfedme", train__lr=eta, method__lam=lam, method__personal_lr=eta_p, method__inner_steps=k, **SGD)
    fed, method, client = exp.fed, exp.method, exp.fed.clients[0]
    method.setup(fed)
    fed.round = 1
    method.receive(fed, client)
    w0 = fed.layout.gather(fed.model).clone()
    theta = copy.deepcopy(fed.model).train()
    anchors = [p.detach().clone() for p in fed.model.parameters()]
    x, y = first_batch(fed, client)
    for _ in range(k):
        params = list(theta.parameters())
        loss = F.cross_entropy(theta(x), y) + lam / 2 * sum(((p - a) ** 2).sum() for p, a in zip(params, anchors))
        with torch.no_grad():
            for p, g in zip(params, torch.autograd.grad(loss, params)):
                p -= eta_p * g
    expected_theta = fed.layout.gather(theta)
    fed.straggling = 0.0
    fit = method.train(fed, client)
    fed.straggling = None
    trainable = fed.trainable
    assert fit.steps == 1
    torch.testing.assert_close(client.state[PERSONAL_MODEL], expected_theta, rtol=1e-4, atol=1e-6)
    w1 = fed.layout.gather(fed.model)
    torch.testing.assert_close(w1[trainable], (w0 - eta * lam * (w0 - expected_theta))[trainable], rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(w1[~trainable], expected_theta[~trainable], rtol=1e-4, atol=1e-6)


def test_pfedme_server_mixes_the_mean_local_model_by_beta():
    # beta = 0.5: w + 0.5 * ((3 * 0.2 + 1 * -0.2) / 4 - 0) = w + 0.05
    exp = federation("pfedme", clients=2, method__beta=0.5)
    fed = exp.fed
    new = exp.method.aggregate(fed, report(fed, shifted(fed, [0.2, -0.2]), [3, 1]))
    torch.testing.assert_close(new, fed.global_state + 0.05, rtol=0, atol=1e-6)


def test_qffl_step_by_hand():
    # lr 0.1 -> L = 10; client a moved by -0.02 (Delta w = 0.2 per element), client b by +0.01 (-0.1);
    # F_a = 2, F_b = 0.5, q = 1: Delta = 2 * 0.2 = 0.4 and 0.5 * -0.1 = -0.05 per element;
    # h_a = 0.04 P + 10 * 2, h_b = 0.01 P + 10 * 0.5 over the P trainable elements:
    # w' = w - (0.4 - 0.05) / (0.05 P + 25) on trainable elements; buffers: the weighted mean
    exp = federation("qffl", clients=2, train__lr=0.1, method__q=1.0)
    fed = exp.fed
    new = exp.method.aggregate(fed, report(fed, shifted(fed, [-0.02, 0.01]), [3, 1], extras=[{LOSS_BEFORE: 2.0}, {LOSS_BEFORE: 0.5}]))
    p = int(fed.trainable.sum())
    step = 0.35 / (0.05 * p + 25)
    torch.testing.assert_close(new[fed.trainable], fed.global_state[fed.trainable] - step, rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(new[~fed.trainable], fed.global_state[~fed.trainable] + (3 * -0.02 + 0.01) / 4, rtol=0, atol=1e-6)


def test_qffl_with_q_0_is_the_unweighted_mean():
    exp = federation("qffl", clients=2, method__q=0.0)
    fed = exp.fed
    new = exp.method.aggregate(fed, report(fed, shifted(fed, [0.3, -0.1]), [3, 1], extras=[{LOSS_BEFORE: 5.0}, {LOSS_BEFORE: 0.1}]))
    torch.testing.assert_close(new[fed.trainable], fed.global_state[fed.trainable] + 0.1, rtol=0, atol=1e-6)


def test_qffl_sends_the_received_models_loss_on_the_training_labels():
    exp = federation("qffl", data__label_noise={"rate": 0.3})
    fed, method, client = exp.fed, exp.method, exp.fed.clients[1]
    fed.round, fed.slots = 1, {client.id: 0}
    method.receive(fed, client)
    before = fed.train_loss(client)
    update = method.upload(fed, client, method.train(fed, client))
    assert update.extra[LOSS_BEFORE] == before and before != fed.train_loss(client)
