"""Folder-per-class datasets (msid, modd, msld): generated fixtures in their distribution layouts,
every bad input, copies grouped across the distributed split folders, and the real MSLD v1."""

from __future__ import annotations

import numpy as np
import pytest

from bench.config import resolve
from bench.data import load_dataset
from bench.data.sources import modd, msid, msld
from bench.data.split import global_split
from bench.engine.run import execute
from bench.errors import UserError
from conftest import tiny_config
from imagegen import augmented_copies, save, smooth_image


def data_config(name, root, tmp_path, **extra) -> dict:
    return resolve({"data": {"name": name, "root": str(root), "image_size": 8, "cache_dir": str(tmp_path / "cache"), **extra}})["data"]


def make_msid(root, per_class=3, folders=("Monkeypox", "Chickenpox", "Measles", "Normal")):
    """Flat MSID layout, with the mixed extensions such downloads have."""
    rng = np.random.default_rng(0)
    for folder in folders:
        for i in range(per_class):
            save(smooth_image(rng), root / folder / f"{folder.lower()}{i}{['.jpg', '.JPG', '.png'][i % 3]}")
    return root


def make_modd(root, originals=2):
    """The MODD (Teeth_Dataset) layout: Training/Validation/Testing per class, with augmented copies
    of each original spread over the split folders, as distributed."""
    rng = np.random.default_rng(1)
    base = root / "Teeth_Dataset"
    for cls in modd.CLASSES:
        for i in range(originals):
            img = smooth_image(rng, 64, 64)
            save(img, base / "Training" / cls / f"{cls}_{i}.jpg")
            for k, copy in enumerate(augmented_copies(img)):
                save(copy, base / ["Training", "Validation", "Testing"][k] / cls / f"aug_{cls}_{i}_{k}.jpg")
    return root


def test_msid_flat_layout_and_mixed_extensions(tmp_path):
    ds = load_dataset(data_config("msid", make_msid(tmp_path / "msid"), tmp_path))
    assert ds.classes == msid.CLASSES and np.bincount(ds.labels).tolist() == [3, 3, 3, 3]
    assert ds.images.shape == (12, 3, 8, 8)
    assert ds.ids[0] == "Monkeypox/monkeypox0.jpg" and ds.duplicates is not None


def test_class_folder_names_match_ignoring_case_spaces_and_underscores(tmp_path):
    root = make_msid(tmp_path / "msid", folders=("monkey_pox", "CHICKENPOX", "Measles", "normal"))
    assert load_dataset(data_config("msid", root, tmp_path)).classes == msid.CLASSES


def test_modd_presplit_layout_groups_copies_across_the_split_folders(tmp_path):
    ds = load_dataset(data_config("modd", make_modd(tmp_path / "modd"), tmp_path))
    assert ds.classes == modd.CLASSES and len(ds.labels) == 7 * 2 * 4
    assert (ds.duplicates >= 0).all() and len(np.unique(ds.duplicates)) == 14  # each original with its 3 copies
    assert len(set(ds.groups)) == 14
    train, test = global_split(ds, 0.3, seed=0)
    assert not set(ds.groups[train]) & set(ds.groups[test])  # no copy straddles the split
    assert any("train 28, val 14, test 14" in n and "14 group(s) of copies/patients spanned" in n for n in ds.notes)


def test_without_duplicate_grouping_the_copies_would_straddle(tmp_path):
    ds = load_dataset(data_config("modd", make_modd(tmp_path / "modd"), tmp_path, duplicates="none"))
    assert ds.groups is None and ds.duplicates is None and "duplicates: not checked (data.duplicates=none)" in ds.notes


def test_stray_folder_in_a_split_folder_is_named_and_can_be_ignored(tmp_path):
    root = make_modd(tmp_path / "modd")
    save(smooth_image(np.random.default_rng(5)), root / "Teeth_Dataset" / "Testing" / "output" / "x.jpg")
    with pytest.raises(UserError, match=r"unexpected class folder\(s\) \['output'\]; expected CaS, CoS, .*data.ignore_folders"):
        load_dataset(data_config("modd", root, tmp_path))
    assert not (tmp_path / "cache").exists()
    assert len(load_dataset(data_config("modd", root, tmp_path, ignore_folders=["output"])).labels) == 56


def test_missing_class_is_named(tmp_path):
    root = make_msid(tmp_path / "msid", folders=("Monkeypox", "Chickenpox", "Measles"))
    with pytest.raises(UserError, match=r"no folder for class\(es\) \['Normal'\]"):
        load_dataset(data_config("msid", root, tmp_path))


def test_empty_class_folder_is_named(tmp_path):
    root = make_msid(tmp_path / "msid")
    for path in (root / "Measles").iterdir():
        path.unlink()
    (root / "Measles" / "readme.txt").write_text("images removed")
    with pytest.raises(UserError, match="class folder .*Measles holds no images"):
        load_dataset(data_config("msid", root, tmp_path))


def test_non_image_files_are_skipped_and_reported(tmp_path):
    root = make_msid(tmp_path / "msid")
    (root / "Normal" / "Thumbs.db").write_bytes(b"\0\1")
    (root / "Normal" / ".DS_Store").write_bytes(b"\0")
    ds = load_dataset(data_config("msid", root, tmp_path))
    assert len(ds.labels) == 12 and any("skipped 1 non-image file(s) (first: Normal/Thumbs.db)" in n for n in ds.notes)


@pytest.mark.parametrize("content", [b"not an image", None])
def test_unreadable_or_truncated_image_is_named_and_nothing_is_cached(tmp_path, content):
    root = make_msid(tmp_path / "msid")
    bad = root / "Measles" / "measles1.JPG"
    bad.write_bytes(content if content is not None else bad.read_bytes()[:80])
    with pytest.raises(UserError, match="cannot decode image .*measles1.JPG"):
        load_dataset(data_config("msid", root, tmp_path, duplicates="near"))
    assert not list((tmp_path / "cache").glob("*.npy"))


def test_something_else_next_to_the_split_folders_is_an_error(tmp_path):
    root = make_modd(tmp_path / "modd")
    save(smooth_image(np.random.default_rng(3)), root / "Teeth_Dataset" / "extra" / "CaS" / "x.jpg")
    with pytest.raises(UserError, match=r"folder\(s\) \['extra'\] next to the split folders"):
        load_dataset(data_config("modd", root, tmp_path))


def test_msld_groups_a_patient_images_by_file_name(tmp_path):
    rng = np.random.default_rng(4)
    for name in ("P13_1", "P13_2", "P2_1", "a1"):
        save(smooth_image(rng), tmp_path / "msld" / "Monkey Pox" / f"{name}.jpg")
    for name in ("4_1", "4_2", "58_!"):
        save(smooth_image(rng), tmp_path / "msld" / "Others" / f"{name}.jpg")
    ds = load_dataset(data_config("msld", tmp_path / "msld", tmp_path))
    by_id = dict(zip(ds.ids, ds.groups))
    assert by_id["Monkey Pox/P13_1.jpg"] == by_id["Monkey Pox/P13_2.jpg"] != by_id["Monkey Pox/P2_1.jpg"]
    assert by_id["Others/4_1.jpg"] == by_id["Others/4_2.jpg"] == "Others/4" and by_id["Others/58_!.jpg"] == "Others/58"
    assert msld.case_of(tmp_path / "a13.jpg") == "a13"


@pytest.mark.shared_data
def test_real_msld_counts_and_patient_grouped_split(shared_data, tmp_path):
    ds = load_dataset(data_config("msld", shared_data / "monkeypox_msld_v1", tmp_path))
    assert np.bincount(ds.labels).tolist() == [102, 126] and ds.classes == ["Monkey Pox", "Others"]
    copies = ds.ids[ds.duplicates >= 0].tolist()
    assert sorted(copies) == ["Others/34_1.jpg", "Others/82_1.jpg"]  # the one byte-identical pair in MSLD v1
    train, test = global_split(ds, 0.2, seed=0)
    assert not set(ds.groups[train]) & set(ds.groups[test])


@pytest.mark.shared_data
def test_short_federated_run_on_real_msld(shared_data, tmp_path):
    data = data_config("msld", shared_data / "monkeypox_msld_v1", tmp_path, image_size=16)
    cfg = tiny_config(data=data, partition__clients=2, train__rounds=1, augment__hflip=0.5, augment__rotation=10)
    record = execute(cfg, tmp_path / "run", show_progress=False)
    assert record["status"] == "completed" and record["data"]["classes"] == ["Monkey Pox", "Others"]
    assert record["data"]["train_pool"] + record["data"]["global_test"] == 228


def test_16_bit_greyscale_pngs_reach_the_cache_as_their_image_not_white(tmp_path):
    """A folder of 16-bit greyscale PNGs (as some scanners export) through the dataset cache."""
    from PIL import Image

    root, ramps = tmp_path / "msid", {}
    rng = np.random.default_rng(0)
    for k, cls in enumerate(msid.CLASSES):
        ramp = (np.linspace(0, 65535, 64)[None] * rng.uniform(0.3, 1.0, (64, 1))).astype(np.uint16)
        (root / cls).mkdir(parents=True)
        Image.fromarray(ramp).save(root / cls / "scan.png")
        ramps[cls] = ramp
    ds = load_dataset(data_config("msid", root, tmp_path))
    for cls, image in zip(ds.classes, ds.images):
        expected = np.asarray(Image.fromarray((ramps[cls] >> 8).astype(np.uint8)).resize((8, 8), Image.BILINEAR), dtype=float)
        assert image.min() < 64 and image.max() < 255  # a ramp scaled to 8 bits, not a flat white image
        assert np.abs(image[0].astype(float) - expected).mean() < 12
