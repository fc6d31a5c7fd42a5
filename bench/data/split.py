"""The global held-out test split: stratified by class, never separating a patient/lesion group."""

from __future__ import annotations

import numpy as np
from sklearn.model_selection import StratifiedGroupKFold, train_test_split

from bench.data.base import ImageDataset
from bench.errors import UserError


def global_split(ds: ImageDataset, test_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Return (train indices, test indices).

    An official split (`ds.test_mask`) wins. With groups (e.g. HAM10000's lesion_id: 7,470
    lesions for 10,015 images) the split is a StratifiedGroupKFold fold, so the test fraction is
    rounded to 1/k; without groups it is an exact stratified split.
    """
    everything = np.arange(len(ds.labels))
    if ds.test_mask is not None:
        return everything[~ds.test_mask], everything[ds.test_mask]
    if ds.groups is None:
        train, test = train_test_split(everything, test_size=test_fraction, stratify=ds.labels, random_state=seed)
        return np.sort(train), np.sort(test)
    folds = max(2, round(1 / test_fraction))
    if (np.unique(ds.labels, return_counts=True)[1] < folds).all():
        raise UserError(f"config key 'data.test_fraction': {test_fraction} makes a 1-in-{folds} grouped split, but every class of "
                        f"{ds.name} has fewer than {folds} images; raise data.test_fraction or use more data")
    splitter = StratifiedGroupKFold(n_splits=folds, shuffle=True, random_state=seed)
    train, test = next(splitter.split(everything, ds.labels, groups=ds.groups))
    return np.sort(train), np.sort(test)
