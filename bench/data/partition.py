"""Split a training pool across simulated clients: Dirichlet label skew, IID, k classes each,
Dirichlet quantity skew, a fixed number of images each, or the natural partition (one client per
acquisition centre).

Everything is drawn from a numpy Generator seeded by the run seed, so for a given seed every
method sees the same clients. Each client's share is then split into local train/test parts
for personalised evaluation, never separating a patient/lesion/copy group; in a natural
partition of a dataset with an official test split, a client's local test part is its centre's
share of that split instead (FLamby's per-centre test sets). With `val_fraction` > 0 each
client's training part gives up a validation split (whole groups, from its own seeded stream, so
the train/test splits are those of `val_fraction` = 0 minus the validation images). A natural
partition can hold one centre out (`holdout`): it joins no client, and its own train/test split
is kept for evaluating the federation's model on an unseen centre.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np

from bench.errors import UserError


VALIDATION_STREAM = 0x7A1  # the validation splits' own generator: the train/test splits do not depend on them
# The partition keys only some schemes read; the others ignore them (a pathological partition has
# no beta), so the statistics leave them out of those runs' setting names.
SCHEME_KEYS = {
    "clients": {"dirichlet", "iid", "pathological", "quantity", "fixed"},
    "beta": {"dirichlet", "quantity"},
    "max_retries": {"dirichlet", "quantity"},
    "classes_per_client": {"pathological"},
    "samples_per_client": {"fixed"},
    "sites": {"natural"},
    "holdout": {"natural"},
}


def scheme_reads(scheme: str, key: str) -> bool:
    """Whether a partition of this scheme depends on `partition.<key>`."""
    return scheme in SCHEME_KEYS.get(key, {scheme})


@dataclass(frozen=True)
class HeldOut:
    """A centre kept out of the federation: its name and its own train/test split."""

    name: str
    train: np.ndarray
    test: np.ndarray


@dataclass(frozen=True)
class Partition:
    """Per-client dataset indices: `train[i]`, `test[i]` and `val[i]` belong to client i (named
    `names[i]`); `holdout` is the centre held out of the federation, if any."""

    train: list[np.ndarray]
    test: list[np.ndarray]
    names: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    val: list[np.ndarray] = field(default_factory=list)
    holdout: HeldOut | None = None

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


def redraw_until_large_enough(draw: Callable[[], list[np.ndarray]], min_samples: int, max_retries: int, what: str) -> list[np.ndarray]:
    """Redraw until every client has at least `min_samples`; give up after `max_retries` draws."""
    for _ in range(max_retries):
        shares = draw()
        if min(len(s) for s in shares) >= min_samples:
            return shares
    raise UserError(
        f"partition: no {what} draw in {max_retries} tries gave each client >= {min_samples} samples; "
        "raise partition.beta, lower partition.clients or partition.min_samples"
    )


def dirichlet_partition(
    labels: np.ndarray, clients: int, beta: float, min_samples: int, max_retries: int, rng: np.random.Generator
) -> list[np.ndarray]:
    what = f"Dirichlet(beta={beta}) label-skew of {len(labels)} samples over {clients} clients"
    return redraw_until_large_enough(lambda: dirichlet_shares(labels, clients, beta, rng), min_samples, max_retries, what)


def quantity_shares(n: int, clients: int, beta: float, rng: np.random.Generator) -> list[np.ndarray]:
    """One draw: client sizes in proportions ~ Dir(beta), samples dealt at random (labels iid)."""
    cuts = (np.cumsum(rng.dirichlet(np.full(clients, beta)))[:-1] * n).astype(int)
    return [np.sort(part) for part in np.split(rng.permutation(n), cuts)]


def quantity_partition(
    n: int, clients: int, beta: float, min_samples: int, max_retries: int, rng: np.random.Generator
) -> list[np.ndarray]:
    what = f"Dirichlet(beta={beta}) quantity-skew of {n} samples over {clients} clients"
    return redraw_until_large_enough(lambda: quantity_shares(n, clients, beta, rng), min_samples, max_retries, what)


def iid_partition(labels: np.ndarray, clients: int, rng: np.random.Generator) -> list[np.ndarray]:
    return [np.sort(part) for part in np.array_split(rng.permutation(len(labels)), clients)]


def fixed_partition(n: int, clients: int, per_client: int | None, rng: np.random.Generator) -> list[np.ndarray]:
    """`per_client` random samples for each client, disjoint (None: as many as fit, n // clients);
    the rest of the pool is left unused, so data per client is a controlled variable."""
    per_client = n // clients if per_client is None else per_client
    if clients * per_client > n:
        raise UserError(
            f"config key 'partition.samples_per_client': {clients} clients x {per_client} samples needs {clients * per_client} "
            f"but the training pool has {n}; lower it, use fewer clients, or set it to null (as many as fit)"
        )
    order = rng.permutation(n)
    return [np.sort(order[i * per_client:(i + 1) * per_client]) for i in range(clients)]


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


def split_local(share: np.ndarray, test_fraction: float, rng: np.random.Generator, groups: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """A client's share (dataset indices) -> (local train, local test), whole groups on one side.

    With groups, groups are taken in random order until the test part is as close as possible
    to `test_fraction` of the share.
    """
    n_test = int(round(test_fraction * len(share)))
    if groups is None:
        shuffled = rng.permutation(share)
        return np.sort(shuffled[n_test:]), np.sort(shuffled[:n_test])
    names, member_of = np.unique(groups[share], return_inverse=True)
    order = rng.permutation(len(names))
    filled = np.cumsum(np.bincount(member_of, minlength=len(names))[order])
    taken = int(np.argmin(np.abs(np.concatenate([[0], filled]) - n_test)))
    in_test = np.isin(member_of, order[:taken])
    return np.sort(share[~in_test]), np.sort(share[in_test])


def natural_shares(pool: np.ndarray, sites: np.ndarray | None, site_names: Sequence[str], chosen: list[str] | None) -> tuple[list[np.ndarray], list[str], list[str]]:
    """One share (dataset indices) per acquisition centre, in `chosen` order or the dataset's."""
    if sites is None:
        raise UserError(
            "config key 'partition.scheme': natural partitions need each image's acquisition centre, and this dataset has none; "
            "set data.sites_file (isic2019: FLamby's flamby_train_test_split.csv; ham10000: HAM10000_metadata_dataverse.csv) or choose another scheme"
        )
    present = [name for code, name in enumerate(site_names) if (sites[pool] == code).any()]
    names = chosen if chosen is not None else present
    if len(set(names)) != len(names):
        raise UserError(f"config key 'partition.sites': {names} names a centre twice; list each centre once")
    unknown = [n for n in names if n not in present]
    if unknown:
        raise UserError(f"config key 'partition.sites': {unknown} not among the centres with training images ({', '.join(present)})")
    shares = [pool[sites[pool] == site_names.index(n)] for n in names]
    unused = len(pool) - sum(len(s) for s in shares)
    notes = [f"natural partition: one client per centre ({', '.join(names)})"]
    if unused:
        notes.append(f"{unused} training image(s) of other or unknown centres are used by no client")
    return shares, names, notes


def check_min_samples(sizes: list[int], names: list[str], min_samples: int, scheme: str) -> None:
    small = [f"{name} ({size})" for name, size in zip(names, sizes) if size < min_samples]
    if small:
        large = ",".join(name for name, size in zip(names, sizes) if size >= min_samples)
        fix = f"keep the others with --set partition.sites=[{large}] or lower partition.min_samples" if scheme == "natural" else "use fewer clients or lower partition.min_samples"
        raise UserError(f"partition: client(s) {', '.join(small)} got fewer than partition.min_samples={min_samples} training samples under scheme '{scheme}'; {fix}")


def centre_splits(shares: list[np.ndarray], names: list[str], cfg: dict, rng: np.random.Generator, groups, sites, site_names, official_test) -> tuple[list, list]:
    """Each centre's (train, local test): a grouped split of its share, or with an official test
    split its share and its part of that split (as FLamby evaluates per centre)."""
    if official_test is None:
        train, test = zip(*(split_local(s, cfg["local_test_fraction"], rng, groups) for s in shares))
        return list(train), list(test)
    return list(shares), [official_test[sites[official_test] == site_names.index(n)] for n in names]


def held_out_centre(names: list[str], holdout: str | None) -> list[str]:
    """The federation's centres: `names` without the held-out one (which must be among them)."""
    if holdout is None:
        return names
    if holdout not in names:
        raise UserError(f"config key 'partition.holdout': '{holdout}' is not among the centres ({', '.join(names)}); hold out one of them")
    if len(names) < 2:
        raise UserError(f"config key 'partition.holdout': holding out '{holdout}' leaves no centre to train on; list more centres in partition.sites")
    return [n for n in names if n != holdout]


def make_natural(pool: np.ndarray, cfg: dict, rng: np.random.Generator, groups, sites, site_names, official_test) -> Partition:
    shares, names, notes = natural_shares(pool, sites, site_names, cfg["sites"])
    federation = held_out_centre(names, cfg["holdout"])
    ordered = federation + [n for n in names if n not in federation]  # the held-out centre's split is drawn last
    train, test = centre_splits([shares[names.index(n)] for n in ordered], ordered, cfg, rng, groups, sites, site_names, official_test)
    if official_test is not None:
        notes.append("local test sets: each centre's part of the official test split")
    holdout = None
    if cfg["holdout"] is not None:
        holdout = HeldOut(cfg["holdout"], train.pop(), test.pop())
        notes.append(f"centre {holdout.name} held out of the federation ({len(holdout.train)} training, {len(holdout.test)} test images): "
                     "evaluated as an unseen centre")
    check_min_samples([len(t) for t in train], federation, cfg["min_samples"], "natural")
    return Partition(train, test, federation, notes, holdout=holdout)


def with_validation(part: Partition, fraction: float, seed: int, groups: np.ndarray | None) -> Partition:
    """`part` with each client's validation split (`fraction` of its training part, whole
    groups) taken from its training part; from its own stream, so train/test stay as drawn."""
    if fraction == 0:
        return dataclasses.replace(part, val=[t[:0] for t in part.train])
    rng = np.random.default_rng([seed, 0xDA7A, VALIDATION_STREAM])
    train, val = zip(*(split_local(t, fraction, rng, groups) for t in part.train))
    empty = [name for name, v in zip(part.names, val) if not len(v)]
    if empty:
        raise UserError(f"partition: client(s) {', '.join(empty)} got no validation images at partition.val_fraction={fraction:g}; raise it or give clients more data")
    return dataclasses.replace(part, train=list(train), val=list(val))


MIN_TRAINING_IMAGES = 2  # a client with fewer takes no local step (a batch of one is skipped: BatchNorm cannot train on it)


def trainable(part: Partition) -> Partition:
    """`part`, if every client keeps enough training images after its local test and validation
    splits to take a step; a client that cannot would report a loss of 0 from no training."""
    short = [f"{name} ({len(t)})" for name, t in zip(part.names, part.train) if len(t) < MIN_TRAINING_IMAGES]
    if short:
        raise UserError(f"partition: client(s) {', '.join(short)} keep fewer than {MIN_TRAINING_IMAGES} training images after the local test and "
                        "validation splits, too few for a local step; lower partition.local_test_fraction or partition.val_fraction, or give clients more data")
    return part


def make_partition(
    pool: np.ndarray,
    labels: np.ndarray,
    cfg: dict,
    seed: int,
    *,
    groups: np.ndarray | None = None,
    sites: np.ndarray | None = None,
    site_names: Sequence[str] = (),
    official_test: np.ndarray | None = None,
) -> Partition:
    """Partition the training `pool` (dataset indices; `labels`, `groups` and `sites` are per
    dataset image; `official_test` is the official test split, if the run uses one)."""
    rng = np.random.default_rng([seed, 0xDA7A])
    if cfg["scheme"] == "natural":
        return trainable(with_validation(make_natural(pool, cfg, rng, groups, sites, list(site_names), official_test), cfg["val_fraction"], seed, groups))
    if cfg["holdout"] is not None:
        raise UserError(f"config key 'partition.holdout': holding a centre out needs partition.scheme=natural (the scheme is '{cfg['scheme']}')")
    clients, min_samples = cfg["clients"], cfg["min_samples"]
    if clients * min_samples > len(pool):
        raise UserError(
            f"config key 'partition.clients': {clients} clients x {min_samples} min_samples needs "
            f"{clients * min_samples} samples but the training pool has {len(pool)}; use fewer clients"
        )
    pool_labels = labels[pool]
    if cfg["scheme"] == "dirichlet":
        shares = dirichlet_partition(pool_labels, clients, cfg["beta"], min_samples, cfg["max_retries"], rng)
    elif cfg["scheme"] == "quantity":
        shares = quantity_partition(len(pool), clients, cfg["beta"], min_samples, cfg["max_retries"], rng)
    elif cfg["scheme"] == "fixed":
        shares = fixed_partition(len(pool), clients, cfg["samples_per_client"], rng)
    elif cfg["scheme"] == "iid":
        shares = iid_partition(pool_labels, clients, rng)
    else:
        shares = pathological_partition(pool_labels, clients, cfg["classes_per_client"], rng)
    names = [str(i) for i in range(clients)]
    check_min_samples([len(s) for s in shares], names, min_samples, cfg["scheme"])
    train, test = zip(*(split_local(pool[s], cfg["local_test_fraction"], rng, groups) for s in shares))
    return trainable(with_validation(Partition(list(train), list(test), names), cfg["val_fraction"], seed, groups))
