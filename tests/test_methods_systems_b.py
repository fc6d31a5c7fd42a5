"""MDH-FL, FedMD and FedDF against hand-computed values: the symmetric CE, the softened KL, the
teachers (others' mean, consensus), the digest loss, the public-split targets, FedDF's
per-architecture averaging and distillation, and the bytes of predictions and models."""

from __future__ import annotations

import math

import pandas as pd
import pytest
import torch

from bench.engine.federation import MAIN, Update, Updates
from bench.engine.run import RunPaths, execute
from bench.engine.setup import build_experiment
from bench.engine.trainer import FitResult
from bench.methods.distillation import fit_to_targets, predict, soft_kl, softened
from bench.methods.fedmd import consensus, mean_absolute_error
from bench.methods.mdhfl import others_mean, symmetric_cross_entropy
from conftest import tiny_config

CPU = torch.device("cpu")
FIT = FitResult(steps=1, samples=1, loss=0.0)
LN3 = math.log(3)


def experiment(method: str, **overrides):
    return build_experiment(tiny_config(method=method, data__public_fraction=0.2, **overrides), CPU)


def test_symmetric_cross_entropy_by_hand():
    # p = softmax([0, ln 2, 0]) = [1/4, 1/2, 1/4] for both samples, labels 1 and 0:
    #   CE = ln 2 and ln 4; RCE = -sum_c p_c ln(clamp(onehot, 1e-4)) = (1 - p_y) ln 1e4 = 1/2 and 3/4 of 9.21034
    #   alpha = 0.1, beta = 1: 0.1 * (ln 2 + ln 4) / 2 + (0.5 + 0.75) * ln(1e4) / 2 = 5.8604348
    logits = torch.tensor([[0.0, math.log(2), 0.0]] * 2)
    labels = torch.tensor([1, 0])
    assert symmetric_cross_entropy(logits, labels, 0.1, 1.0).item() == pytest.approx(5.8604348, abs=1e-6)
    assert symmetric_cross_entropy(logits, labels, 1.0, 0.0).item() == pytest.approx(math.log(8) / 2, abs=1e-6)  # plain CE


def test_softened_kl_by_hand():
    # teacher [1/2, 1/2], student logits [0, ln 3]:
    #   T = 1: q = [1/4, 3/4], KL = 1/2 ln(1/2 / 1/4) + 1/2 ln(1/2 / 3/4) = 1/2 ln(4/3) = 0.1438410
    #   T = 2: q = softmax([0, ln 3 / 2]) = [1, sqrt 3] / (1 + sqrt 3), KL = 1/2 ln(1/4 / (q0 q1)) with
    #          q0 q1 = sqrt 3 / (4 + 2 sqrt 3); times T^2 = 4: 0.1490091
    teacher, student = torch.tensor([[0.5, 0.5]]), torch.tensor([[0.0, LN3]])
    assert soft_kl(student, teacher, 1.0).item() == pytest.approx(0.1438410, abs=1e-6)
    assert soft_kl(student, teacher, 2.0).item() == pytest.approx(0.1490091, abs=1e-6)
    torch.testing.assert_close(softened(torch.tensor([[0.0, 2 * LN3]]), 2.0), torch.tensor([[0.25, 0.75]]))


def test_mdhfl_teacher_is_the_mean_of_the_other_clients_softened_predictions():
    predictions = {0: torch.tensor([[0.0, 0.0]]), 1: torch.tensor([[LN3, 0.0]]), 2: torch.tensor([[0.0, LN3]])}
    # client 0: mean([3/4, 1/4], [1/4, 3/4]) = [1/2, 1/2]; client 1: mean([1/2, 1/2], [1/4, 3/4]) = [3/8, 5/8]
    torch.testing.assert_close(others_mean(predictions, 0, 1.0), torch.tensor([[0.5, 0.5]]))
    torch.testing.assert_close(others_mean(predictions, 1, 1.0), torch.tensor([[0.375, 0.625]]))
    # T = 2 softens: [ln 3, 0] / 2 -> [sqrt 3, 1] / (1 + sqrt 3)
    s = math.sqrt(3)
    torch.testing.assert_close(others_mean({1: torch.tensor([[LN3, 0.0]])}, 0, 2.0), torch.tensor([[s / (1 + s), 1 / (1 + s)]]))
    assert others_mean({0: predictions[0]}, 0, 1.0) is None  # nobody else has sent predictions


def test_the_kl_to_the_others_mean_has_the_gradients_of_rhfls_mean_of_kls():
    others = [torch.tensor([[0.7, 0.2, 0.1]]), torch.tensor([[0.1, 0.3, 0.6]]), torch.tensor([[0.3, 0.3, 0.4]])]
    student = torch.tensor([[0.2, -0.5, 1.0]], requires_grad=True)
    (mean_of_kls,) = torch.autograd.grad(torch.stack([soft_kl(student, p, 1.0) for p in others]).mean(), student)
    (kl_of_mean,) = torch.autograd.grad(soft_kl(student, torch.stack(others).mean(0), 1.0), student)
    torch.testing.assert_close(kl_of_mean, mean_of_kls)


def test_fedmd_consensus_and_digest_loss_by_hand():
    # consensus: the mean logits of every client, itself included; MAE = mean |z - consensus|
    predictions = {0: torch.tensor([[1.0, 2.0]]), 1: torch.tensor([[3.0, -2.0]])}
    torch.testing.assert_close(consensus(predictions), torch.tensor([[2.0, 0.0]]))
    assert consensus({}) is None
    assert mean_absolute_error(torch.tensor([[1.0, 2.0]]), torch.tensor([[2.0, 0.0]])).item() == pytest.approx(1.5)


def test_each_public_batch_is_scored_against_the_targets_of_its_own_images():
    exp = experiment("mdhfl")
    fed = exp.fed
    fed.round, fed.slots = 1, {}
    targets = torch.arange(len(fed.public), dtype=torch.float).unsqueeze(1).repeat(1, 4)  # row k: image fed.public[k]
    seen = []

    def loss(logits, rows):
        seen.append(rows[:, 0].long())
        return logits.sum() * 0

    fit_to_targets(fed, fed.clients[0], targets, loss, epochs=1)
    batches = torch.cat(seen)
    assert sorted(fed.public[batches].tolist()) == sorted(fed.public.tolist())  # every public image once, with its own row


def test_mdhfl_alignment_moves_a_client_towards_its_teacher():
    exp = experiment("mdhfl", method__temperature=2.0, method__align_epochs=3)
    fed, method = exp.fed, exp.method
    fed.round, fed.slots = 1, {0: 0}
    client = fed.clients[0]
    method.receive(fed, client)
    teacher = torch.tensor([[0.7, 0.1, 0.1, 0.1]]).repeat(len(fed.public), 1)
    model = fed.model_of(client)
    before = soft_kl(predict(model, fed, fed.public), teacher, 2.0)
    method.align(fed, client, teacher)
    assert soft_kl(predict(model, fed, fed.public), teacher, 2.0) < before


def test_the_zoo_gives_four_architectures_in_client_order():
    exp = experiment("mdhfl", partition__clients=4)
    archs = [exp.fed.model_of(c) for c in exp.fed.clients]
    assert len({id(m) for m in archs}) == 4 and exp.fed.clients[0].arch == "shufflenet_v2" and exp.fed.clients[3].arch == "resnet12"
    homogeneous = experiment("fedmd", method__architectures=[])
    assert {c.arch for c in homogeneous.fed.clients} == {MAIN}


@pytest.mark.parametrize("method", ["mdhfl", "fedmd"])
def test_only_predictions_on_public_data_are_counted(method, tmp_path):
    cfg = tiny_config(method=method, train__rounds=2, data__public_fraction=0.2)
    record = execute(cfg, tmp_path, show_progress=False)
    comm = pd.read_parquet(RunPaths(tmp_path).metrics).query("scope == 'comm'").pivot(index="round", columns="metric", values="value")
    one = record["data"]["public"] * 4 * 4  # public images x 4 classes x float32
    assert comm.loc[1, "bytes_up"] == 3 * one and comm.loc[1, "bytes_down"] == 0  # round 1: no predictions to learn from yet
    assert comm.loc[2, "bytes_up"] == 3 * one and comm.loc[2, "bytes_down"] == 3 * one


def feddf_reports(fed, values: dict[int, float], sizes: dict[int, int]) -> Updates:
    """Clients report constant states (their architecture's length) trained on `sizes` samples."""
    fed.slots = {c: row for row, c in enumerate(values)}
    items = []
    for c, value in values.items():
        client = fed.clients[c]
        state = torch.full((fed.layout_of(client).size,), value)
        if client.arch == MAIN:
            fed.uploads[fed.slots[c]] = state
            items.append(Update(c, sizes[c], FIT))
        else:
            items.append(Update(c, sizes[c], FIT, extra={"state": state}))
    return Updates(fed.uploads[: len(items)], items)


def test_feddf_without_distillation_averages_each_architecture_and_hands_clients_their_own():
    other = {"name": "small_cnn", "widths": [4, 8]}
    exp = experiment("feddf", method__distill_epochs=0, method__architectures=[{"name": "small_cnn", "widths": [8, 16]}, other])
    fed, method = exp.fed, exp.method
    assert [c.arch for c in fed.clients] == [MAIN, "small_cnn", MAIN] and method.personalized(fed)
    # main: (1 * 1 + 4 * 2) / 3 = 3; the other architecture has one reporter: 2
    new = method.aggregate(fed, feddf_reports(fed, {0: 1.0, 1: 2.0, 2: 4.0}, {0: 1, 1: 3, 2: 2}))
    torch.testing.assert_close(new, torch.full_like(new, 3.0))
    fed.global_state = new
    start = method.start_state(fed, fed.clients[1])
    assert start.shape == (fed.layout_of(fed.clients[1]).size,) and (start == 2.0).all()
    assert method.download_bytes(fed, fed.clients[1]) == fed.layout_of(fed.clients[1]).nbytes() < fed.layout.nbytes()


def test_feddf_distils_the_clients_ensemble_into_the_server_model():
    exp = experiment("feddf", method__distill_epochs=5, method__distill_lr=0.01)
    fed, method = exp.fed, exp.method
    fed.round = 1
    generator = torch.Generator().manual_seed(0)
    states = [fed.global_state + 0.3 * torch.randn(fed.layout.size, generator=generator) for _ in fed.clients]
    fed.uploads[:3] = torch.stack(states)
    fed.slots = {c.id: c.id for c in fed.clients}
    updates = Updates(fed.uploads[:3].clone(), [Update(c.id, c.num_samples, FIT) for c in fed.clients])
    teacher = method.ensemble(fed, {MAIN: (list(updates.states), [c.num_samples for c in fed.clients])})
    averaged = method.weighted_mean(updates)
    distilled = method.aggregate(fed, updates)

    def kl(state):
        fed.layout.scatter(fed.model, state)
        return soft_kl(predict(fed.model, fed, fed.public), teacher, 1.0)

    assert kl(distilled) < kl(averaged)


def test_heterogeneous_feddf_resumes_exactly_under_partial_participation(tmp_path, monkeypatch):
    from bench.testing.conformance import PARTICIPATION
    from conftest import assert_resume_is_exact

    cfg = tiny_config(method="feddf", method__architectures=[{"name": "resnet10", "widths": [4, 8, 8, 8]}, {"name": "shufflenet_v2", "widths": [4, 8, 8, 8]}], train__rounds=2, data__public_fraction=0.2,
                      runtime__keep_checkpoint=True, **PARTICIPATION["partial"])
    record = assert_resume_is_exact(cfg, tmp_path, monkeypatch, crash_round=2)
    assert record["headline_scope"] == "personal" and set(record["model"]["architectures"]) == {MAIN, "resnet10", "shufflenet_v2"}
