"""MedMNIST .npz files: official split, greyscale and colour, resizing, the cache, bad files."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

import bench.data.cache as cache
from bench.config import resolve
from bench.data import load_dataset
from bench.data.split import global_split
from bench.errors import UserError

SIZES = {"train": 14, "val": 4, "test": 6}


def make_npz(path, classes=7, colour=True, side=28, labels_shape=1):
    rng = np.random.default_rng(0)
    arrays = {}
    for split, n in SIZES.items():
        shape = (n, side, side, 3) if colour else (n, side, side)
        arrays[f"{split}_images"] = rng.integers(0, 256, shape, dtype=np.uint8)
        arrays[f"{split}_labels"] = (np.arange(n) % classes).reshape(n, 1).repeat(labels_shape, axis=1).astype(np.uint8)
    np.savez_compressed(path, **arrays)
    return path, arrays


def data_config(path, tmp_path, **extra) -> dict:
    return resolve({"data": {"name": "medmnist", "root": str(path), "cache_dir": str(tmp_path / "cache"), **extra}})["data"]


def test_colour_subset_keeps_the_official_split_and_native_size(tmp_path):
    path, arrays = make_npz(tmp_path / "dermamnist.npz")
    ds = load_dataset(data_config(path, tmp_path))
    assert ds.images.shape == (24, 3, 28, 28) and ds.classes[4] == "melanoma"
    assert np.array_equal(ds.images[:14], arrays["train_images"].transpose(0, 3, 1, 2))
    assert ds.labels.tolist() == [i % 7 for i in range(14)] + [i % 7 for i in range(4)] + [i % 7 for i in range(6)]
    train, test = global_split(ds, 0.2, seed=0)
    assert test.tolist() == list(range(18, 24)) and len(train) == 18  # test split held out; train + val pooled


def test_greyscale_subset_resized_and_cached(tmp_path, monkeypatch):
    path, arrays = make_npz(tmp_path / "pneumoniamnist_64.npz", classes=2, colour=False, side=64)
    ds = load_dataset(data_config(path, tmp_path, image_size=32))
    assert ds.images.shape == (24, 1, 32, 32) and ds.classes == ["normal", "pneumonia"] and ds.mean == (0.5,)
    pil = np.asarray(Image.fromarray(arrays["train_images"][0]).resize((32, 32), Image.BILINEAR), dtype=float)  # PIL antialiases too
    assert np.abs(ds.images[0, 0].astype(float) - pil).max() <= 1
    calls = []
    monkeypatch.setattr(cache, "log", type("L", (), {"info": lambda *a: calls.append(a), "warning": print})())
    load_dataset(data_config(path, tmp_path, image_size=32))
    assert not calls  # neither re-hashed nor rebuilt


def test_official_split_can_be_replaced(tmp_path):
    path, _ = make_npz(tmp_path / "bloodmnist.npz", classes=8)
    assert load_dataset(data_config(path, tmp_path, official_split=False)).test_mask is None


def test_bad_files_are_named(tmp_path):
    path, _ = make_npz(tmp_path / "chestmnist.npz", classes=2, labels_shape=14)
    with pytest.raises(UserError, match="labels have 14 columns .*multi-label"):
        load_dataset(data_config(path, tmp_path))
    np.savez(tmp_path / "partial.npz", train_images=np.zeros((2, 28, 28), np.uint8))
    with pytest.raises(UserError, match=r"missing array\(s\) \['train_labels', 'val_images'"):
        load_dataset(data_config(tmp_path / "partial.npz", tmp_path))
    with pytest.raises(UserError, match="config key 'data.root': file .* does not exist"):
        data_config(tmp_path, tmp_path)  # a folder: MedMNIST's root is the .npz file
    (tmp_path / "labels.csv").write_text("a,b\n")
    with pytest.raises(UserError, match="labels.csv is not a MedMNIST .npz file"):
        load_dataset(data_config(tmp_path / "labels.csv", tmp_path))
    path, _ = make_npz(tmp_path / "breastmnist.npz", classes=3)  # BreastMNIST has 2 classes
    with pytest.raises(UserError, match="label 2 outside the 2 classes of breastmnist"):
        load_dataset(data_config(path, tmp_path))


def test_one_dimensional_labels_are_read_like_a_column(tmp_path):
    path, arrays = make_npz(tmp_path / "breastmnist.npz", classes=2, colour=False)
    column = load_dataset(data_config(path, tmp_path)).labels
    flat = {k: v.reshape(-1) if k.endswith("_labels") else v for k, v in arrays.items()}
    (tmp_path / "flat").mkdir()
    np.savez_compressed(tmp_path / "flat" / "breastmnist.npz", **flat)
    assert np.array_equal(load_dataset(data_config(tmp_path / "flat" / "breastmnist.npz", tmp_path / "flat")).labels, column)


@pytest.mark.shared_data
def test_the_shared_breastmnist_loads_with_its_official_split(shared_data, tmp_path):
    path = shared_data / "medmnist" / "breastmnist.npz"
    if not path.is_file():
        pytest.skip(f"{path} is absent (see ../shared/README.md)")
    ds = load_dataset(data_config(path, tmp_path))
    assert ds.images.shape == (780, 1, 28, 28) and ds.classes == ["malignant", "normal, benign"]
    assert int(ds.test_mask.sum()) == 156 and np.bincount(ds.labels).tolist() == [210, 570]
