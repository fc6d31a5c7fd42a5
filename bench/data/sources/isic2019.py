"""ISIC 2019 training set (Codella et al. 2018; Tschandl et al. 2018; Combalia et al. 2019) in its
distribution layout, optionally as FLamby's Fed-ISIC2019 (du Terrail et al. 2022).

data.root holds `ISIC_2019_Training_GroundTruth.csv` (`image,MEL,NV,BCC,AK,BKL,DF,VASC,SCC,UNK`,
one-hot as ints or floats), the images in `ISIC_2019_Training_Input/` (or one sub-folder of it)
and optionally `ISIC_2019_Training_Metadata.csv`, whose `lesion_id` groups the images of one
lesion (rows without one are their own group); other columns are ignored. Classes in the
ground truth's order: MEL, NV, BCC, AK, BKL, DF, VASC, SCC. UNK has no training images and is
dropped (rows labelled UNK, if any, too).

With data.sites_file set to FLamby's `flamby_train_test_split.csv` (`image,center,fold`), the
dataset is Fed-ISIC2019: its images only, each with its centre (0-5 = BCN, HAM_vidir_molemax,
HAM_vidir_modern, HAM_rosendahl, MSK, HAM_vienna_dias) and, with data.official_split, FLamby's
own train/test folds. FLamby's folds are not grouped by lesion; the notes count the lesions
they put on both sides (set data.official_split=false for a lesion-grouped split instead).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from bench.data import sites_path
from bench.data.base import ImageDataset, register_dataset
from bench.data.readers import SHOWN, decode_grouped, groups_spanning, index_images, listed_images, read_csv, site_codes
from bench.errors import UserError

if TYPE_CHECKING:
    import pandas as pd

GROUND_TRUTH = "ISIC_2019_Training_GroundTruth.csv"
METADATA = "ISIC_2019_Training_Metadata.csv"
IMAGES = "ISIC_2019_Training_Input"
CLASSES = ["MEL", "NV", "BCC", "AK", "BKL", "DF", "VASC", "SCC"]
UNKNOWN = "UNK"
FLAMBY_CENTRES = ["BCN", "HAM_vidir_molemax", "HAM_vidir_modern", "HAM_rosendahl", "MSK", "HAM_vienna_dias"]


def one_hot_labels(table: pd.DataFrame, columns: list[str], path: Path) -> np.ndarray:
    """Class index per row of a one-hot table; a row with no label or several names its row."""
    try:
        values = table[columns].astype(float).to_numpy()
    except ValueError as exc:
        raise UserError(f"{path}: a label column holds a non-number ({exc}); labels must be 0/1 (or 0.0/1.0)") from None
    hot = values == 1
    bad = (hot.sum(axis=1) != 1) | ~np.isin(values, (0, 1)).all(axis=1)
    if bad.any():
        rows = np.flatnonzero(bad)
        raise UserError(
            f"{path} row {rows[0] + 2} (image {table['image'].iloc[rows[0]]}): {int(hot[rows[0]].sum())} labels set, "
            f"expected exactly one 1 among {', '.join(columns)} ({len(rows)} such rows); fix the one-hot encoding"
        )
    return hot.argmax(axis=1)


def read_ground_truth(root: Path) -> tuple[pd.DataFrame, list[str]]:
    """Image ids and labels (UNK rows dropped), plus notes."""
    path = root / GROUND_TRUTH
    table = read_csv(path, "image", [*CLASSES, UNKNOWN], f"data.root must hold {GROUND_TRUTH} next to {IMAGES}/")
    table["label"] = one_hot_labels(table, [*CLASSES, UNKNOWN], path)
    unknown = table["label"] == len(CLASSES)
    notes = [f"class {UNKNOWN} has no training images in ISIC 2019: dropped"]
    if unknown.any():
        notes[0] = f"class {UNKNOWN}: {int(unknown.sum())} row(s) dropped (it is not a training class)"
    return table.loc[~unknown].reset_index(drop=True), notes


def lesion_groups(root: Path, images: pd.Series) -> tuple[np.ndarray, list[str]]:
    """lesion_id per image from the metadata CSV when present; images without one are their own group."""
    path = root / METADATA
    if not path.is_file():
        return images.to_numpy(), [f"no {METADATA}: every image is its own group"]
    meta = read_csv(path, "image", ["lesion_id"], f"{METADATA} needs image and lesion_id columns")
    lesion = dict(zip(meta["image"], meta["lesion_id"]))
    groups = np.array([lesion.get(i) or i for i in images], dtype=object)
    lone = sum(1 for i in images if not lesion.get(i))
    return groups, [f"grouped by lesion_id: {len(set(groups))} groups; {lone} image(s) without a lesion_id are their own group"]


def flamby_split(cfg: dict, table: pd.DataFrame) -> tuple[pd.DataFrame, list[str]]:
    """Restrict to Fed-ISIC2019's images and attach each one's centre and fold."""
    path = sites_path(cfg)
    split = read_csv(path, "image", ["center", "fold"], "data.sites_file must be FLamby's flamby_train_test_split.csv (image, center, fold)")
    bad_centre = ~split["center"].isin([str(i) for i in range(len(FLAMBY_CENTRES))])
    bad_fold = ~split["fold"].isin(["train", "test"])
    if (bad_centre | bad_fold).any():
        row = int(np.flatnonzero(bad_centre | bad_fold)[0])
        raise UserError(f"{path} row {row + 2}: center '{split['center'].iloc[row]}' / fold '{split['fold'].iloc[row]}' "
                        f"must be 0-{len(FLAMBY_CENTRES) - 1} / train or test; fix the split file")
    columns = ["image", "center", "fold"]
    if all(c in split.columns for c in CLASSES):  # FLamby's file repeats the labels: they must agree
        split["split_label"] = one_hot_labels(split, CLASSES, path)
        columns.append("split_label")
    merged = table.merge(split[columns], on="image", how="inner")
    if "split_label" in merged:
        disagree = merged["split_label"] != merged["label"]
        if disagree.any():
            raise UserError(f"{path}: {int(disagree.sum())} image(s) carry another label than {GROUND_TRUTH} "
                            f"(first: {', '.join(merged.loc[disagree, 'image'][:SHOWN])}); is it the split file of this dataset?")
    merged["site"] = merged["center"].astype(int).map(FLAMBY_CENTRES.__getitem__)
    notes = [f"Fed-ISIC2019 split from {path.name}: {len(merged)} of {len(table)} images; "
             f"{len(table) - len(merged)} image(s) outside it dropped; {len(split) - len(merged)} split row(s) name images not in data.root"]
    return merged, notes


@register_dataset("isic2019", default_size=64, needs_root=True, summary="ISIC 2019 dermoscopy, 25,331 training images, 8 classes, grouped by lesion; Fed-ISIC2019 centres with FLamby's split",
                  images=25331)
def load(cfg: dict) -> ImageDataset:
    root = Path(cfg["root"])
    table, notes = read_ground_truth(root)
    sites, site_names, test_mask = None, [], None
    if cfg["sites_file"]:
        table, split_notes = flamby_split(cfg, table)
        notes += split_notes
        sites, site_names = site_codes(list(table["site"]), FLAMBY_CENTRES)
    folder = root / IMAGES
    paths = listed_images(list(table["image"]), index_images(folder, "ISIC 2019"), root / GROUND_TRUTH, folder)
    labels = table["label"].to_numpy(np.int64)
    lesions, group_notes = lesion_groups(root, table["image"])
    decoded = decode_grouped(cfg, "isic2019", paths, labels, lesions, default_duplicates="exact")
    if cfg["sites_file"] and cfg["official_split"]:
        test_mask = (table["fold"] == "test").to_numpy()
        notes.append(f"official split: FLamby's test fold ({int(test_mask.sum())} images); it puts "
                     f"{groups_spanning(decoded.groups, test_mask)} lesion group(s) in both folds (data.official_split=false avoids that)")
    return decoded.dataset("isic2019", labels, CLASSES, table["image"].to_numpy(), notes + group_notes + decoded.notes,
                           test_mask=test_mask, sites=sites, site_names=site_names)
