"""Global split without group leakage; metrics equal scikit-learn's; the flat state layout."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn import metrics as skm
from torch import nn

from bench.data.base import ImageDataset
from bench.data.split import global_split
from bench.engine.evaluate import classification_metrics
from bench.engine.layout import StateLayout


def dataset(n=600, classes=3, groups=None) -> ImageDataset:
    rng = np.random.default_rng(0)
    return ImageDataset("t", np.zeros((n, 1, 2, 2), np.uint8), rng.integers(0, classes, n), [str(c) for c in range(classes)], (0.5,), (0.5,), groups=groups)


def test_grouped_split_never_separates_a_group_and_keeps_class_balance():
    groups = np.arange(600) // 3
    ds = dataset(groups=groups)
    ds.labels = np.repeat(np.random.default_rng(1).integers(0, 3, 200), 3)  # one label per group, as lesions
    train, test = global_split(ds, 0.2, seed=0)
    assert not set(groups[train]) & set(groups[test])
    assert len(test) / 600 == pytest.approx(0.2, abs=0.03)
    for c in range(3):
        assert np.mean(ds.labels[test] == c) == pytest.approx(np.mean(ds.labels == c), abs=0.05)


def test_ungrouped_split_is_stratified_and_seeded():
    ds = dataset()
    a, b = global_split(ds, 0.25, 3), global_split(ds, 0.25, 3)
    assert np.array_equal(a[1], b[1]) and len(a[1]) == 150
    assert not np.array_equal(a[1], global_split(ds, 0.25, 4)[1])


def confusion(y_true, y_pred, c):
    return skm.confusion_matrix(y_true, y_pred, labels=list(range(c)))


@pytest.mark.filterwarnings("ignore:y_pred contains classes not in y_true")
@pytest.mark.parametrize("seed", range(5))
def test_metrics_equal_scikit_learn(seed):
    rng = np.random.default_rng(seed)
    c = 5
    y_true = rng.integers(0, 4, 200)  # class 4 never true
    y_pred = np.where(rng.random(200) < 0.6, y_true, rng.integers(0, 5, 200))
    y_pred[y_pred == 3] = 2  # class 3 never predicted
    m = classification_metrics(confusion(y_true, y_pred, c), 12.0, [str(i) for i in range(c)])
    assert m["accuracy"] == pytest.approx(skm.accuracy_score(y_true, y_pred))
    assert m["balanced_accuracy"] == pytest.approx(skm.balanced_accuracy_score(y_true, y_pred))
    p, r, f, _ = skm.precision_recall_fscore_support(y_true, y_pred, average="macro", zero_division=0)
    assert (m["precision"], m["recall"], m["f1"]) == pytest.approx((p, r, f))
    per_class = skm.recall_score(y_true, y_pred, average=None, labels=[0, 1, 2, 3], zero_division=0)
    assert [m[f"recall/{i}"] for i in range(4)] == pytest.approx(per_class)
    assert "recall/4" not in m and m["loss"] == pytest.approx(12.0 / 200)


def test_a_majority_class_predictor_is_recognisable():
    y_true = np.repeat(np.arange(7), [5, 5, 5, 5, 5, 67, 8])
    m = classification_metrics(confusion(y_true, np.full_like(y_true, 5), 7), 0.0, list("abcdefg"))
    assert m["balanced_accuracy"] == pytest.approx(1 / 7)
    assert m["accuracy"] == pytest.approx(0.67)
    assert m["precision"] == pytest.approx(0.67 / 7)  # zero division counts as 0, no NaN


def test_empty_evaluation_set_gives_no_metrics():
    assert classification_metrics(np.zeros((3, 3), int), 0.0, ["a", "b", "c"]) == {}


def test_layout_round_trips_and_selects_layers():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2), nn.Flatten(), nn.Linear(8, 3))
    layout = StateLayout(model)
    assert layout.size == sum(t.numel() for t in model.state_dict().values() if t.is_floating_point())
    assert layout.trainable.tolist() == [True, True, True, True, False, False, True, True]
    flat = layout.gather(model)
    other = nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2), nn.Flatten(), nn.Linear(8, 3))
    layout.scatter(other, flat)
    for a, b in zip(model.state_dict().values(), other.state_dict().values()):
        assert torch.equal(a, b)
    pick = layout.layers_where(lambda k: k.startswith("3."))
    values = torch.arange(27, dtype=torch.float32)
    layout.scatter(other, values, pick)
    assert torch.equal(other[3].weight.flatten(), values[:24]) and torch.equal(other[3].bias, values[24:])
    assert torch.equal(layout.select(layout.gather(other), pick), values)
    assert layout.nbytes(pick) == 27 * 4 and layout.nbytes() == layout.size * 4
    views = layout.views(flat)
    assert views["0.weight"].shape == (2, 1, 3, 3) and views["0.weight"].data_ptr() == flat.data_ptr()
    out = torch.empty(layout.size)
    assert layout.gather(model, out=out).data_ptr() == out.data_ptr()
