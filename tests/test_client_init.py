"""train.client_init: independent starts each client reporting in round 1 from its own seeded
random model (the notebook's "different random inits, averaged once"); common is the default."""

from __future__ import annotations

import pandas as pd
import torch

from bench.engine.run import RunPaths
from bench.engine.setup import build_experiment
from conftest import assert_resume_is_exact, tiny_config

CPU = torch.device("cpu")


def round_one(method: str, client_init: str, reporting=(0, 1, 2)):
    exp = build_experiment(tiny_config(method=method, train__client_init=client_init), CPU)
    exp.fed.round, exp.fed.slots = 1, {c: row for row, c in enumerate(reporting)}
    return exp


def test_independent_clients_start_round_one_from_their_own_models():
    exp = round_one("fedavg", "independent", reporting=(0, 1))
    fed, method = exp.fed, exp.method
    starts = [method.start_state(fed, c).clone() for c in fed.clients]
    assert not torch.equal(starts[0], fed.global_state) and not torch.equal(starts[0], starts[1])
    assert torch.equal(starts[2], fed.global_state)  # client 2 does not report in round 1
    assert torch.equal(method.start_state(fed, fed.clients[0]), starts[0])  # a pure rule: asked twice, the same model
    fed.round = 2
    assert all(torch.equal(method.start_state(fed, c), fed.global_state) for c in fed.clients)  # then the server's model
    # seeded by the run seed and the client: the same for another method of the seed
    other = round_one("fedprox", "independent", reporting=(0, 1))
    assert torch.equal(other.method.start_state(other.fed, other.fed.clients[1]), starts[1])


def test_common_clients_all_start_from_the_servers_model():
    exp = round_one("fedavg", "common")
    assert all(torch.equal(exp.method.start_state(exp.fed, c), exp.fed.global_state) for c in exp.fed.clients)


def test_independent_init_changes_the_run_and_resumes_exactly(tmp_path, monkeypatch):
    cfg = tiny_config(train__rounds=2, train__client_init="independent")
    assert_resume_is_exact(cfg, tmp_path / "independent", monkeypatch, crash_round=2)
    assert_resume_is_exact(tiny_config(train__rounds=2), tmp_path / "common", monkeypatch, crash_round=2)
    independent, common = (pd.read_parquet(RunPaths(tmp_path / d / "straight").metrics) for d in ("independent", "common"))
    assert not independent["value"].equals(common["value"])
