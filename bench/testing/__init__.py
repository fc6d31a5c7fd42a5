"""The method author's test kit: a small federation to test a method's equations against
hand-computed values, without running a whole experiment.

    from bench.testing import federation, report, shifted

    exp = federation("fedavgm", clients=3, method__momentum=0.9)   # a tiny real federation on CPU
    fed = exp.fed
    updates = report(fed, shifted(fed, [0.2, 0.2, 0.2]), sizes=[5, 3, 2])
    new = exp.method.aggregate(fed, updates)                       # compare with your hand computation

`federation` builds a run of `tiny_config` (synthetic 8-pixel images, a two-layer CNN, 3 clients;
`section__key=value` overrides any config key); `report` makes the clients report given states
(rows of a (K, P) tensor), sample counts and `Update.extra` payloads, as the engine would;
`shifted` gives the global state moved by a number per client, so a mean update is known exactly;
`play` runs whole rounds through the engine's round loop. `bench.testing.conformance` is the suite
every method passes (`fedrank check-method`).
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Sequence

import torch

from bench.config import resolve, set_key
from bench.engine.federation import Federation, Update, Updates
from bench.engine.trainer import FitResult

CPU = torch.device("cpu")
NO_FIT = FitResult(steps=1, samples=1, loss=0.0)  # what a reported client's fit says when the test only aggregates


def tiny_config(**overrides) -> dict:
    """A resolved config that trains in well under a second per round (synthetic data);
    `section__key=value` sets config key section.key."""
    cfg: dict = {
        "data": {"name": "synthetic"},
        "partition": {"clients": 3, "beta": 1.0, "min_samples": 10},
        "model": {"name": "small_cnn", "widths": [8, 16]},
        "train": {"rounds": 3, "lr": 0.003, "batch_size": 16},
        "runtime": {"threads": 1},
    }
    for key, value in overrides.items():
        set_key(cfg, key.replace("__", "."), value)
    return resolve(cfg)


def needs(method: str) -> dict:
    """`tiny_config` overrides the method needs on the synthetic setting (`Method.test_setting`;
    its files go to the temporary folder)."""
    from bench.methods import registry

    return registry()[method].test_setting(Path(tempfile.gettempdir()))


def federation(method: str = "fedavg", clients: int = 3, **overrides):
    """A built experiment (`.fed`, `.method`) of `method` with `clients` clients on CPU."""
    from bench.engine.setup import build_experiment

    return build_experiment(tiny_config(method=method, partition__clients=clients, **overrides), CPU)


def shifted(fed: Federation, deltas: Sequence[float]) -> torch.Tensor:
    """(K, P): row k is the global state with every element moved by deltas[k]."""
    return fed.global_state + torch.tensor(deltas, dtype=fed.global_state.dtype, device=fed.device)[:, None]


def report(fed: Federation, states: torch.Tensor, sizes: Sequence[int], *, clients: Sequence[int] | None = None,
           extras: Sequence[dict] | None = None, fits: Sequence[FitResult] | None = None) -> Updates:
    """The Updates of clients `clients` (default 0..K-1) reporting `states[k]` after training on
    `sizes[k]` samples, with `extras[k]` as Update.extra: their rows of `fed.uploads` and
    `fed.slots` are set as in a round."""
    clients = list(range(len(sizes))) if clients is None else list(clients)
    if not (len(states) == len(sizes) == len(clients)):
        raise ValueError(f"report: {len(states)} states, {len(sizes)} sizes and {len(clients)} clients; give one of each per client")
    fed.uploads[: len(clients)] = states
    fed.slots = {c: row for row, c in enumerate(clients)}
    extras = extras or [{} for _ in clients]
    fits = fits or [NO_FIT for _ in clients]
    items = [Update(c, n, fit, extra=dict(extra)) for c, n, fit, extra in zip(clients, sizes, fits, extras)]
    return Updates(fed.uploads[: len(clients)], items)


def play(exp, rounds: int = 1) -> list[dict]:
    """Play the next `rounds` rounds through the engine's round loop (fresh experiments run
    `setup` and `prepare` first); returns the last round's evaluation rows."""
    from bench.engine.run import Progress, play_round

    if exp.fed.round == 0:
        exp.method.setup(exp.fed)
        exp.method.prepare(exp.fed)
    rows: list[dict] = []
    for _ in range(rounds):
        exp.fed.round += 1
        rows = play_round(exp, Progress())
    return rows
