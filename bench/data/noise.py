"""Label noise on the clients' training labels (`data.label_noise`), for robustness studies.

Only the labels a client trains on are corrupted: the global test set, every local test split and
the public split keep their true labels, so a method is always scored against the truth. In each
client's training split exactly round(rate * n) labels, chosen at random, are flipped (an exact
count rather than a coin per label, so a rate of 0.2 means 20% in every run and seed and the
noise level is not itself a source of variance):

* symmetric: to a uniformly random *other* class;
* pairwise: class c to one fixed confusable class, `pairs[c]` (default (c + 1) mod C, the "pair
  flip" of Han et al. 2018's co-teaching, also used by RHFL, Fang & Ye 2022).

The flips of client i are drawn from their own stream seeded by (run seed, client i): every method
of a seed sees the same noisy labels (paired comparisons), and changing one client's rate leaves
the other clients' labels as they were.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from bench.errors import UserError

NOISE_STREAM = 0x70A5E


def client_rates(cfg: dict, clients: int) -> list[float]:
    """Each client's flip rate: `rates` (one per client) if given, else `rate` for all."""
    rates = cfg["rates"]
    if rates is None:
        return [cfg["rate"]] * clients
    if len(rates) != clients:
        raise UserError(f"config key 'data.label_noise.rates': {len(rates)} rates for {clients} clients; give one rate per client (or use data.label_noise.rate)")
    return list(rates)


def pair_targets(pairs: Sequence[int] | None, classes: int) -> np.ndarray:
    """The class each class flips to under pairwise noise: `pairs`, or c -> (c + 1) mod C."""
    if pairs is None:
        return (np.arange(classes) + 1) % classes
    targets = np.asarray(pairs, dtype=np.int64)
    if len(targets) != classes or targets.min() < 0 or targets.max() >= classes or (targets == np.arange(classes)).any():
        raise UserError(f"config key 'data.label_noise.pairs': {list(pairs)} must give, for each of the {classes} classes in order, another class index in 0..{classes - 1}")
    return targets


def flip(labels: np.ndarray, rate: float, kind: str, classes: int, targets: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A copy of `labels` with exactly round(rate * n) of them, chosen by `rng`, flipped to another class."""
    noisy = labels.copy()
    chosen = rng.permutation(len(labels))[: int(round(rate * len(labels)))]
    if kind == "pairwise":
        noisy[chosen] = targets[labels[chosen]]
    else:  # a uniform draw among the C - 1 other classes: skip over the true one
        other = rng.integers(0, classes - 1, size=len(chosen))
        noisy[chosen] = other + (other >= labels[chosen])
    return noisy


def noisy_training_labels(labels: np.ndarray, client_train: Sequence[np.ndarray], cfg: dict, seed: int, classes: int) -> np.ndarray | None:
    """Every image's training label: `labels` with each client's training split corrupted at its
    rate (None when no client has noise: training then uses the true labels)."""
    rates = client_rates(cfg, len(client_train))
    if not any(rates):
        return None
    if classes < 2:
        raise UserError("config key 'data.label_noise': label noise needs at least 2 classes")
    targets = pair_targets(cfg["pairs"], classes) if cfg["kind"] == "pairwise" else None
    noisy = labels.copy()
    for client, (index, rate) in enumerate(zip(client_train, rates)):
        rng = np.random.default_rng([seed, NOISE_STREAM, client])
        noisy[index] = flip(labels[index], rate, cfg["kind"], classes, targets, rng)
    return noisy
