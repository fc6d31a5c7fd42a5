"""SCAFFOLD, FedNova and FedDyn: every update equation against hand-computed values on the tiny
federation (tiny_config: 1532 floats of state, 1484 of them trainable, clients of 159, 90 and 58
samples), and their behaviour over real rounds."""

from __future__ import annotations

import pytest
import torch

from bench.engine.federation import Updates
from bench.engine.run import Progress, play_round
from bench.engine.setup import build_experiment
from bench.engine.trainer import FitResult, Step
from bench.methods import resolve_method_config
from bench.methods.drift import STEP_WEIGHT, StepWeight, client_vector, local_momentum, trainable_pairs
from bench.methods.fedavg import FedAvg
from bench.methods.feddyn import GRADIENT, H
from bench.methods.scaffold import CONTROL, DELTA_CONTROL, Scaffold, corrected_gradients, updated_control
from bench.testing import report
from conftest import tiny_config

CPU = torch.device("cpu")
SGD = {"train__optimizer": "sgd", "train__momentum": 0.0, "train__clip_grad_norm": None}
PARTIAL = {"partition__clients": 6, "partition__min_samples": 8, "train__participation": 0.5, "train__dropout": 0.3, "train__stragglers": 0.5}


def experiment(method: str, **overrides):
    return build_experiment(tiny_config(method=method, **overrides), CPU)


def filled(fed, trainable: float, buffers: float) -> torch.Tensor:
    """A state holding `trainable` on trainable elements and `buffers` on BatchNorm buffers."""
    return torch.where(fed.trainable, torch.tensor(trainable), torch.tensor(buffers))


def reported(fed, states: list[torch.Tensor], clients: list[int], sizes: list[int], step_weights=None, extras=None) -> Updates:
    """`clients` report `states` after training on `sizes` samples, with `step_weights` and
    `extras` in their Update.extra (the kit's report)."""
    step_weights = step_weights or [1.0] * len(clients)
    extras = [{STEP_WEIGHT: a, **e} for a, e in zip(step_weights, extras or [{}] * len(clients))]
    return report(fed, torch.stack(states), sizes, clients=clients, extras=extras)


def play(exp, rounds: int) -> None:
    exp.method.setup(exp.fed)
    exp.method.prepare(exp.fed)
    progress = Progress()
    for r in range(1, rounds + 1):
        exp.fed.round = r
        play_round(exp, progress)


def test_hyper_parameter_defaults():
    assert resolve_method_config({"name": "scaffold"}) == {"name": "scaffold", "server_lr": 1.0}
    assert resolve_method_config({"name": "fednova"}) == {"name": "fednova"}
    assert resolve_method_config({"name": "feddyn"}) == {"name": "feddyn", "alpha": 0.01}


# ---- shared pieces (bench/methods/drift.py) -------------------------------------------------
def steps(weight: StepWeight, lrs: list[float]) -> float:
    for t, lr in enumerate(lrs):
        weight(Step(optimizer=None, lr=lr, step=t, epoch=0))
    return weight.total


def test_step_weight_with_momentum_is_fednovas_a_i_times_the_rate():
    # rho = 0.5, three steps: gains 1, 1.5, 1.75, summing to 4.25;
    # the paper's a_i = [3 - 0.5 (1 - 0.125) / 0.5] / 0.5 = (3 - 0.875) / 0.5 = 4.25
    assert steps(StepWeight(0.5), [1.0, 1.0, 1.0]) == pytest.approx(4.25)
    assert steps(StepWeight(0.5), [0.1, 0.1, 0.1]) == pytest.approx(0.425)
    # no momentum: the sum of the rates (tau lr at a constant rate), here with a decay: 0.1 + 0.1 + 0.01
    assert steps(StepWeight(0.0), [0.1, 0.1, 0.01]) == pytest.approx(0.21)


def test_local_momentum_is_sgds_and_zero_for_adam():
    assert local_momentum({"optimizer": "sgd", "momentum": 0.9}) == 0.9
    assert local_momentum({"optimizer": "adam", "momentum": 0.9}) == 0.0


@pytest.mark.parametrize("optimizer, momentum", [("sgd", 0.0), ("adam", 0.9), ("sgd", 0.9)])
def test_a_fit_reports_its_step_weight(optimizer, momentum):
    """Real fits, two epochs with the rate halved after the first (StepLR 1, 0.5)."""
    exp = experiment("fednova", train__optimizer=optimizer, train__momentum=momentum, train__lr=0.1, train__local_epochs=2,
                     train__lr_step=1, train__lr_gamma=0.5)
    fed = exp.fed
    fed.round = 1
    client = fed.clients[2]  # 58 samples: 4 steps an epoch (16, 16, 16, 10)
    fit = exp.method.train(fed, client)
    assert fit.steps == 8 and fit.lr_sum == pytest.approx(4 * 0.1 + 4 * 0.05)
    if momentum == 0 or optimizer == "adam":
        assert fit.extra[STEP_WEIGHT] == pytest.approx(fit.lr_sum)
    else:  # sum_t lr_t (1 - 0.9^t) / 0.1 over t = 1..8, the rate 0.1 for t <= 4, 0.05 after
        gains = [(1 - 0.9 ** t) / 0.1 for t in range(1, 9)]
        assert fit.extra[STEP_WEIGHT] == pytest.approx(0.1 * sum(gains[:4]) + 0.05 * sum(gains[4:]))


def test_trainable_pairs_slice_a_trainable_vector_per_parameter():
    fed = experiment("scaffold").fed
    vector = torch.arange(1484, dtype=torch.float32)
    pairs = trainable_pairs(fed, fed.model, vector)
    assert [p for p, _ in pairs] == list(fed.model.parameters())  # every parameter, none of the buffers
    assert all(p.shape == v.shape for p, v in pairs)
    torch.testing.assert_close(torch.cat([v.reshape(-1) for _, v in pairs]), vector)
    # body.0.weight (8x3x3x3 = 216 elements) comes first, body.1.weight (8) next: element 216
    assert pairs[1][1][0].item() == 216


# ---- SCAFFOLD -------------------------------------------------------------------------------
def test_scaffold_option_ii_control_variate_by_hand():
    # c_i = 0.2, c = 0.1, x = 1, y_i = 0.4, K lr = 3 x 0.1: c_i+ = 0.2 - 0.1 + 0.6 / 0.3 = 2.1
    own, server, start, end = (torch.tensor([v]) for v in (0.2, 0.1, 1.0, 0.4))
    torch.testing.assert_close(updated_control(own, server, start, end, 0.3), torch.tensor([2.1]))
    assert updated_control(own, server, start, end, 0.0) is own  # no step: nothing learnt


def test_scaffold_correction_adds_c_minus_c_i_to_every_gradient():
    param, untouched = torch.nn.Parameter(torch.zeros(2)), torch.nn.Parameter(torch.zeros(2))
    param.grad = torch.tensor([1.0, -1.0])
    corrected_gradients([(param, torch.tensor([0.5, 0.25])), (untouched, torch.tensor([0.1, 0.2]))])
    torch.testing.assert_close(param.grad, torch.tensor([1.5, -0.75]))
    torch.testing.assert_close(untouched.grad, torch.tensor([0.1, 0.2]))  # no gradient: g = 0, then corrected


class ZeroLoss:
    """Test mixin: a zero loss that still reaches every parameter (zero gradients)."""

    def client_loss(self, fed, client):
        return lambda batch: 0.0 * batch.logits.sum()


class ZeroLossScaffold(ZeroLoss, Scaffold):
    pass


@pytest.mark.parametrize("momentum", [0.0, 0.9])
def test_scaffold_local_steps_follow_the_corrected_gradient_and_option_ii_recovers_it(momentum):
    exp = experiment("scaffold", train__lr=0.1, **{**SGD, "train__momentum": momentum})
    fed, method = exp.fed, ZeroLossScaffold()
    method.setup(fed)
    fed.round, client = 1, fed.clients[0]
    fed.server[CONTROL] = torch.full((1484,), 0.3)
    client.state[CONTROL] = torch.full((1484,), 0.1)
    method.receive(fed, client)
    fed.slots = {client.id: 0}
    fit = method.train(fed, client)
    # 159 samples, batch 16: 10 steps of lr 0.1 along g + c - c_i = 0 + 0.3 - 0.1 = 0.2.
    # rho = 0: A = 10 x 0.1 = 1 (lr_sum), y = x - 0.2.
    # rho = 0.9: A = sum_t 0.1 (1 - 0.9^t) / 0.1 = 10 - 0.9 (1 - 0.9^10) / 0.1 = 10 - 9 x 0.651322 = 4.138106,
    # y = x - 0.2 A = x - 0.827621 (dividing by lr_sum = 1 would make c_i+ = 0.1 - 0.3 + 0.83 = 0.63, not 0)
    weight = {0.0: 1.0, 0.9: 4.138106}[momentum]
    assert fit.steps == 10 and fit.lr_sum == pytest.approx(1.0) and fit.extra[STEP_WEIGHT] == pytest.approx(weight)
    method.upload(fed, client, fit)
    torch.testing.assert_close(fed.uploads[0][fed.trainable], fed.global_state[fed.trainable] - 0.2 * weight)
    # c_i+ = 0.1 - 0.3 + 0.2 A / A = 0: the zero loss's mean gradient; Delta c_i = 0 - 0.1
    torch.testing.assert_close(client.state[CONTROL], torch.zeros(1484), atol=1e-5, rtol=0)
    torch.testing.assert_close(fit.extra[DELTA_CONTROL], torch.full((1484,), -0.1), atol=1e-5, rtol=0)


def test_scaffold_server_step_by_hand_with_partial_participation():
    exp = experiment("scaffold", partition__clients=4, method__server_lr=0.5)
    fed, method = exp.fed, exp.method
    method.setup(fed)
    fed.server[CONTROL] = torch.full((1484,), 0.1)
    fed.global_state = filled(fed, 1.0, 0.5)
    deltas = [{DELTA_CONTROL: torch.full((1484,), d)} for d in (0.4, 0.8)]
    updates = reported(fed, [filled(fed, 2.0, 1.0), filled(fed, 4.0, 3.0)], [1, 3], [10, 30], extras=deltas)
    new = method.aggregate(fed, updates)
    # x = 1 + 0.5 x mean(2 - 1, 4 - 1) = 1 + 0.5 x 2 = 2 (unweighted, whatever the sample counts);
    # buffers: the mean of 1 and 3 = 2
    torch.testing.assert_close(new, filled(fed, 2.0, 2.0))
    # c = 0.1 + (2/4) x mean(0.4, 0.8) = 0.1 + 0.5 x 0.6 = 0.4 (N = 4 clients, 2 reported)
    torch.testing.assert_close(fed.server[CONTROL], torch.full((1484,), 0.4))


def test_scaffold_counts_the_control_variates_it_sends():
    exp = experiment("scaffold", **PARTIAL)
    fed, method = exp.fed, exp.method
    # x and c down, Delta y and Delta c up: 1532 x 4 + 1484 x 4 = 6128 + 5936 = 12064 bytes each way
    assert method.download_bytes(fed, fed.clients[0]) == method.upload_bytes(fed, fed.clients[0], None) == 12064
    progress = Progress()
    method.setup(fed)
    fed.round = 1
    play_round(exp, progress)
    comm = {r["metric"]: r["value"] for r in progress.metrics if r["scope"] == "comm"}
    took_part, reports = len(fed.plan.sampled), len(fed.slots)
    assert comm["bytes_down"] == took_part * 12064 and comm["bytes_up"] == reports * 12064


# ---- FedNova --------------------------------------------------------------------------------
def test_fednova_normalized_average_by_hand():
    exp = experiment("fednova")
    fed, method = exp.fed, exp.method
    fed.global_state = filled(fed, 1.0, 0.0)
    # p = (1/4, 3/4), a = (2, 4), both clients end at 0: d = (1/2, 1/4),
    # tau_eff = 1/4 x 2 + 3/4 x 4 = 3.5, sum p d = 1/8 + 3/16 = 0.3125, x = 1 - 3.5 x 0.3125 = -0.09375
    # (FedAvg: 0); buffers: the sample-weighted mean 1/4 x 2 + 3/4 x 6 = 5
    updates = reported(fed, [filled(fed, 0.0, 2.0), filled(fed, 0.0, 6.0)], [0, 1], [1, 3], step_weights=[2.0, 4.0])
    torch.testing.assert_close(method.aggregate(fed, updates), filled(fed, -0.09375, 5.0))
    # a client that took no step (a = 0, y = x) adds nothing: p = (1/2, 1/2), a = (0, 4):
    # tau_eff = 2, sum p d = 1/2 x 1/4 = 1/8, x = 1 - 2 x 1/8 = 0.75
    updates = reported(fed, [filled(fed, 1.0, 0.0), filled(fed, 0.0, 0.0)], [0, 1], [1, 1], step_weights=[0.0, 4.0])
    torch.testing.assert_close(method.aggregate(fed, updates), filled(fed, 0.75, 0.0))


def global_after(method: str, rounds: int, **overrides) -> torch.Tensor:
    exp = experiment(method, train__rounds=rounds, **overrides)
    play(exp, rounds)
    return exp.fed.global_state


def test_fednova_is_fedavg_when_every_client_takes_the_same_steps():
    # batch 256 > every client's 159, 90, 58 samples: one step an epoch, 3 each; SGD with momentum 0.9
    same = {"train__batch_size": 256, "train__local_epochs": 3, "train__optimizer": "sgd", "train__momentum": 0.9, "train__lr": 0.05}
    torch.testing.assert_close(global_after("fednova", 2, **same), global_after("fedavg", 2, **same), rtol=1e-5, atol=1e-6)
    # with batch 16 the clients take 10, 6 and 4 steps: the two differ
    unequal = {**same, "train__batch_size": 16}
    assert (global_after("fednova", 1, **unequal) - global_after("fedavg", 1, **unequal)).abs().max() > 1e-3


# ---- FedDyn ---------------------------------------------------------------------------------
def test_feddyn_local_objective_value_and_gradient_by_hand():
    exp = experiment("feddyn", method__alpha=0.5)
    fed, method, client = exp.fed, exp.method, exp.fed.clients[0]
    fed.layout.scatter(fed.model, fed.global_state + 0.1 * fed.trainable)  # theta - theta^{t-1} = 0.1 on trainable elements
    # first participation, g_i = 0: (alpha/2) ||theta - theta^{t-1}||^2 = 0.25 x 1484 x 0.01 = 3.71
    assert method.local_loss(fed, client)(None).item() == pytest.approx(3.71, rel=1e-5)
    client.state[GRADIENT] = torch.full((1484,), 0.3)
    term = method.local_loss(fed, client)(None)
    # 3.71 - <g_i, theta - theta^{t-1}> = 3.71 - 0.3 x 0.1 x 1484 = 3.71 - 44.52 = -40.81
    assert term.item() == pytest.approx(-40.81, rel=1e-5)
    term.backward()
    # gradient: alpha (theta - theta^{t-1}) - g_i = 0.5 x 0.1 - 0.3 = -0.25 on every parameter
    for p in fed.model.parameters():
        torch.testing.assert_close(p.grad, torch.full_like(p, -0.25))


def test_feddyn_gradient_state_update_by_hand():
    exp = experiment("feddyn", method__alpha=0.5)
    fed, method, client = exp.fed, exp.method, exp.fed.clients[1]
    client.state[GRADIENT] = torch.full((1484,), 0.3)
    fed.layout.scatter(fed.model, fed.global_state + 0.2 * fed.trainable)
    fed.slots = {client.id: 0}
    method.upload(fed, client, FitResult(steps=1, samples=1, loss=0.0))
    # g_i = 0.3 - 0.5 x (theta_i - theta^{t-1}) = 0.3 - 0.5 x 0.2 = 0.2
    torch.testing.assert_close(client.state[GRADIENT], torch.full((1484,), 0.2))


def test_feddyn_server_step_by_hand_with_partial_participation():
    exp = experiment("feddyn", partition__clients=4)  # alpha = 0.01
    fed, method = exp.fed, exp.method
    method.setup(fed)
    fed.server[H] = torch.full((1484,), 0.02)
    fed.global_state = filled(fed, 0.5, 0.0)
    updates = reported(fed, [filled(fed, 1.0, 1.0), filled(fed, 3.0, 3.0)], [0, 2], [10, 30])
    new = method.aggregate(fed, updates)
    # h = 0.02 - 0.01 x (1/4) x ((1 - 0.5) + (3 - 0.5)) = 0.02 - 0.0075 = 0.0125 (m = 4 clients, 2 reported)
    torch.testing.assert_close(fed.server[H], torch.full((1484,), 0.0125))
    # theta = mean(1, 3) - 0.0125 / 0.01 = 2 - 1.25 = 0.75 (unweighted); buffers: mean(1, 3) = 2
    torch.testing.assert_close(new, filled(fed, 0.75, 2.0))


def test_feddyn_server_state_obeys_its_recursion_over_rounds_with_partial_participation():
    alpha, m = 0.1, 6
    exp = experiment("feddyn", method__alpha=alpha, train__rounds=3, **PARTIAL)
    fed, method, trainable = exp.fed, exp.method, exp.fed.trainable
    method.setup(fed)
    progress, partial_rounds = Progress(), 0
    for r in (1, 2, 3):
        start, h = fed.global_state[trainable].clone(), fed.server[H].clone()
        gradients = [client_vector(fed, c, GRADIENT).clone() for c in fed.clients]
        fed.round = r
        play_round(exp, progress)
        clients = sorted(fed.slots, key=fed.slots.get)  # the reporting clients, in row order
        assert clients, f"round {r}: nobody reported"
        partial_rounds += len(clients) < m
        rows = fed.uploads[: len(clients)]
        models = rows[:, trainable]
        h = h - alpha / m * (models - start).sum(0)
        torch.testing.assert_close(fed.server[H], h)
        torch.testing.assert_close(fed.global_state[trainable], models.mean(0) - h / alpha)
        torch.testing.assert_close(fed.global_state[~trainable], rows[:, ~trainable].mean(0))
        for c in fed.clients:
            expected = gradients[c.id] - alpha * (models[clients.index(c.id)] - start) if c.id in clients else gradients[c.id]
            torch.testing.assert_close(client_vector(fed, c, GRADIENT), expected)
        # h^0 = g_i^0 = 0, so h stays the mean of ALL clients' gradient states
        torch.testing.assert_close(h, torch.stack([client_vector(fed, c, GRADIENT) for c in fed.clients]).mean(0))
    assert partial_rounds == 3


# ---- behaviour: a quadratic toy with heterogeneous client optima -----------------------------
CURVATURES = (1.0, 2.0, 4.0)
CENTRES = (-1.0, 0.0, 2.0)


# (3, 1484): client i's optimum c_i, CENTRES[i] plus seeded noise per element
OPTIMA = torch.tensor(CENTRES)[:, None] + 0.5 * torch.randn(3, 1484, generator=torch.Generator().manual_seed(0))


class Quadratic:
    """Test mixin: client i's loss is f_i(w) = (a_i/2) ||w - c_i||^2 over the trainable tensors
    (the data is ignored), so every gradient is exact."""

    def client_loss(self, fed, client):
        a, pairs = CURVATURES[client.id], trainable_pairs(fed, fed.model_of(client), OPTIMA[client.id])
        return lambda batch: a / 2 * torch.stack([(w - c).pow(2).sum() for w, c in pairs]).sum()


class QuadraticFedAvg(Quadratic, FedAvg):
    pass


class QuadraticScaffold(Quadratic, Scaffold):
    pass


def quadratic_run(method: str, toy) -> torch.Tensor:
    rounds = 15
    exp = experiment(method, train__lr=0.1, train__rounds=rounds, eval__every=rounds, **SGD)
    exp.method = toy
    play(exp, rounds)
    return exp.fed.global_state[exp.fed.trainable]


def test_scaffold_reaches_the_quadratic_optimum_where_fedavg_drifts():
    """Clients take 10, 6 and 4 steps of lr 0.1 (a_i lr up to 0.4) per round, 15 rounds. The
    global optimum of sum_i f_i is w* = sum_i a_i c_i / sum_i a_i (centre (-1 + 0 + 8) / 7 = 1).
    FedAvg's fixed point is a sample-weighted mix of nearly reached local optima (centre near 0):
    about 1 away from w* (measured: 1.0 on average). SCAFFOLD's is w* (at y = x = w*,
    g_i + c - c_i = 0 once c_i = grad f_i(w*)); measured: at most 1e-5 away, the tolerance 1e-4."""
    a = torch.tensor(CURVATURES)[:, None]
    optimum = (a * OPTIMA).sum(0) / a.sum()
    fedavg_error = (quadratic_run("fedavg", QuadraticFedAvg()) - optimum).abs()
    scaffold_error = (quadratic_run("scaffold", QuadraticScaffold()) - optimum).abs()
    assert fedavg_error.mean() > 0.9
    assert scaffold_error.max() < 1e-4
