"""Who takes part in a round: the sampled clients, the ones that drop out, the stragglers.

Each is drawn from its own generator seeded by (run seed, round, aspect), so every method of a
seed sees the same participants, dropouts and stragglers in every round (comparisons stay
paired), and changing the dropout rate does not change who is sampled. As FL-bench and
FedProx's systems-heterogeneity experiments do: a share (`train.participation`) of the clients is
sampled without replacement each round; a sampled client fails to report with probability
`train.dropout` (it downloads the model, then its update never arrives and it keeps nothing of
the round, as after a crash); a reporting client is a straggler with probability
`train.stragglers` and then completes only a uniformly random share of its local steps
(FedProx, Li et al. 2020, Sec. 5.2: "x < E" local work).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from bench.engine.seeds import derive_seed
from bench.errors import UserError

PARTICIPATION_STREAM = 0x9A27
SAMPLE, DROPOUT, STRAGGLE = range(3)


@dataclass(frozen=True)
class RoundPlan:
    """One round's participation: client ids sampled, which of them drop out, stragglers' work."""

    sampled: tuple[int, ...]
    dropped: frozenset[int]
    work: dict[int, float]  # straggler id -> share of its local steps it completes, in [0, 1)

    def reports(self, client: int) -> bool:
        return client not in self.dropped


def clients_per_round(participation: float, clients: int) -> int:
    """A fraction <= 1 of the clients (at least one), or a count of clients (> 1)."""
    if participation <= 1:
        return max(1, round(participation * clients))
    if participation > clients:
        raise UserError(f"config key 'train.participation': {participation:g} clients per round, but the partition has {clients} clients; "
                        "give a fraction <= 1 or at most that many")
    return int(participation)


def _rng(seed: int, round: int, aspect: int) -> np.random.Generator:
    return np.random.default_rng(derive_seed(seed, round, PARTICIPATION_STREAM, aspect))


def draw_round(train: dict, seed: int, round: int, clients: int) -> RoundPlan:
    """The participation of round `round` under the `train` config section."""
    k = clients_per_round(train["participation"], clients)
    sampled = np.arange(clients) if k == clients else np.sort(_rng(seed, round, SAMPLE).choice(clients, size=k, replace=False))
    fails = _rng(seed, round, DROPOUT).random(clients) < train["dropout"]
    straggler = _rng(seed, round, STRAGGLE).random((2, clients))
    dropped = frozenset(int(c) for c in sampled if fails[c])
    work = {int(c): float(straggler[1, c]) for c in sampled if straggler[0, c] < train["stragglers"] and int(c) not in dropped}
    return RoundPlan(tuple(int(c) for c in sampled), dropped, work)
