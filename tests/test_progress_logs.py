"""Progress a user sees when output goes to a file: a line at least every ~30 s while a round or a
cache build runs, and each round's line naming the model its scores are of."""

from __future__ import annotations

import logging

import torch

from bench.engine.run import Progress, play_round
from bench.engine.setup import build_experiment
from bench.heartbeat import Heartbeat
from conftest import tiny_config


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_a_heartbeat_logs_only_once_its_interval_has_passed(caplog):
    clock, log = Clock(), logging.getLogger("test.heartbeat")
    beat = Heartbeat(log, every=30.0, clock=clock)
    with caplog.at_level(logging.INFO, logger="test.heartbeat"):
        clock.now = 29.0
        assert not beat("early")
        clock.now = 30.0
        assert beat("%d of %d", 1, 4)
        clock.now = 50.0
        assert not beat("too soon after the last")
        beat.reset()  # another line was logged at 50 s
        clock.now = 79.0
        assert not beat("within 30 s of the reset")
    assert caplog.messages == ["1 of 4"]


def test_a_round_logs_its_clients_progress(caplog):
    exp = build_experiment(tiny_config(method="fedavg"), torch.device("cpu"))
    exp.fed.round = 1
    with caplog.at_level(logging.INFO, logger="test.round"):
        play_round(exp, Progress(), Heartbeat(logging.getLogger("test.round"), every=0.0))
    clients = len(exp.fed.plan.sampled)
    assert caplog.messages[-1] == f"round 1: {clients} of {clients} reporting clients trained"


def test_each_round_line_names_the_scored_model(tmp_path, caplog):
    from bench.engine.run import execute

    cfg = tiny_config(method="fedavg")
    with caplog.at_level(logging.INFO, logger="fedrank"):
        execute(cfg, tmp_path / "run", show_progress=False)
    rounds = [m for m in caplog.messages if m.startswith("round 1/")]
    assert rounds and rounds[0].startswith("round 1/") and " global model: acc=" in rounds[0]
