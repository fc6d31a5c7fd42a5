"""HAM10000 (Tschandl et al. 2018) in its distribution layout.

`HAM10000_metadata.csv` (`lesion_id,image_id,dx,...`) next to the images, either split into
`HAM10000_images_part_1/` + `HAM10000_images_part_2/` or in one folder. Classes, in this fixed
order: akiec, bcc, bkl, df, mel, nv, vasc. Images are grouped by `lesion_id` (7,470 lesions for
10,015 images) so a lesion never sits in both the training and the test split.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from bench.data.base import IMAGENET_MEAN, IMAGENET_STD, ImageDataset, register_dataset
from bench.data.cache import cached_decode
from bench.errors import UserError

CLASSES = ["akiec", "bcc", "bkl", "df", "mel", "nv", "vasc"]
METADATA = "HAM10000_metadata.csv"
REQUIRED_COLUMNS = ("lesion_id", "image_id", "dx")
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png"}


def index_images(root: Path) -> dict[str, Path]:
    """Map image id (file stem) to path for images in `root` and its immediate sub-folders."""
    found: dict[str, Path] = {}
    for folder in [root, *sorted(p for p in root.iterdir() if p.is_dir())]:
        for path in sorted(folder.iterdir()):
            if path.suffix.lower() in IMAGE_SUFFIXES:
                found.setdefault(path.stem, path)
    return found


def read_metadata(path: Path) -> pd.DataFrame:
    if not path.is_file():
        raise UserError(f"HAM10000 metadata {path} not found; data.root must hold {METADATA} next to the image folders")
    meta = pd.read_csv(path, dtype=str, encoding="utf-8-sig")
    meta.columns = [c.strip() for c in meta.columns]
    missing = [c for c in REQUIRED_COLUMNS if c not in meta.columns]
    if missing:
        raise UserError(f"{path}: missing column(s) {missing}; expected the HAM10000 header lesion_id,image_id,dx,...")
    meta["image_id"] = meta["image_id"].str.strip().str.replace(r"\.(jpe?g|png)$", "", case=False, regex=True)
    meta["dx"] = meta["dx"].str.strip().str.lower()
    unknown = meta.loc[~meta["dx"].isin(CLASSES)]
    if len(unknown):
        first = unknown.index[0]
        raise UserError(
            f"{path} row {first + 2}: dx '{unknown['dx'].iloc[0]}' is not one of {CLASSES} "
            f"({len(unknown)} such rows); fix or drop those rows"
        )
    return meta


@register_dataset("ham10000", default_size=64, needs_root=True, summary="HAM10000 dermoscopy, 10,015 images, 7 classes, grouped by lesion")
def load(cfg: dict) -> ImageDataset:
    root = Path(cfg["root"])
    meta = read_metadata(root / METADATA)
    images_by_id = index_images(root)
    absent = [i for i in meta["image_id"] if i not in images_by_id]
    if absent:
        raise UserError(
            f"{len(absent)} image(s) listed in {METADATA} are missing under {root} (first: {', '.join(absent[:5])}); "
            "restore them or remove their rows"
        )
    paths = [images_by_id[i] for i in meta["image_id"]]
    images = cached_decode(cfg["cache_dir"], "ham10000", paths, cfg["image_size"])
    return ImageDataset(
        name="ham10000",
        images=images,
        labels=meta["dx"].map(CLASSES.index).to_numpy(np.int64),
        classes=list(CLASSES),
        mean=IMAGENET_MEAN,
        std=IMAGENET_STD,
        groups=meta["lesion_id"].fillna(meta["image_id"]).to_numpy(),
        ids=meta["image_id"].to_numpy(),
    )
