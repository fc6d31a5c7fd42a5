"""Partitions: Dirichlet statistics, determinism, minimum sizes, bounded retries, IID, k classes."""

from __future__ import annotations

import numpy as np
import pytest

from bench.data.partition import dirichlet_partition, iid_partition, make_partition, pathological_partition, quantity_partition
from bench.errors import UserError

LABELS = np.repeat(np.arange(5), 400)  # 5 balanced classes, 2,000 samples


def config(**kw) -> dict:
    base = {"scheme": "dirichlet", "clients": 4, "beta": 0.5, "classes_per_client": 2, "min_samples": 10, "max_retries": 100, "local_test_fraction": 0.2,
            "val_fraction": 0.0, "holdout": None}
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


# ---- quantity skew -------------------------------------------------------------------------------
def test_quantity_skew_sizes_follow_the_dirichlet_and_labels_stay_iid():
    """Client size shares ~ Dir(beta): mean 1/K, variance (1/K)(1 - 1/K)/(K*beta + 1); each client's
    label mix is the pool's (5 balanced classes: 20% each)."""
    k, beta = 4, 0.5
    shares = np.array([[len(p) / len(LABELS) for p in quantity_partition(len(LABELS), k, beta, 1, 10, np.random.default_rng(s))] for s in range(400)])
    assert shares.sum(axis=1) == pytest.approx(1)
    assert shares.mean() == pytest.approx(1 / k)
    assert shares.var() == pytest.approx((1 / k) * (1 - 1 / k) / (k * beta + 1), rel=0.15)
    big = max(quantity_partition(len(LABELS), k, beta, 1, 10, np.random.default_rng(0)), key=len)
    assert np.bincount(LABELS[big], minlength=5) / len(big) == pytest.approx([0.2] * 5, abs=0.05)


def test_quantity_skew_respects_the_minimum_or_fails_clearly():
    part = make_partition(np.arange(len(LABELS)), LABELS, config(scheme="quantity", clients=5, beta=0.3, min_samples=50), seed=1)
    assert min(len(a) + len(b) for a, b in zip(part.train, part.test)) >= 50
    with pytest.raises(UserError, match=r"no Dirichlet\(beta=0.01\) quantity-skew .* in 5 tries"):
        quantity_partition(len(LABELS), 10, 0.01, 150, 5, np.random.default_rng(0))


# ---- natural partitions --------------------------------------------------------------------------
SITES = np.repeat([0, 1, 2, -1], 500)  # 3 centres of 500 images; the last 500 have no centre
SITE_NAMES = ["north", "south", "east", "west"]  # "west" has no images


def natural(**kw) -> dict:
    return config(**{"scheme": "natural", "sites": None, **kw})


def test_natural_partition_gives_one_client_per_centre_with_images():
    pool = np.arange(0, 2000, 2)
    part = make_partition(pool, LABELS, natural(), seed=0, sites=SITES, site_names=SITE_NAMES)
    assert part.names == ["north", "south", "east"]
    for code, (train, test) in enumerate(zip(part.train, part.test)):
        members = np.concatenate([train, test])
        assert (SITES[members] == code).all() and len(members) == 250 and len(test) == 50
    assert any("250 training image(s) of other or unknown centres" in n for n in part.notes)


def test_natural_partition_takes_chosen_centres_in_order_and_the_official_test_per_centre():
    pool, test = np.arange(0, 2000, 2), np.arange(1, 2000, 2)
    part = make_partition(pool, LABELS, natural(sites=["east", "north"]), seed=0, sites=SITES, site_names=SITE_NAMES, official_test=test)
    assert part.names == ["east", "north"]
    assert np.array_equal(part.train[0], pool[SITES[pool] == 2]) and np.array_equal(part.test[0], test[SITES[test] == 2])


def test_natural_partition_errors_name_the_fix():
    pool = np.arange(2000)
    with pytest.raises(UserError, match="natural partitions need each image's acquisition centre.*data.sites_file"):
        make_partition(pool, LABELS, natural(), seed=0)
    with pytest.raises(UserError, match=r"'partition.sites': \['west'\] not among the centres with training images \(north, south, east\)"):
        make_partition(pool, LABELS, natural(sites=["north", "west"]), seed=0, sites=SITES, site_names=SITE_NAMES)
    with pytest.raises(UserError, match="names a centre twice"):
        make_partition(pool, LABELS, natural(sites=["north", "north"]), seed=0, sites=SITES, site_names=SITE_NAMES)
    small = np.concatenate([np.arange(500, 1500), [0, 1, 2]])  # "north" keeps 3 images
    with pytest.raises(UserError, match=r"client\(s\) north \(2\) got fewer than partition.min_samples=10 .*partition.sites=\[south,east\]"):
        make_partition(small, LABELS, natural(), seed=0, sites=SITES, site_names=SITE_NAMES)


# ---- local splits never separate a group -----------------------------------------------------------
def test_local_test_splits_keep_groups_whole_and_close_to_the_fraction():
    groups = np.arange(len(LABELS)) // 4  # groups of 4 images (e.g. copies of one original)
    part = make_partition(np.arange(len(LABELS)), LABELS, config(), seed=0, groups=groups)
    for train, test in zip(part.train, part.test):
        assert not set(groups[train]) & set(groups[test])
        assert abs(len(test) - 0.2 * (len(train) + len(test))) <= 4
