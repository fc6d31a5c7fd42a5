"""Partitions: Dirichlet statistics, determinism, minimum sizes, bounded retries, IID, k classes."""

from __future__ import annotations

import numpy as np
import pytest

from bench.data.partition import dirichlet_partition, iid_partition, make_partition, pathological_partition
from bench.errors import UserError

LABELS = np.repeat(np.arange(5), 400)  # 5 balanced classes, 2,000 samples


def config(**kw) -> dict:
    base = {"scheme": "dirichlet", "clients": 4, "beta": 0.5, "classes_per_client": 2, "min_samples": 10, "max_retries": 100, "local_test_fraction": 0.2}
    return {**base, **kw}


def class_shares(parts: list[np.ndarray]) -> np.ndarray:
    """clients x classes: fraction of each class held by each client."""
    counts = np.array([np.bincount(LABELS[p], minlength=5) for p in parts])
    return counts / counts.sum(0, keepdims=True)


def test_every_sample_goes_to_exactly_one_client_and_local_split():
    pool = np.arange(len(LABELS))
    part = make_partition(pool, LABELS, config(), seed=3)
    everything = np.concatenate(part.train + part.test)
    assert np.array_equal(np.sort(everything), pool)
    for train, test in zip(part.train, part.test):
        assert abs(len(test) - 0.2 * (len(train) + len(test))) <= 1


def test_same_seed_same_partition_other_seed_other_partition():
    pool = np.arange(len(LABELS))
    a, b = make_partition(pool, LABELS, config(), 1), make_partition(pool, LABELS, config(), 1)
    c = make_partition(pool, LABELS, config(), 2)
    assert all(np.array_equal(x, y) for x, y in zip(a.train, b.train))
    assert not all(np.array_equal(x, y) for x, y in zip(a.train, c.train))


def test_dirichlet_class_shares_follow_the_concentration():
    """E[share] = 1/K for every beta; Var[share] = (1/K)(1 - 1/K)/(K*beta + 1) (Dirichlet)."""
    k = 4
    for beta in (0.1, 1.0, 100.0):
        shares = np.concatenate([class_shares(dirichlet_partition(LABELS, k, beta, 1, 10, np.random.default_rng(s))).ravel() for s in range(300)])
        expected_var = (1 / k) * (1 - 1 / k) / (k * beta + 1)
        assert abs(shares.mean() - 1 / k) < 1e-9  # each class is fully distributed
        assert shares.var() == pytest.approx(expected_var, rel=0.15)


def test_smaller_beta_means_more_skew():
    rng = np.random.default_rng(0)
    skew = {beta: np.mean([class_shares(dirichlet_partition(LABELS, 4, beta, 1, 10, rng)).max(0).mean() for _ in range(50)]) for beta in (0.1, 0.5, 10)}
    assert skew[0.1] > skew[0.5] > skew[10] > 0.25


def test_min_samples_is_respected_by_redrawing():
    for seed in range(20):
        parts = dirichlet_partition(LABELS, 8, 0.1, 60, 1000, np.random.default_rng(seed))
        assert min(len(p) for p in parts) >= 60


def test_impossible_minimum_fails_after_bounded_retries():
    with pytest.raises(UserError, match="no Dirichlet.*in 5 tries.*partition.beta"):
        dirichlet_partition(LABELS, 10, 0.01, 199, 5, np.random.default_rng(0))


def test_more_clients_than_the_data_allows_is_a_clear_error():
    with pytest.raises(UserError, match="config key 'partition.clients'"):
        make_partition(np.arange(50), LABELS, config(clients=10, min_samples=10), 0)


def test_iid_gives_equal_sizes():
    parts = iid_partition(LABELS, 3, np.random.default_rng(0))
    assert sorted(len(p) for p in parts) == [666, 667, 667]


def test_pathological_gives_k_classes_each():
    parts = pathological_partition(LABELS, 5, 2, np.random.default_rng(0))
    assert [len(np.unique(LABELS[p])) for p in parts] == [2] * 5
    assert np.array_equal(np.sort(np.concatenate(parts)), np.arange(len(LABELS)))
    with pytest.raises(UserError, match="classes_per_client"):
        pathological_partition(LABELS, 2, 6, np.random.default_rng(0))
