"""Split a training pool across simulated clients: Dirichlet label skew, IID, k classes each.

Everything is drawn from a numpy Generator seeded by the run seed, so for a given seed every
method sees the same clients. Each client's share is then split into local train/test parts
for personalised evaluation.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from bench.errors import UserError


@dataclass(frozen=True)
class Partition:
    """Per-client dataset indices: `train[i]` and `test[i]` belong to client i."""

    train: list[np.ndarray]
    test: list[np.ndarray]

    @property
    def clients(self) -> int:
        return len(self.train)


def dirichlet_shares(labels: np.ndarray, clients: int, beta: float, rng: np.random.Generator) -> list[np.ndarray]:
    """One draw: for every class, split its samples across clients by proportions ~ Dir(beta)."""
    shares: list[list[np.ndarray]] = [[] for _ in range(clients)]
    for cls in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == cls))
        proportions = rng.dirichlet(np.full(clients, beta))
        cuts = (np.cumsum(proportions)[:-1] * len(members)).astype(int)
        for client, part in enumerate(np.split(members, cuts)):
            shares[client].append(part)
    return [np.sort(np.concatenate(parts)) for parts in shares]


def dirichlet_partition(
    labels: np.ndarray, clients: int, beta: float, min_samples: int, max_retries: int, rng: np.random.Generator
) -> list[np.ndarray]:
    """Redraw until every client has at least `min_samples`; give up after `max_retries` draws."""
    for _ in range(max_retries):
        shares = dirichlet_shares(labels, clients, beta, rng)
        if min(len(s) for s in shares) >= min_samples:
            return shares
    raise UserError(
        f"partition: no Dirichlet(beta={beta}) draw in {max_retries} tries gave each of {clients} clients "
        f">= {min_samples} samples (of {len(labels)}); raise partition.beta, lower partition.clients or partition.min_samples"
    )


def iid_partition(labels: np.ndarray, clients: int, rng: np.random.Generator) -> list[np.ndarray]:
    return [np.sort(part) for part in np.array_split(rng.permutation(len(labels)), clients)]


def pathological_partition(labels: np.ndarray, clients: int, k: int, rng: np.random.Generator) -> list[np.ndarray]:
    """Client i holds k classes; each class is split evenly among the clients holding it.

    Classes are dealt round-robin from a random permutation, so all classes are used when
    clients * k >= number of classes.
    """
    classes = np.unique(labels)
    if k > len(classes):
        raise UserError(f"config key 'partition.classes_per_client': {k} exceeds the {len(classes)} classes of the dataset")
    order = rng.permutation(classes)
    held = [order[(np.arange(k) + i * k) % len(classes)] for i in range(clients)]
    shares: list[list[np.ndarray]] = [[] for _ in range(clients)]
    for cls in classes:
        holders = [i for i in range(clients) if cls in held[i]]
        members = rng.permutation(np.flatnonzero(labels == cls))
        for holder, part in zip(holders, np.array_split(members, len(holders))):
            shares[holder].append(part)
    return [np.sort(np.concatenate(parts)) if parts else np.empty(0, dtype=int) for parts in shares]


def split_local(share: np.ndarray, test_fraction: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    shuffled = rng.permutation(share)
    n_test = int(round(test_fraction * len(share)))
    return np.sort(shuffled[n_test:]), np.sort(shuffled[:n_test])


def make_partition(pool: np.ndarray, labels: np.ndarray, cfg: dict, seed: int) -> Partition:
    """Partition the training `pool` (dataset indices; `labels` are the dataset's labels)."""
    clients, min_samples = cfg["clients"], cfg["min_samples"]
    if clients * min_samples > len(pool):
        raise UserError(
            f"config key 'partition.clients': {clients} clients x {min_samples} min_samples needs "
            f"{clients * min_samples} samples but the training pool has {len(pool)}; use fewer clients"
        )
    rng = np.random.default_rng([seed, 0xDA7A])
    pool_labels = labels[pool]
    if cfg["scheme"] == "dirichlet":
        shares = dirichlet_partition(pool_labels, clients, cfg["beta"], min_samples, cfg["max_retries"], rng)
    elif cfg["scheme"] == "iid":
        shares = iid_partition(pool_labels, clients, rng)
    else:
        shares = pathological_partition(pool_labels, clients, cfg["classes_per_client"], rng)
    small = [i for i, s in enumerate(shares) if len(s) < min_samples]
    if small:
        raise UserError(
            f"partition: client(s) {small} got fewer than partition.min_samples={min_samples} samples "
            f"under scheme '{cfg['scheme']}'; use fewer clients or lower min_samples"
        )
    train, test = zip(*(split_local(pool[s], cfg["local_test_fraction"], rng) for s in shares))
    return Partition(list(train), list(test))
