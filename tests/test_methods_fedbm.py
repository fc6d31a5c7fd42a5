"""FedBM against hand-computed values: the concept distributions, the concept classifier's logits and
the LKCC loss, the concept sampler, the generator's diversity and BatchNorm-statistics regularisers,
the frozen classifier, the generator's training and bytes, and one-line errors for a bad concept file."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from bench.engine.federation import Update, Updates
from bench.engine.setup import build_experiment
from bench.engine.trainer import FitResult
from bench.errors import UserError
from bench.methods.fedbm import (batchnorm_statistics_loss, concept_distributions, concept_logits, concept_sampler, diversity_loss,
                                 lkcc_loss, read_concepts, sample_concepts)
from conftest import tiny_config
from bench.testing import needs

CPU = torch.device("cpu")


def experiment(**overrides):
    exp = build_experiment(tiny_config(method="fedbm", **{**needs("fedbm"), **overrides}), CPU)
    exp.method.setup(exp.fed)
    exp.method.prepare(exp.fed)
    return exp


def test_concept_distributions_by_hand():
    # class 0's prompts e = [1, 0] and [0, 1]: mean [1/2, 1/2], unbiased variance ((1/2)^2 + (1/2)^2) / 1 = 1/2 per dim
    means, variances = concept_distributions(torch.tensor([[[1.0, 0.0], [0.0, 1.0]], [[1.0, 0.0], [1.0, 0.0]]]))
    torch.testing.assert_close(means, torch.tensor([[0.5, 0.5], [1.0, 0.0]]))
    torch.testing.assert_close(variances, torch.tensor([[0.5, 0.5], [0.0, 0.0]]))


def test_concept_logits_and_lkcc_loss_by_hand():
    # z = [3, 4] -> z_hat = [0.6, 0.8]; mu = I, s2 = diag 1/2 rows [1/2, 0] and [0, 1/2]; T = 2:
    #   logit_0 = 2 (0.6 + 0.5 * 2 * 0.36 * 0.5) = 1.56, logit_1 = 2 (0.8 + 0.5 * 2 * 0.64 * 0.5) = 2.24
    #   y = 0: CE = ln(1 + e^0.68) = 1.0898681, plus T^2/2 z_hat^2 . s2_0 = 2 * 0.18 = 0.36
    z, means, variances = torch.tensor([[3.0, 4.0]]), torch.eye(2), torch.tensor([[0.5, 0.0], [0.0, 0.5]])
    torch.testing.assert_close(concept_logits(z, means, variances, 2.0), torch.tensor([[1.56, 2.24]]))
    loss = lkcc_loss(z, torch.tensor([0]), means, variances, 2.0)
    assert loss.item() == pytest.approx(math.log(1 + math.exp(0.68)) + 0.36, abs=1e-6)
    # zero concept variance: plain cosine-classifier cross-entropy with temperature T
    plain = lkcc_loss(z, torch.tensor([1]), means, torch.zeros(2, 2), 2.0)
    assert plain.item() == pytest.approx(math.log(1 + math.exp(2 * 0.6 - 2 * 0.8)), abs=1e-6)


def test_sampled_concepts_follow_each_class_distribution():
    concepts = read_concepts(str(needs("fedbm")["method__concepts"]), 4)
    means, cholesky = concept_sampler(concepts)
    torch.manual_seed(0)
    labels = torch.full((20000,), 2)
    draws = sample_concepts(labels, means, cholesky)
    torch.testing.assert_close(draws.mean(0), concepts[2].mean(0), atol=0.01, rtol=0)
    expected = torch.cov(concepts[2].T) + 1e-4 * torch.eye(concepts.shape[2])
    torch.testing.assert_close(torch.cov(draws.T), expected, atol=0.01, rtol=0)


def test_diversity_loss_by_hand():
    # class 0: codes [0, 0] and [1, 1] (L1 distance 2), images 0 and [1, 1, 1, 1] (L1 distance 4): 1 / (4/2 + 1e-5);
    # class 1 has one sample and adds nothing; divided by C = 2
    codes = torch.tensor([[0.0, 0.0], [1.0, 1.0], [5.0, 5.0]])
    images = torch.stack([torch.zeros(1, 2, 2), torch.ones(1, 2, 2), torch.ones(1, 2, 2)])
    assert diversity_loss(codes, images, torch.tensor([0, 0, 1]), 2).item() == pytest.approx(1 / (2 + 1e-5) / 2, rel=1e-6)


def test_batchnorm_statistics_loss_by_hand():
    # input values 0 and 2 in one channel: mean 1, biased variance 1; running mean 0, variance 1: |1 - 0| + |1 - 1| = 1
    bn = nn.BatchNorm2d(1)
    assert batchnorm_statistics_loss({bn: torch.tensor([0.0, 2.0]).view(2, 1, 1, 1)}).item() == pytest.approx(1.0)
    assert batchnorm_statistics_loss({}).item() == 0.0


@pytest.mark.parametrize("content, message", [
    (torch.zeros(4, 5), "classes x prompts x dim"),
    (torch.zeros(3, 5, 8), "needs 4 classes"),
    (torch.ones(4, 1, 8), "at least 2 prompts"),
    (torch.full((4, 5, 8), float("nan")), "non-finite"),
])
def test_a_bad_concept_file_is_one_line(tmp_path, content, message):
    path = tmp_path / "concepts.pt"
    torch.save(content, path)
    with pytest.raises(UserError, match=message) as caught:
        read_concepts(str(path), 4)
    assert "\n" not in str(caught.value)
    with pytest.raises(UserError, match="does not exist"):
        read_concepts(str(tmp_path / "missing.pt"), 4)
    with pytest.raises(UserError, match="set method.concepts"):
        read_concepts("", 4)


def test_the_classifier_is_frozen_outside_the_state_and_only_the_body_travels():
    exp = experiment()
    fed = exp.fed
    assert not any(k.startswith("head.") for k in fed.layout.keys)  # never averaged, checkpointed or sent
    head = fed.model.head
    before = head.means.clone(), head.variances.clone()
    fed.round = 1
    fed.slots = {c.id: c.id for c in fed.clients}
    for client in fed.clients:
        exp.method.receive(fed, client)
        exp.method.train(fed, client)
    assert torch.equal(head.means, before[0]) and torch.equal(head.variances, before[1])
    assert not any(p.requires_grad for p in head.parameters())


def test_the_generator_trains_on_schedule_and_clients_download_it_once():
    exp = experiment(**{"method__generator_every": 2})
    fed, method = exp.fed, exp.method
    client = fed.clients[0]
    initial = {k: v.clone() for k, v in fed.server["generator"].items()}
    fed.slots = {c.id: c.id for c in fed.clients}
    base_bytes = method.download_bytes(fed, client)
    for fed.round in (1, 2):
        for c in fed.clients:
            method.receive(fed, c)
            fed.layout.gather(fed.model_of(c), out=fed.upload_row(c))
        updates = Updates(fed.uploads[: len(fed.clients)], [Update(c.id, c.num_samples, FitResult(1, 1, 0.0)) for c in fed.clients])
        fed.global_state = method.aggregate(fed, updates)
        assert fed.server["generator_version"] == (fed.round // 2)  # trained after round 2 only
    assert any(not torch.equal(initial[k], v) for k, v in fed.server["generator"].items())
    names = {d["name"] for d in fed.diagnostics}
    assert {"generator/semantic", "generator/stability", "generator/diversity"} <= names
    generator_bytes = sum(v.numel() * 4 for v in fed.server["generator"].values() if v.is_floating_point())
    assert method.download_bytes(fed, client) == base_bytes + generator_bytes  # new generator: downloaded
    fed.round = 3
    method.train(fed, client)  # with pseudo data from now on
    assert method.download_bytes(fed, client) == base_bytes  # it has this version already


def test_pseudo_data_is_normalised_generated_images_of_drawn_classes():
    exp = experiment(**{"method__pseudo_batch": 6})
    fed = exp.fed
    draw = exp.method.pseudo_data(fed)
    x, y = draw()
    assert x.shape == (6, *fed.data.images.shape[1:]) and ((y >= 0) & (y < fed.data.num_classes)).all()
    pixels = x * fed.data.std + fed.data.mean
    assert pixels.min() >= 0 and pixels.max() <= 1 + 1e-6  # the generator's sigmoid images, normalised like real ones
