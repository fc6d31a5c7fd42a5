"""Label noise (data.label_noise): exact flip counts, symmetric and pairwise targets, per-client
rates, seeding and pairing across methods, only clients' training labels touched, run.json."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from bench.data.noise import flip, noisy_training_labels, pair_targets
from bench.engine.run import execute
from bench.engine.setup import build_experiment
from bench.errors import UserError
from conftest import tiny_config

CPU = torch.device("cpu")
LABELS = np.repeat(np.arange(4), 250)  # 4 classes, 1,000 samples


def noise(**kw) -> dict:
    return {"rate": 0.0, "kind": "symmetric", "rates": None, "pairs": None, **kw}


def test_symmetric_flips_exactly_round_rate_n_labels_each_to_another_class_uniformly():
    noisy = flip(LABELS, 0.3, "symmetric", 4, None, np.random.default_rng(0))
    changed = noisy != LABELS
    assert changed.sum() == 300  # exactly round(0.3 * 1000), not a coin per label
    assert set(np.unique(noisy)) <= {0, 1, 2, 3}
    # each of the 3 other classes gets about a third of a class's flips (75 flips per class -> 25 each)
    for cls in range(4):
        to = np.bincount(noisy[changed & (LABELS == cls)], minlength=4)
        assert to[cls] == 0 and to.sum() > 50 and (to[np.arange(4) != cls] > 0.2 * to.sum()).all()


def test_pairwise_flips_to_the_next_class_by_default_or_to_the_given_pairs():
    rng = np.random.default_rng(1)
    noisy = flip(LABELS, 0.2, "pairwise", 4, pair_targets(None, 4), rng)
    changed = noisy != LABELS
    assert changed.sum() == 200 and np.array_equal(noisy[changed], (LABELS[changed] + 1) % 4)
    noisy = flip(LABELS, 1.0, "pairwise", 4, pair_targets([2, 3, 0, 1], 4), rng)
    assert np.array_equal(noisy, np.array([2, 3, 0, 1])[LABELS])


@pytest.mark.parametrize("pairs", [[1, 2, 3], [1, 2, 3, 3], [1, 0, 3, 4], [-1, 0, 1, 2]])
def test_pairs_must_map_every_class_to_another_valid_class(pairs):
    with pytest.raises(UserError, match="label_noise.pairs"):
        pair_targets(pairs, 4)


def test_only_the_clients_training_labels_change_each_at_its_rate_and_are_seeded_per_client():
    train = [np.arange(0, 200), np.arange(300, 500), np.arange(600, 800)]
    noisy = noisy_training_labels(LABELS, train, noise(rates=[0.0, 0.1, 0.5]), seed=7, classes=4)
    assert [(noisy[t] != LABELS[t]).sum() for t in train] == [0, 20, 100]
    outside = np.setdiff1d(np.arange(1000), np.concatenate(train))
    assert np.array_equal(noisy[outside], LABELS[outside])
    # the same seed gives the same labels; changing client 2's rate leaves client 1's labels alone
    assert np.array_equal(noisy, noisy_training_labels(LABELS, train, noise(rates=[0.0, 0.1, 0.5]), seed=7, classes=4))
    other = noisy_training_labels(LABELS, train, noise(rates=[0.0, 0.1, 0.2]), seed=7, classes=4)
    assert np.array_equal(other[train[1]], noisy[train[1]]) and not np.array_equal(other[train[2]], noisy[train[2]])
    assert not np.array_equal(noisy_training_labels(LABELS, train, noise(rates=[0.0, 0.1, 0.5]), seed=8, classes=4), noisy)
    assert noisy_training_labels(LABELS, train, noise(), seed=7, classes=4) is None


def test_per_client_rates_need_one_rate_per_client():
    with pytest.raises(UserError, match="label_noise.rates"):
        noisy_training_labels(LABELS, [np.arange(10)] * 3, noise(rates=[0.1, 0.2]), seed=0, classes=4)


def test_training_batches_see_the_noisy_labels_evaluation_the_true_ones_the_same_for_every_method():
    exps = [build_experiment(tiny_config(method=m, data__label_noise={"rate": 0.4}, data__public_fraction=0.2), CPU) for m in ("fedavg", "fedprox")]
    data, fed = exps[0].fed.data, exps[0].fed
    assert torch.equal(data.train_labels, exps[1].fed.data.train_labels)  # paired across methods
    trained = torch.cat([c.train for c in fed.clients])
    untouched = torch.cat([exps[0].test_index, fed.public, *[c.test for c in fed.clients]])
    assert torch.equal(data.train_labels[untouched], data.labels[untouched])
    for client in fed.clients:
        assert data.flip_rate(client.train) == pytest.approx(round(0.4 * len(client.train)) / len(client.train))
    _, y_train = data.batch(trained, torch.Generator().manual_seed(0))
    _, y_eval = data.batch(trained)
    assert torch.equal(y_train, data.train_labels[trained]) and torch.equal(y_eval, data.labels[trained])


def test_run_json_records_each_clients_realised_flip_rate(tmp_path):
    cfg = tiny_config(train__rounds=1, data__label_noise={"rates": [0.0, 0.25, 0.5], "kind": "pairwise"})
    execute(cfg, tmp_path, show_progress=False)
    clients = json.loads((tmp_path / "run.json").read_text())["data"]["clients"]
    for client, rate in zip(clients, (0.0, 0.25, 0.5)):
        assert client["label_noise"] == pytest.approx(round(rate * client["train"]) / client["train"])
