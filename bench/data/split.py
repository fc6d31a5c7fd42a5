"""The global held-out test split: stratified by class, never separating a patient/lesion group."""

from __future__ import annotations

import math

import numpy as np
from sklearn.model_selection import StratifiedGroupKFold, train_test_split

from bench.data.base import ImageDataset
from bench.errors import UserError


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


def global_split(ds: ImageDataset, test_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Return (train indices, test indices).

    An official split (`ds.test_mask`) wins. With groups (e.g. HAM10000's lesion_id: 7,470
    lesions for 10,015 images) the split is a StratifiedGroupKFold fold, so the test fraction is
    rounded to the nearest 1/k (a share no 1/k comes near is refused); without groups it is an exact stratified split.
    """
    everything = np.arange(len(ds.labels))
    if ds.test_mask is not None:
        return everything[~ds.test_mask], everything[ds.test_mask]
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
