"""Flower strategies inside fedrank (bench/methods/flower.py), cross-checked against fedrank's own
methods: the numbers agree where the equations agree, and every difference is by design:

| Flower strategy | fedrank method | agree                                  | differences by design                                  |
|-----------------|----------------|----------------------------------------|--------------------------------------------------------|
| FedAvg          | fedavg         | every element (sample-weighted mean)   | none                                                   |
| FedProx         | fedprox        | whole runs (config proximal-mu -> the proximal term) | none                                     |
| FedAvgM         | fedavgm        | trainable elements                     | Flower steps BatchNorm buffers too; fedrank averages them |
| FedAdam         | fedadam        | trainable, with v_0 = 0 and eta x bias correction | v_0 = tau^2 in fedrank (Reddi Alg. 2); Flower bias-corrects eta; buffers |
| FedYogi         | fedyogi        | trainable, with v_0 = 0                | v_0; buffers                                           |
| FedAdagrad      | fedadagrad     | trainable, with v_0 = 0 and beta1 = 0  | v_0; Flower has no first moment (beta_1 = 0); buffers  |
| QFedAvg         | qffl           | every element, when the clients' states differ on trainable elements only | Flower includes buffers in ||Delta w||^2 and the step; fedrank averages buffers |
| FedMedian, FedTrimmedAvg, Krum | (none) | hand-computed values, and they train and rank like any method | - |
"""

from __future__ import annotations

import math

import pytest
import torch

from bench.testing import federation, play, report

pytest.importorskip("flwr", reason="Flower is an optional extra: pip install -e '.[flower]'")

SIZES = [5, 3, 2]


def flower(strategy: str, **kwargs):
    exp = federation("flower", method__strategy=f"flwr.serverapp.strategy:{strategy}", method__kwargs=kwargs)
    exp.method.prepare(exp.fed)
    return exp


def deltas(round: int, size: int) -> torch.Tensor:
    """Each client's update in a round: a fixed random (3, P) draw."""
    return 0.05 * torch.randn(len(SIZES), size, generator=torch.Generator().manual_seed(round))


def aggregate_round(exp, round: int) -> torch.Tensor:
    """Round `round`: every client reports global + its delta; the new global state."""
    fed = exp.fed
    fed.round = round
    if exp.method.name == "flower":
        assert [c.id for c in exp.method.select_clients(fed, fed.clients)] == [0, 1, 2]
    fed.global_state = exp.method.aggregate(fed, report(fed, fed.global_state + deltas(round, fed.layout.size), SIZES))
    return fed.global_state.clone()


def test_flower_fedavg_is_fedranks_fedavg():
    ours, theirs = federation("fedavg"), flower("FedAvg")
    for r in (1, 2):
        torch.testing.assert_close(aggregate_round(theirs, r), aggregate_round(ours, r), rtol=0, atol=1e-6)


def test_flower_fedprox_runs_exactly_as_fedranks_fedprox():
    # its configure_train sends proximal-mu; fedrank's clients add (mu/2)||w - w^t||^2 with it
    ours = federation("fedprox", method__mu=0.5)
    theirs = federation("flower", method__strategy="flwr.serverapp.strategy:FedProx", method__kwargs={"proximal_mu": 0.5})
    play(ours, 2)
    play(theirs, 2)
    assert theirs.method._config["proximal-mu"] == 0.5
    torch.testing.assert_close(theirs.fed.global_state, ours.fed.global_state, rtol=0, atol=1e-5)


def test_flower_fedavgm_agrees_on_trainable_elements():
    ours = federation("fedavgm", method__momentum=0.9, method__server_lr=0.5)
    theirs = flower("FedAvgM", server_learning_rate=0.5, server_momentum=0.9)
    for r in (1, 2, 3):
        mine, flowers = aggregate_round(ours, r), aggregate_round(theirs, r)
        trainable = ours.fed.trainable
        torch.testing.assert_close(flowers[trainable], mine[trainable], rtol=0, atol=1e-5)
        assert not torch.allclose(flowers[~trainable], mine[~trainable])  # buffers: stepped by Flower, averaged by fedrank
        theirs.fed.global_state, ours.fed.global_state = mine.clone(), mine.clone()  # same start for the next round


@pytest.mark.parametrize("strategy, method", [("FedAdam", "fedadam"), ("FedYogi", "fedyogi"), ("FedAdagrad", "fedadagrad")])
def test_flower_fedopt_agrees_with_v0_zero_and_fedadams_bias_correction(strategy, method):
    eta, beta1, beta2, tau = 0.05, 0.9, 0.99, 1e-3
    hparams = {"method__server_lr": eta, "method__beta1": beta1, "method__tau": tau}
    kwargs = {"eta": eta, "beta_1": beta1, "tau": tau}
    if method == "fedadagrad":  # Flower's FedAdagrad has no first moment (beta_1 = 0): m_t = Delta_t
        hparams["method__beta1"] = 0.0
        del kwargs["beta_1"]
    else:
        hparams["method__beta2"], kwargs["beta_2"] = beta2, beta2
    ours, theirs = federation(method, **hparams), flower(strategy, **kwargs)
    ours.fed.server["v"] = torch.zeros_like(ours.fed.global_state)  # Flower's v_0 = 0 (fedrank's: tau^2)
    for r in (1, 2, 3):
        if strategy == "FedAdam":  # Flower's eta_t = eta sqrt(1 - beta2^(t+1)) / (1 - beta1^(t+1))
            ours.method.server_lr = eta * math.sqrt(1 - beta2 ** (r + 1)) / (1 - beta1 ** (r + 1))
        mine, flowers = aggregate_round(ours, r), aggregate_round(theirs, r)
        trainable = ours.fed.trainable
        torch.testing.assert_close(flowers[trainable], mine[trainable], rtol=1e-4, atol=1e-6)
        theirs.fed.global_state, ours.fed.global_state = mine.clone(), mine.clone()
        theirs.method._strategy.current_arrays = None  # set again by configure_train from the shared state


def test_flower_qfedavg_is_fedranks_qffl():
    # both receive F_k(w^t) (fedrank: Update.extra of qffl's train; Flower: the reply's train_loss metric)
    from bench.methods.flower import RECEIVED_LOSS
    from bench.methods.qffl import LOSS_BEFORE

    ours = federation("qffl", train__lr=0.1, method__q=1.0)
    theirs = flower("QFedAvg", client_learning_rate=0.1, q=1.0)
    losses, new = [2.0, 0.5, 1.2], {}
    for exp, key in ((ours, LOSS_BEFORE), (theirs, RECEIVED_LOSS)):
        fed = exp.fed
        fed.round = 1
        if exp is theirs:
            exp.method.select_clients(fed, fed.clients)
        moved = fed.global_state + torch.where(fed.trainable, deltas(1, fed.layout.size), torch.zeros(()))  # buffers as received
        new[exp.method.name] = exp.method.aggregate(fed, report(fed, moved, SIZES, extras=[{key: f} for f in losses]))
    torch.testing.assert_close(new["flower"], new["qffl"], rtol=1e-5, atol=1e-7)
    assert not torch.equal(new["qffl"], ours.fed.global_state)


def test_flower_qfedavg_clients_send_the_received_models_training_loss():
    from bench.methods.flower import RECEIVED_LOSS

    exp = flower("QFedAvg", client_learning_rate=0.1)
    fed, client = exp.fed, exp.fed.clients[0]
    fed.round, fed.slots = 1, {client.id: 0}
    exp.method.select_clients(fed, fed.clients)
    exp.method.receive(fed, client)
    before = fed.train_loss(client)
    update = exp.method.upload(fed, client, exp.method.train(fed, client))
    assert update.extra[RECEIVED_LOSS] == before and exp.method.metrics(update) == {"num-examples": client.num_samples, "train_loss": before}


def test_flower_fedadam_differs_from_fedranks_by_v0_and_bias_correction_by_hand():
    # round 1, every element moved by d = 0.2 on every client: m = 0.1 d = 0.02, Flower v = 0.01 d^2 = 4e-4,
    # eta_1 = 0.1 sqrt(1 - 0.99^2) / (1 - 0.9^2) = 0.074270; step = eta_1 m / (sqrt(v) + 1e-3) = 0.0707333
    theirs = flower("FedAdam")
    fed = theirs.fed
    fed.round = 1
    theirs.method.select_clients(fed, fed.clients)
    new = theirs.method.aggregate(fed, report(fed, (fed.global_state + 0.2).expand(3, -1), SIZES))
    step = 0.1 * math.sqrt(1 - 0.99**2) / (1 - 0.9**2) * 0.02 / (math.sqrt(4e-4) + 1e-3)
    torch.testing.assert_close(new - fed.global_state, torch.full_like(new, step), rtol=1e-5, atol=1e-7)  # buffers too


def robust_round(strategy: str, states: list[float], **kwargs) -> torch.Tensor:
    """How far a round of `strategy` moves every element when client i moved every element by states[i]."""
    exp = federation("flower", clients=len(states), method__strategy=f"flwr.serverapp.strategy:{strategy}", method__kwargs=kwargs)
    exp.method.prepare(exp.fed)
    fed = exp.fed
    fed.round = 1
    exp.method.select_clients(fed, fed.clients)
    new = exp.method.aggregate(fed, report(fed, fed.global_state + torch.tensor(states)[:, None], [5] * len(states)))
    return new - fed.global_state


def test_flower_robust_aggregators_by_hand():
    # FedMedian: the element-wise median; FedTrimmedAvg with beta 0.34: one of three cut at each end
    for strategy, kwargs in [("FedMedian", {}), ("FedTrimmedAvg", {"beta": 0.34})]:
        moved = robust_round(strategy, [0.0, 1.0, 10.0], **kwargs)
        torch.testing.assert_close(moved, torch.ones_like(moved), rtol=0, atol=1e-6, msg=strategy)
    # Krum, 4 clients, f = 0: each scores its squared distances (per element) to its K - f - 2 = 2 nearest:
    # 0 -> 1 + 1.96 = 2.96, 1 -> 0.16 + 1 = 1.16, 1.4 -> 0.16 + 1.96 = 2.12, 10 -> 74 + 81; client 1 (moved by 1.0) is chosen
    moved = robust_round("Krum", [0.0, 1.0, 1.4, 10.0], num_malicious_nodes=0)
    torch.testing.assert_close(moved, torch.ones_like(moved), rtol=0, atol=1e-6)


@pytest.mark.parametrize("strategy", ["FedMedian", "FedTrimmedAvg", "Krum"])
def test_flower_strategies_without_a_fedrank_twin_train_and_resume_like_any_method(strategy, tmp_path):
    from bench.testing.conformance import check_resume_is_exact, check_run_completes
    from bench.testing import tiny_config

    cfg = tiny_config(method="flower", method__strategy=f"flwr.serverapp.strategy:{strategy}", train__rounds=2, runtime__keep_checkpoint=True)
    check_run_completes("flower", cfg, tmp_path / "straight")
    check_resume_is_exact("flower", cfg, tmp_path / "straight", tmp_path / "resumed")


def test_a_strategy_that_cannot_be_built_is_one_line():
    from bench.errors import UserError

    with pytest.raises(UserError, match="cannot import"):
        flower("NoSuchStrategy")
    with pytest.raises(UserError, match="method.kwargs"):
        flower("FedAvg", no_such_argument=1)
