"""HAM10000 in its distribution layout: generated fixtures for every quirk and bad input, the
real 10,015 images when available, and the decode cache."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

import bench.data.cache as cache
from bench.config import resolve
from bench.data import load_dataset
from bench.data.sources.ham10000 import CLASSES
from bench.data.split import global_split
from bench.engine.run import execute
from bench.engine.setup import partition_dataset
from bench.errors import UserError
from conftest import tiny_config

HEADER = "lesion_id,image_id,dx,dx_type,age,sex,localization\n"


def make_ham(root, rows=21, split_parts=True, image_ext=".jpg"):
    """A HAM10000-shaped folder: metadata CSV + JPEGs in part_1/part_2 (or one folder)."""
    rng = np.random.default_rng(0)
    root.mkdir(parents=True, exist_ok=True)
    lines = [HEADER]
    for i in range(rows):
        image_id, lesion = f"ISIC_{24306 + i:07d}", f"HAM_{i // 2:07d}"  # pairs of images per lesion
        lines.append(f"{lesion},{image_id},{CLASSES[i % 7]},histo,50.0,male,back\n")
        folder = root / ("HAM10000_images_part_1" if (i < rows // 2 or not split_parts) else "HAM10000_images_part_2")
        folder.mkdir(exist_ok=True)
        Image.fromarray(rng.integers(0, 255, (15, 20, 3), dtype=np.uint8)).save(folder / f"{image_id}{image_ext}")
    (root / "HAM10000_metadata.csv").write_text("".join(lines))
    return root


def data_config(root, tmp_path, size=8) -> dict:
    return resolve({"data": {"name": "ham10000", "root": str(root), "image_size": size, "cache_dir": str(tmp_path / "cache")}})["data"]


@pytest.mark.parametrize("split_parts", [True, False])
def test_reads_both_distribution_layouts(tmp_path, split_parts):
    ds = load_dataset(data_config(make_ham(tmp_path / "ham", split_parts=split_parts), tmp_path))
    assert ds.images.shape == (21, 3, 8, 8) and ds.images.dtype == np.uint8
    assert ds.classes == CLASSES and list(ds.labels[:7]) == list(range(7))
    assert ds.groups[0] == ds.groups[1] != ds.groups[2]


def test_uppercase_extension_and_image_id_with_extension(tmp_path):
    root = make_ham(tmp_path / "ham", image_ext=".JPG")
    csv = root / "HAM10000_metadata.csv"
    csv.write_text(csv.read_text().replace(",akiec,", ",AKIEC,").replace("ISIC_0024307,", "ISIC_0024307.jpg,"))
    assert len(load_dataset(data_config(root, tmp_path)).labels) == 21


def test_missing_metadata_csv(tmp_path):
    root = make_ham(tmp_path / "ham")
    (root / "HAM10000_metadata.csv").unlink()
    with pytest.raises(UserError, match="HAM10000_metadata.csv not found"):
        load_dataset(data_config(root, tmp_path))


def test_missing_images_are_counted_and_named(tmp_path):
    root = make_ham(tmp_path / "ham")
    for i in (3, 5, 7):
        next(root.glob(f"*/ISIC_{24306 + i:07d}.jpg")).unlink()
    with pytest.raises(UserError, match=r"3 image\(s\) listed .* missing .*ISIC_0024309, ISIC_0024311, ISIC_0024313"):
        load_dataset(data_config(root, tmp_path))
    assert not (tmp_path / "cache").exists() or not any((tmp_path / "cache").iterdir())


def test_unreadable_image_is_named_and_nothing_is_cached(tmp_path):
    root = make_ham(tmp_path / "ham")
    bad = next(root.glob("*/ISIC_0024310.jpg"))
    bad.write_bytes(b"not a jpeg at all")
    with pytest.raises(UserError, match="cannot decode image .*ISIC_0024310.jpg"):
        load_dataset(data_config(root, tmp_path))
    assert not list((tmp_path / "cache").glob("*.npy"))


def test_truncated_image_is_an_error(tmp_path):
    root = make_ham(tmp_path / "ham")
    good = next(root.glob("*/ISIC_0024310.jpg"))
    good.write_bytes(good.read_bytes()[:60])
    with pytest.raises(UserError, match="ISIC_0024310"):
        load_dataset(data_config(root, tmp_path))


def test_label_outside_the_class_list_names_the_row(tmp_path):
    root = make_ham(tmp_path / "ham")
    csv = root / "HAM10000_metadata.csv"
    lines = csv.read_text().splitlines(keepends=True)
    lines[4] = lines[4].replace(",df,", ",melanoma,")
    csv.write_text("".join(lines))
    with pytest.raises(UserError, match="row 5: dx 'melanoma' is not one of"):
        load_dataset(data_config(root, tmp_path))


def test_missing_column_is_named(tmp_path):
    root = make_ham(tmp_path / "ham")
    csv = root / "HAM10000_metadata.csv"
    csv.write_text(csv.read_text().replace("lesion_id,image_id,dx", "lesion,image_id,dx"))
    with pytest.raises(UserError, match=r"missing column\(s\) \['lesion_id'\]"):
        load_dataset(data_config(root, tmp_path))


def test_cache_is_reused_and_a_corrupted_cache_is_rebuilt(tmp_path, monkeypatch, caplog):
    cfg = data_config(make_ham(tmp_path / "ham"), tmp_path)
    first = load_dataset(cfg)
    calls = []
    real_decode = cache.decode_all
    monkeypatch.setattr(cache, "decode_all", lambda *a, **k: calls.append(1) or real_decode(*a, **k))
    assert np.array_equal(load_dataset(cfg).images, first.images) and not calls  # hit
    array = next((tmp_path / "cache").glob("*.npy"))
    raw = bytearray(array.read_bytes())
    raw[-5] ^= 0xFF
    array.write_bytes(bytes(raw))
    assert np.array_equal(load_dataset(cfg).images, first.images) and calls == [1]  # rebuilt
    assert "does not match its manifest" in caplog.text
    array.write_bytes(array.read_bytes()[:100])  # truncated
    assert np.array_equal(load_dataset(cfg).images, first.images) and calls == [1, 1]


def test_a_changed_source_file_or_size_rebuilds_the_cache(tmp_path):
    root = make_ham(tmp_path / "ham")
    load_dataset(data_config(root, tmp_path))
    load_dataset(data_config(root, tmp_path, size=16))
    image = next(root.glob("*/ISIC_0024306.jpg"))
    Image.fromarray(np.zeros((15, 20, 3), np.uint8)).save(image)
    changed = load_dataset(data_config(root, tmp_path))
    assert changed.images[0].max() == 0
    assert len(list((tmp_path / "cache").glob("*.npy"))) == 3


# ---- the real dataset ---------------------------------------------------------------------------
@pytest.fixture
def real_ham(shared_data, real_cache):
    cfg = resolve({"data": {"name": "ham10000", "root": str(shared_data / "ham10000_200x150"), "image_size": 32, "cache_dir": str(real_cache)}})
    return cfg


@pytest.mark.shared_data
def test_real_ham10000_counts_and_lesion_grouped_split(real_ham):
    ds = load_dataset(real_ham["data"])
    assert len(ds.labels) == 10015 and len(set(ds.groups)) == 7470
    assert dict(zip(ds.classes, np.bincount(ds.labels).tolist())) == {"akiec": 327, "bcc": 514, "bkl": 1099, "df": 115, "mel": 1113, "nv": 6705, "vasc": 142}
    train, test = global_split(ds, 0.2, seed=0)
    assert not set(ds.groups[train]) & set(ds.groups[test])  # no lesion in both
    assert 0.18 < len(test) / len(ds.labels) < 0.22
    assert np.bincount(ds.labels[test], minlength=7).min() > 15  # every class in the test set


@pytest.mark.shared_data
@pytest.mark.slow
def test_short_federated_run_on_real_ham10000(real_ham, tmp_path):
    cfg = tiny_config(method="fedlsc", data=real_ham["data"], train__rounds=2, train__lr=0.001, train__batch_size=64,
                      model__widths=[16, 32, 64], partition__beta=0.5)
    record = execute(cfg, tmp_path / "run", show_progress=False)
    assert record["status"] == "completed" and record["data"]["global_test"] > 1500
    assert record["data"]["classes"] == CLASSES
    assert sum(c["train"] + c["local_test"] for c in record["data"]["clients"]) == record["data"]["train_pool"]


def test_centres_come_from_the_dataverse_metadata(tmp_path):
    root = make_ham(tmp_path / "ham")
    assert load_dataset(data_config(root, tmp_path)).sites is None
    meta = (root / "HAM10000_metadata.csv").read_text().splitlines()
    centres = ["vienna_dias", "rosendahl", "vidir_modern"]
    rows = [meta[0] + ",dataset"] + [f"{line},{centres[i % 3]}" for i, line in enumerate(meta[1:-1])]  # last image: no centre
    (root / "HAM10000_metadata_dataverse.csv").write_text("\n".join(rows) + "\n")
    ds = load_dataset(data_config(root, tmp_path))
    assert ds.site_names == ["vidir_modern", "vidir_molemax", "rosendahl", "vienna_dias"]
    assert ds.sites.tolist() == [[3, 2, 0][i % 3] for i in range(20)] + [-1]
    assert any("1 image(s) have no centre" in n for n in ds.notes)


@pytest.mark.shared_data
def test_real_ham10000_natural_centres_as_listed(real_ham):
    ds = load_dataset(real_ham["data"])
    assert dict(zip(ds.site_names, np.bincount(ds.sites).tolist())) == {"vidir_modern": 3363, "vidir_molemax": 3954, "rosendahl": 2259, "vienna_dias": 439}
    cfg = tiny_config(data=real_ham["data"], partition__scheme="natural")
    train, test = global_split(ds, 0.2, seed=0)
    part = partition_dataset(ds, train, test, cfg)
    assert part.names == ["vidir_modern", "vidir_molemax", "rosendahl", "vienna_dias"]
    for code, (local_train, local_test) in enumerate(zip(part.train, part.test)):
        assert (ds.sites[local_train] == code).all() and not set(ds.groups[local_train]) & set(ds.groups[local_test])
