"""Pieces every file-based loader shares: finding image files, reading label CSVs the way their
sources really ship them (BOM, CRLF, extra columns, ids with or without extension), decoding
through the cache, and grouping duplicates. Each failure is one line naming the file and the fix."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

import numpy as np

from bench.data.base import IMAGENET_MEAN, IMAGENET_STD, ImageDataset
from bench.data.cache import cached_decode, source_files
from bench.data.duplicates import duplicate_note, find_duplicates, merge_groups
from bench.errors import UserError

if TYPE_CHECKING:  # pandas is imported where a table is read: resolving a config imports every loader
    import pandas as pd

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp"}
IMAGE_EXTENSION = r"\.(" + "|".join(sorted(s[1:] for s in IMAGE_SUFFIXES)) + ")$"
SHOWN = 5  # ids named in an error about many rows


def has_image_name(name: str) -> bool:
    return os.path.splitext(name)[1].lower() in IMAGE_SUFFIXES and not name.startswith(".")


def groups_spanning(groups: np.ndarray, side: np.ndarray) -> int:
    """How many groups have members on more than one side (of a split, of split folders)."""
    import pandas as pd

    return int((pd.Series(side).groupby(groups).nunique() > 1).sum())


def is_image_file(path: Path) -> bool:
    return has_image_name(path.name) and path.is_file()


def index_images(folder: Path, what: str) -> dict[str, Path]:
    """Map image id (file stem) to path for images in `folder` and its immediate sub-folders."""
    if not folder.is_dir():
        raise UserError(f"image folder {folder} not found; data.root must hold the {what} images in their distribution layout")
    found: dict[str, Path] = {}
    with os.scandir(folder) as entries:  # scandir knows file types without a stat per file
        listing = sorted(entries, key=lambda e: e.name)
    subfolders = [e.path for e in listing if e.is_dir()]
    for sub in [str(folder), *subfolders]:
        with os.scandir(sub) as entries:
            for entry in sorted(entries, key=lambda e: e.name):
                if has_image_name(entry.name) and entry.is_file():
                    found.setdefault(os.path.splitext(entry.name)[0], Path(entry.path))
    return found


def read_csv(path: Path, image: str, required: Sequence[str], fix: str) -> pd.DataFrame:
    """A CSV with one row per image as strings with stripped names and cells; BOM and CRLF
    tolerated, extra columns kept, the `image` column's ids without extension. A file without
    rows, or one listing an image twice (a repeated row, or a conflicting label, lesion or
    centre that would be used silently), is an error naming the rows."""
    import pandas as pd

    if not path.is_file():
        raise UserError(f"{path} not found; {fix}")
    try:
        table = pd.read_csv(path, dtype=str, encoding="utf-8-sig", keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise UserError(f"{path} is not a readable CSV ({exc.__class__.__name__}: {str(exc).splitlines()[0]}); {fix}") from None
    table.columns = [str(c).strip() for c in table.columns]
    table = table.apply(lambda column: column.str.strip())
    missing = [c for c in [image, *required] if c not in table.columns]
    if missing:
        raise UserError(f"{path}: missing column(s) {missing}; expected a header with {', '.join([image, *required])}")
    if table.empty:
        raise UserError(f"{path} has a header but no rows: it lists no images; restore its rows")
    table[image] = strip_extension(table[image])
    repeated = table[image].duplicated(keep=False)
    if repeated.any():
        first = table.loc[repeated, image].iloc[0]
        rows = ", ".join(str(i + 2) for i in np.flatnonzero(table[image] == first))  # file lines: the header is line 1
        raise UserError(f"{path} rows {rows} all list {image} {first} ({table.loc[repeated, image].nunique()} image(s) listed more than once); keep one row per image")
    return table


def strip_extension(ids: pd.Series) -> pd.Series:
    """Image ids as file stems: `ISIC_0000000.jpg` and `ISIC_0000000` name the same image."""
    return ids.str.replace(IMAGE_EXTENSION, "", case=False, regex=True)


def listed_images(ids: Sequence[str], images_by_id: dict[str, Path], listing: Path, folder: Path) -> list[Path]:
    """The files of the ids a CSV lists; all missing ones are counted and the first few named."""
    absent = [i for i in ids if i not in images_by_id]
    if absent:
        raise UserError(
            f"{len(absent)} image(s) listed in {listing.name} are missing under {folder} (first: {', '.join(absent[:SHOWN])}); "
            "restore them or remove their rows"
        )
    return [images_by_id[i] for i in ids]


def site_codes(names: Sequence[str | None], order: Sequence[str]) -> tuple[np.ndarray, list[str]]:
    """Per-image index into the site names (-1 where unknown): `order` first, then any others sorted."""
    present = {n for n in names if n}
    site_names = [*order, *sorted(present - set(order))]
    position = {name: i for i, name in enumerate(site_names)}
    return np.array([position.get(n, -1) if n else -1 for n in names], dtype=np.int64), site_names


@dataclass
class Decoded:
    """Pixels of a file list, its groups joined through duplicate clusters, and what was found."""

    images: np.ndarray
    groups: np.ndarray | None
    duplicates: np.ndarray | None
    notes: list[str] = field(default_factory=list)

    def dataset(self, name: str, labels: np.ndarray, classes: list[str], ids: np.ndarray, notes: list[str], **extra) -> ImageDataset:
        """The ImageDataset of these RGB photographs (ImageNet normalisation, for pretrained models)."""
        return ImageDataset(name=name, images=self.images, labels=labels, classes=list(classes), mean=IMAGENET_MEAN, std=IMAGENET_STD,
                            groups=self.groups, ids=ids, duplicates=self.duplicates, notes=notes, **extra)


def decode_grouped(cfg: dict, dataset: str, paths: Sequence[Path], labels: np.ndarray, groups: np.ndarray | None, default_duplicates: str) -> Decoded:
    """Checksum the sources, decode them through the cache, and merge duplicate clusters into groups.

    `data.duplicates: auto` uses the dataset's `default_duplicates` (near for folder datasets
    distributed with augmented copies; exact where patient/lesion ids already group images).
    """
    if not len(paths):  # nothing to cache: an empty cache entry would look like a dataset
        raise UserError(f"{dataset}: no images left to load from data.root {cfg['root']}; check its label files (and data.sites_file)")
    mode = default_duplicates if cfg["duplicates"] == "auto" else cfg["duplicates"]
    sources = source_files(cfg["cache_dir"], dataset, paths, perceptual=mode == "near")
    images = cached_decode(cfg, dataset, paths, sources)
    clusters = find_duplicates(sources, mode, cfg["duplicate_distance"])
    notes = [
        f"source files: {len(paths)}, SHA-256 of their checksums {sources.digest[:16]}",
        duplicate_note(clusters, sources, labels, mode, cfg["duplicate_distance"]),
    ]
    return Decoded(images, merge_groups(groups, clusters), clusters, notes)
