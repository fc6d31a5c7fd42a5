"""ISIC 2019 in its distribution layout (CRLF, BOM, float or int one-hot, extra metadata columns,
`.JPG`, ids with extensions, a nested image folder), FLamby's Fed-ISIC2019 split, every bad
input, and the real 10,752-image subset when available."""

from __future__ import annotations

import numpy as np
import pytest

from bench.config import resolve
from bench.data import load_dataset
from bench.data.sources.isic2019 import CLASSES, FLAMBY_CENTRES
from bench.data.split import global_split
from bench.engine.run import execute
from bench.errors import UserError
from conftest import tiny_config
from imagegen import save, smooth_image

COLUMNS = [*CLASSES, "UNK"]


def one_hot(label: int, floats: bool) -> str:
    return ",".join(("1.0" if floats else "1") if c == label else ("0.0" if floats else "0") for c in range(len(COLUMNS)))


def make_isic(root, rows=24, floats=True, nested=False):  # 3 images per class
    """GroundTruth (BOM + CRLF), Metadata with third-party extra columns, images (.jpg/.JPG, of various sizes)."""
    rng = np.random.default_rng(0)
    folder = root / "ISIC_2019_Training_Input" / ("ISIC_2019_Training_Input" if nested else "")
    truth, meta = ["image," + ",".join(COLUMNS)], ["image,age_approx,anatom_site_general,lesion_id,sex,diagnosis,benign_malignant,target"]
    for i in range(rows):
        image = f"ISIC_{i:07d}"
        truth.append(f"{image + ('.jpg' if i == 3 else '')},{one_hot(i % 8, floats)}")
        lesion = "" if i % 6 == 5 else f"IL_{i // 2:07d}"  # pairs of images per lesion; some rows without one
        meta.append(f"{image},55,anterior torso,{lesion},female,,,{i % 8}")
        save(smooth_image(rng, 30 + 10 * (i % 3), 24), folder / f"{image}{'.JPG' if i % 5 == 0 else '.jpg'}")
    (root / "ISIC_2019_Training_GroundTruth.csv").write_bytes(("\ufeff" + "\r\n".join(truth) + "\r\n").encode())
    (root / "ISIC_2019_Training_Metadata.csv").write_text("\r\n".join(meta) + "\r\n")
    return root


def make_split(path, rows=24, missing=2):
    """A FLamby-style split: centre and fold per image (the last `missing` images are outside it)."""
    lines = ["image," + ",".join(COLUMNS) + ",target,center,fold,fold2"]
    for i in range(rows - missing):
        fold = "test" if i % 4 == 0 else "train"
        lines.append(f"ISIC_{i:07d},{one_hot(i % 8, True)},{i % 8},{i % 3 + 1},{fold},{fold}_{i % 3 + 1}")
    lines.append(f"ISIC_9999999,{one_hot(0, True)},0,1,train,train_1")  # an image this copy does not have
    path.write_text("\n".join(lines) + "\n")
    return path


def data_config(root, tmp_path, **extra) -> dict:
    return resolve({"data": {"name": "isic2019", "root": str(root), "image_size": 8, "cache_dir": str(tmp_path / "cache"), **extra}})["data"]


@pytest.mark.parametrize("floats,nested", [(True, False), (False, True)])
def test_reads_the_distribution_layout_with_its_quirks(tmp_path, floats, nested):
    ds = load_dataset(data_config(make_isic(tmp_path / "isic", floats=floats, nested=nested), tmp_path))
    assert ds.classes == CLASSES and len(CLASSES) == 8  # UNK dropped, not an empty class
    assert ds.labels.tolist() == [i % 8 for i in range(24)] and ds.images.shape == (24, 3, 8, 8)
    assert ds.ids[3] == "ISIC_0000003" and ds.groups[0] == ds.groups[1] == "IL_0000000"
    assert ds.groups[5] == "ISIC_0000005"  # no lesion_id: its own group
    assert any("UNK has no training images" in n for n in ds.notes)
    train, test = global_split(ds, 0.5, seed=0)
    assert not set(ds.groups[train]) & set(ds.groups[test])
    with pytest.raises(UserError, match="data.test_fraction': 0.25 makes a 1-in-4 grouped split, but every class of isic2019 has fewer than 4"):
        global_split(ds, 0.25, seed=0)


def test_without_metadata_every_image_is_its_own_group(tmp_path):
    root = make_isic(tmp_path / "isic")
    (root / "ISIC_2019_Training_Metadata.csv").unlink()
    ds = load_dataset(data_config(root, tmp_path))
    assert len(set(ds.groups)) == 24


@pytest.mark.parametrize("row,replacement,count", [(4, "0,0,0,0,0,0,0,0,0", 0), (7, "1,0,0,0,1,0,0,0,0", 2)])
def test_a_one_hot_row_with_no_or_two_labels_names_the_row(tmp_path, row, replacement, count):
    root = make_isic(tmp_path / "isic", floats=False)
    csv = root / "ISIC_2019_Training_GroundTruth.csv"
    lines = csv.read_bytes().decode("utf-8-sig").split("\r\n")
    lines[row] = lines[row].split(",")[0] + "," + replacement
    csv.write_text("\r\n".join(lines))
    with pytest.raises(UserError, match=rf"row {row + 1} \(image ISIC_{row - 1:07d}\): {count} labels set, expected exactly one"):
        load_dataset(data_config(root, tmp_path))
    assert not (tmp_path / "cache").exists()


def test_missing_files_and_folders_are_named(tmp_path):
    root = make_isic(tmp_path / "isic")
    for i in (2, 9, 11):
        next((root / "ISIC_2019_Training_Input").glob(f"ISIC_{i:07d}.*")).unlink()
    with pytest.raises(UserError, match=r"3 image\(s\) listed in ISIC_2019_Training_GroundTruth.csv are missing .*ISIC_0000002, ISIC_0000009, ISIC_0000011"):
        load_dataset(data_config(root, tmp_path))
    (root / "ISIC_2019_Training_GroundTruth.csv").unlink()
    with pytest.raises(UserError, match="ISIC_2019_Training_GroundTruth.csv not found; data.root must hold"):
        load_dataset(data_config(root, tmp_path))
    other = make_isic(tmp_path / "other")
    for path in (other / "ISIC_2019_Training_Input").iterdir():
        path.unlink()
    (other / "ISIC_2019_Training_Input").rmdir()
    with pytest.raises(UserError, match="image folder .*ISIC_2019_Training_Input not found"):
        load_dataset(data_config(other, tmp_path))


def test_fed_isic2019_split_gives_centres_and_official_folds(tmp_path):
    root = make_isic(tmp_path / "isic")
    split = make_split(tmp_path / "flamby_train_test_split.csv")
    ds = load_dataset(data_config(root, tmp_path, sites_file=str(split)))
    assert len(ds.labels) == 22 and "ISIC_0000023" not in ds.ids  # images outside Fed-ISIC2019 dropped
    assert ds.site_names == FLAMBY_CENTRES and ds.sites.tolist() == [i % 3 + 1 for i in range(22)]
    assert ds.test_mask.tolist() == [i % 4 == 0 for i in range(22)]
    assert any("2 image(s) outside it dropped; 1 split row(s) name images not in data.root" in n for n in ds.notes)
    regrouped = load_dataset(data_config(root, tmp_path, sites_file=str(split), official_split=False))
    assert regrouped.test_mask is None and regrouped.sites is not None


def test_a_split_file_that_disagrees_or_is_malformed_is_named(tmp_path):
    root = make_isic(tmp_path / "isic")
    split = make_split(tmp_path / "split.csv")
    text = split.read_text().splitlines()
    text[3] = text[3].replace("0.0,0.0,1.0", "0.0,1.0,0.0", 1)  # image 2 labelled BCC in the truth, NV here
    split.write_text("\n".join(text))
    with pytest.raises(UserError, match=r"1 image\(s\) carry another label .*ISIC_0000002"):
        load_dataset(data_config(root, tmp_path, sites_file=str(split)))
    make_split(split)
    split.write_text(split.read_text().replace(",train,train_2", ",validation,train_2", 1))
    with pytest.raises(UserError, match=r"split.csv row \d+: center '\d' / fold 'validation' must be"):
        load_dataset(data_config(root, tmp_path, sites_file=str(split)))
    with pytest.raises(UserError, match="config key 'data.sites_file': .*nowhere.csv does not exist"):
        data_config(root, tmp_path, sites_file=str(tmp_path / "nowhere.csv"))


# ---- the real subset ------------------------------------------------------------------------------
FLAMBY_SPLIT = "isic2019_labels/flamby_train_test_split.csv"


def real_config(shared_data, cache, **extra) -> dict:
    return {"name": "isic2019", "root": str(shared_data / "isic2019_subset"), "image_size": 16, "cache_dir": str(cache), **extra}


@pytest.mark.shared_data
def test_real_isic2019_counts_and_lesion_grouped_split(shared_data, real_cache):
    ds = load_dataset(resolve({"data": real_config(shared_data, real_cache)})["data"])
    assert len(ds.labels) == 10752
    assert dict(zip(ds.classes, np.bincount(ds.labels).tolist())) == {"MEL": 1266, "NV": 7287, "BCC": 514, "AK": 130, "BKL": 1101, "DF": 115, "VASC": 142, "SCC": 197}
    train, test = global_split(ds, 0.2, seed=0)
    assert not set(ds.groups[train]) & set(ds.groups[test])  # no lesion in both


@pytest.mark.shared_data
def test_real_fed_isic2019_centres_as_listed(shared_data, real_cache):
    ds = load_dataset(resolve({"data": real_config(shared_data, real_cache, sites_file=str(shared_data / FLAMBY_SPLIT))})["data"])
    assert ds.site_names == ["BCN", "HAM_vidir_molemax", "HAM_vidir_modern", "HAM_rosendahl", "MSK", "HAM_vienna_dias"]
    per_centre = dict(zip(ds.site_names, np.bincount(ds.sites, minlength=6).tolist()))
    assert per_centre == {"BCN": 0, "HAM_vidir_molemax": 3954, "HAM_vidir_modern": 3363, "HAM_rosendahl": 2259, "MSK": 3, "HAM_vienna_dias": 439}
    assert int(ds.test_mask.sum()) == 791 + 672 + 452 + 1 + 88  # FLamby's test fold of these centres


@pytest.mark.shared_data
@pytest.mark.slow
def test_short_federated_run_on_real_isic2019_natural_partition(shared_data, real_cache, tmp_path):
    data = real_config(shared_data, real_cache, sites_file=str(shared_data / FLAMBY_SPLIT))
    centres = ["HAM_vidir_molemax", "HAM_vidir_modern", "HAM_rosendahl", "HAM_vienna_dias"]  # MSK has 3 images here
    cfg = tiny_config(method="fedavg", data=data, partition__scheme="natural", partition__sites=centres,
                      train__rounds=1, train__batch_size=128, train__lr=0.001, model__widths=[8, 16])
    record = execute(cfg, tmp_path / "run", show_progress=False)
    assert record["status"] == "completed" and len(record["data"]["clients"]) == 4
    assert [c["train"] for c in record["data"]["clients"]] == [3163, 2691, 1807, 351]  # FLamby's train folds
    assert [c["local_test"] for c in record["data"]["clients"]] == [791, 672, 452, 88]  # ... and test folds
