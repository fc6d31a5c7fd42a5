"""HAM10000 (Tschandl et al. 2018) in its distribution layout.

`HAM10000_metadata.csv` (`lesion_id,image_id,dx,...`) next to the images, either split into
`HAM10000_images_part_1/` + `HAM10000_images_part_2/` or in one folder. Classes, in this fixed
order: akiec, bcc, bkl, df, mel, nv, vasc. Images are grouped by `lesion_id` (7,470 lesions for
10,015 images) so a lesion never sits in both the training and the test split.

Acquisition centres (natural partitions) come from the `dataset` column of the Harvard Dataverse
metadata, `HAM10000_metadata_dataverse.csv`: read from data.root when present, or from the file
data.sites_file names.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from bench.data import sites_path
from bench.data.base import ImageDataset, register_dataset
from bench.data.readers import decode_grouped, index_images, listed_images, read_csv, site_codes
from bench.errors import UserError

if TYPE_CHECKING:
    import pandas as pd

CLASSES = ["akiec", "bcc", "bkl", "df", "mel", "nv", "vasc"]
METADATA = "HAM10000_metadata.csv"
DATAVERSE = "HAM10000_metadata_dataverse.csv"
CENTRES = ["vidir_modern", "vidir_molemax", "rosendahl", "vienna_dias"]
REQUIRED_COLUMNS = ("lesion_id", "dx")


def read_metadata(path: Path) -> pd.DataFrame:
    meta = read_csv(path, "image_id", REQUIRED_COLUMNS, f"data.root must hold {METADATA} next to the image folders")
    meta["dx"] = meta["dx"].str.lower()
    unknown = meta.loc[~meta["dx"].isin(CLASSES)]
    if len(unknown):
        first = unknown.index[0]
        raise UserError(
            f"{path} row {first + 2}: dx '{unknown['dx'].iloc[0]}' is not one of {CLASSES} "
            f"({len(unknown)} such rows); fix or drop those rows"
        )
    return meta


def read_centres(cfg: dict, root: Path, image_ids: pd.Series) -> tuple[np.ndarray | None, list[str], list[str]]:
    """Each image's centre from the Dataverse metadata (sites file or data.root), if there is one."""
    path = sites_path(cfg) if cfg["sites_file"] else root / DATAVERSE
    if not path.is_file():
        return None, [], [f"acquisition centres: none ({DATAVERSE} not in data.root and data.sites_file unset)"]
    table = read_csv(path, "image_id", ["dataset"], f"data.sites_file must be {DATAVERSE} (image_id and dataset columns)")
    centre = dict(zip(table["image_id"], table["dataset"]))
    sites, names = site_codes([centre.get(i) for i in image_ids], CENTRES)
    notes = [f"acquisition centres from {path.name}: {', '.join(names)}"]
    if (sites < 0).any():
        notes.append(f"{int((sites < 0).sum())} image(s) have no centre in {path.name}: left out of natural partitions")
    return sites, names, notes


@register_dataset("ham10000", default_size=64, needs_root=True, summary="HAM10000 dermoscopy, 10,015 images, 7 classes, grouped by lesion; 4 centres", images=10015)
def load(cfg: dict) -> ImageDataset:
    root = Path(cfg["root"])
    meta = read_metadata(root / METADATA)
    paths = listed_images(list(meta["image_id"]), index_images(root, "HAM10000"), root / METADATA, root)
    labels = meta["dx"].map(CLASSES.index).to_numpy(np.int64)
    lesions = meta["lesion_id"].where(meta["lesion_id"] != "", meta["image_id"]).to_numpy()
    sites, site_names, site_notes = read_centres(cfg, root, meta["image_id"])
    decoded = decode_grouped(cfg, "ham10000", paths, labels, lesions, default_duplicates="exact")
    return decoded.dataset("ham10000", labels, CLASSES, meta["image_id"].to_numpy(), decoded.notes + site_notes, sites=sites, site_names=site_names)
