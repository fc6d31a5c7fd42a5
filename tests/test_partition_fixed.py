"""The `fixed` partition scheme: a given number of random images per client (the notebook's
clients x data-per-client study), disjoint, seeded, "as many as fit" by default."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from bench.data.partition import fixed_partition, make_partition
from bench.engine.setup import build_experiment
from bench.errors import UserError
from conftest import tiny_config

LABELS = np.repeat(np.arange(5), 40)  # 200 samples


def config(**kw) -> dict:
    base = {"scheme": "fixed", "clients": 3, "samples_per_client": 25, "min_samples": 10, "max_retries": 1, "local_test_fraction": 0.2,
            "val_fraction": 0.0, "holdout": None}
    return {**base, **kw}


def test_each_client_gets_exactly_the_asked_number_of_distinct_pool_images():
    pool = np.arange(1000, 1200)
    part = make_partition(pool, np.concatenate([np.zeros(1000, int), LABELS]), config(), seed=3)
    shares = [np.concatenate([train, test]) for train, test in zip(part.train, part.test)]
    assert [len(s) for s in shares] == [25, 25, 25] and [len(t) for t in part.test] == [5, 5, 5]
    everything = np.concatenate(shares)
    assert len(np.unique(everything)) == 75 and np.isin(everything, pool).all()


def test_null_takes_as_many_as_fit_and_too_many_is_an_error():
    rng = np.random.default_rng(0)
    assert [len(s) for s in fixed_partition(200, 3, None, rng)] == [66, 66, 66]
    with pytest.raises(UserError, match="samples_per_client"):
        fixed_partition(200, 3, 67, rng)


def test_same_seed_same_clients_other_seed_other_clients():
    pool = np.arange(200)
    a, b = (make_partition(pool, LABELS, config(local_test_fraction=0.0), seed=1) for _ in range(2))
    assert all(np.array_equal(x, y) for x, y in zip(a.train, b.train))
    c = make_partition(pool, LABELS, config(local_test_fraction=0.0), seed=2)
    assert not all(np.array_equal(x, y) for x, y in zip(a.train, c.train))


def test_the_scheme_runs_from_the_config():
    exp = build_experiment(tiny_config(partition__scheme="fixed", partition__samples_per_client=40, partition__local_test_fraction=0.0), torch.device("cpu"))
    assert [c.num_samples for c in exp.fed.clients] == [40, 40, 40]
