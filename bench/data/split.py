"""The global held-out test split: stratified by class, never separating a patient/lesion group.

A computed split is stored under the data cache (`store_splits`, once its run is built), keyed by
everything it depends on (labels, groups, fraction, seed, scikit-learn's version): the runs after
the first of a dataset read it instead of importing scikit-learn (about 1.5 s of every run's
start-up)."""

from __future__ import annotations

import hashlib
import math
import zipfile
from importlib import metadata
from pathlib import Path

import numpy as np

from bench.data.base import ImageDataset
from bench.errors import UserError
from bench.io import atomic_path


SHARE_TOLERANCE = 0.05  # how far a grouped split's 1/k may fall from the asked test share


def grouped_folds(test_fraction: float) -> int:
    """k of the 1-in-k grouped split nearest `test_fraction`; a share no 1/k comes near (above 1/2,
    or between two of them, e.g. 0.4) stops with one line instead of being silently replaced."""
    folds = max(2, round(1 / test_fraction))
    if abs(1 / folds - test_fraction) > SHARE_TOLERANCE:
        nearest = sorted({max(2, math.floor(1 / test_fraction)), max(2, math.ceil(1 / test_fraction))})
        shares = " or ".join(f"{1 / k:.3g} (1 in {k})" for k in nearest)
        raise UserError(f"config key 'data.test_fraction': {test_fraction:g} cannot be honoured on grouped data, whose test set is 1 in k "
                        f"groups; choose {shares}")
    return folds


def global_split(ds: ImageDataset, test_fraction: float, seed: int, cache_dir: str | Path | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Return (train indices, test indices), from `cache_dir`'s stored splits where one fits.

    An official split (`ds.test_mask`) wins. With groups (e.g. HAM10000's lesion_id: 7,470
    lesions for 10,015 images) the split is a StratifiedGroupKFold fold, so the test fraction is
    rounded to the nearest 1/k (a share no 1/k comes near is refused); without groups it is an exact stratified split.
    """
    if ds.test_mask is not None:
        everything = np.arange(len(ds.labels))
        return everything[~ds.test_mask], everything[ds.test_mask]
    if cache_dir is None:
        return computed_split(ds, test_fraction, seed)
    stored = Path(cache_dir) / "splits" / f"{ds.name}-{split_key(ds, test_fraction, seed)}.npz"
    try:
        with np.load(stored) as saved:
            return saved["train"], saved["test"]
    except (OSError, EOFError, KeyError, ValueError, zipfile.BadZipFile):  # absent or unreadable: compute it (again)
        train, test = computed_split(ds, test_fraction, seed)
    UNSTORED[stored] = (train, test)
    return train, test


UNSTORED: dict[Path, tuple[np.ndarray, np.ndarray]] = {}  # splits computed by this process, not yet written


def store_splits() -> None:
    """Write the splits this process computed. The engine calls it once the run that needed
    them is built: a run refused for bad input leaves no file behind."""
    while UNSTORED:
        path, (train, test) = UNSTORED.popitem()
        with atomic_path(path) as tmp, tmp.open("wb") as f:
            np.savez(f, train=train, test=test)


def split_key(ds: ImageDataset, test_fraction: float, seed: int) -> str:
    """A digest of everything the computed split depends on."""
    digest = hashlib.sha256(f"{test_fraction!r} {seed} sklearn {metadata.version('scikit-learn')}".encode())
    digest.update(np.ascontiguousarray(ds.labels, dtype=np.int64).tobytes())
    if ds.groups is not None:
        digest.update("\0".join(map(str, ds.groups)).encode())
    return digest.hexdigest()[:20]


def computed_split(ds: ImageDataset, test_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    from sklearn.model_selection import StratifiedGroupKFold, train_test_split

    everything = np.arange(len(ds.labels))
    if ds.groups is None:
        train, test = train_test_split(everything, test_size=test_fraction, stratify=ds.labels, random_state=seed)
        return np.sort(train), np.sort(test)
    folds = grouped_folds(test_fraction)
    if (np.unique(ds.labels, return_counts=True)[1] < folds).all():
        raise UserError(f"config key 'data.test_fraction': {test_fraction} makes a 1-in-{folds} grouped split, but every class of "
                        f"{ds.name} has fewer than {folds} images; raise data.test_fraction or use more data")
    splitter = StratifiedGroupKFold(n_splits=folds, shuffle=True, random_state=seed)
    train, test = next(splitter.split(everything, ds.labels, groups=ds.groups))
    return np.sort(train), np.sort(test)
