"""Folder-per-class datasets (MSID, MODD, MSLD) in the layouts they are distributed in.

Accepted under data.root, after descending through single wrapper folders (`Teeth_Dataset/`):
* flat: `<class>/*.jpg`, one folder per class;
* pre-split: `Training|Validation|Testing/<class>/*.jpg` (also train/val/valid/test, any case).
Class folders are matched to the expected names ignoring case, spaces, `_` and `-`, so
`Monkey Pox` is `Monkeypox`; an unexpected or missing class stops with an error naming them.
Images inside a class folder are read recursively; hidden and non-image files are skipped
(and counted in the notes).

Pre-split folders are not used as the test split: these datasets ship augmented copies of each
original, and the distributed splits put copies of one original on both sides. All images are
pooled, copies are grouped (data.duplicates, near by default), and the global split is drawn
grouped; the notes say how many copy clusters straddled the distributed folders.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from bench.data.base import ImageDataset, register_dataset
from bench.data.readers import decode_grouped, groups_spanning, has_image_name, is_image_file
from bench.errors import UserError

SPLIT_FOLDERS = {"training": "train", "train": "train", "validation": "val", "valid": "val", "val": "val", "testing": "test", "test": "test"}


def normalise(name: str) -> str:
    return re.sub(r"[\s_\-]+", "", name).lower()


@dataclass
class Listing:
    """The images of a folder dataset: paths, labels, ids relative to data.root, split folder of origin."""

    paths: list[Path] = field(default_factory=list)
    labels: list[int] = field(default_factory=list)
    ids: list[str] = field(default_factory=list)
    origin: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)


def subfolders(folder: Path, ignore: set[str]) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".") and p.name not in ignore)


def dataset_folder(root: Path, classes: list[str], ignore: set[str]) -> Path:
    """Descend through wrapper folders: a single sub-folder, no images, not a class or split folder."""
    known = set(SPLIT_FOLDERS) | {normalise(c) for c in classes}
    folder = root
    while True:
        children = subfolders(folder, ignore)
        if len(children) != 1 or normalise(children[0].name) in known or any(is_image_file(p) for p in folder.iterdir()):
            return folder
        folder = children[0]


def match_classes(folders: list[Path], classes: list[str], where: Path) -> dict[int, Path]:
    """Class index -> folder; an unexpected folder is an error naming it and the expected names."""
    expected = {normalise(c): i for i, c in enumerate(classes)}
    unexpected = [p.name for p in folders if normalise(p.name) not in expected]
    if unexpected:
        raise UserError(
            f"{where}: unexpected class folder(s) {unexpected}; expected {', '.join(classes)}. "
            "Rename them, or list stray folders in data.ignore_folders"
        )
    return {expected[normalise(p.name)]: p for p in folders}


def read_class_folders(root: Path, classes: list[str], ignore: list[str]) -> Listing:
    """List every image with its class, in a fixed order (split folder, class, path)."""
    ignore_set = set(ignore)
    top = dataset_folder(root, classes, ignore_set)
    children = subfolders(top, ignore_set)
    if not children:
        raise UserError(f"{top} holds no class folders; data.root must hold one folder per class ({', '.join(classes)}) or Training/Validation/Testing folders")
    split_names = [normalise(p.name) in SPLIT_FOLDERS for p in children]
    if any(split_names) and not all(split_names):
        stray = [p.name for p, s in zip(children, split_names) if not s]
        raise UserError(f"{top}: folder(s) {stray} next to the split folders; remove them or list them in data.ignore_folders")
    parts = [(SPLIT_FOLDERS[normalise(p.name)], p) for p in children] if all(split_names) else [("all", top)]
    listing, found = Listing(), np.zeros(len(classes), dtype=int)
    for origin, folder in parts:
        for label, class_folder in sorted(match_classes(subfolders(folder, ignore_set), classes, folder).items()):
            files = sorted(p for p in class_folder.rglob("*") if p.is_file() and not any(part in ignore_set for part in p.relative_to(class_folder).parts))
            images = [p for p in files if has_image_name(p.name)]
            listing.skipped += [str(p.relative_to(root)) for p in files if not has_image_name(p.name) and not p.name.startswith(".")]
            if not images:
                raise UserError(f"class folder {class_folder} holds no images; add its images or remove the folder")
            found[label] += len(images)
            for path in images:
                listing.paths.append(path)
                listing.labels.append(label)
                listing.ids.append(str(path.relative_to(root)))
                listing.origin.append(origin)
    missing = [c for c, n in zip(classes, found) if n == 0]
    if missing:
        raise UserError(f"{top}: no folder for class(es) {missing}; expected {', '.join(classes)} (check data.root)")
    return listing


def origin_note(listing: Listing, groups: np.ndarray | None) -> list[str]:
    """How the distributed split folders were used, and how many groups they split."""
    origin = np.array(listing.origin)
    if (origin == "all").all():
        return []
    counts = ", ".join(f"{name} {int((origin == name).sum())}" for name in ("train", "val", "test") if (origin == name).any())
    note = f"distributed split folders ({counts}) pooled and re-split by group"
    if groups is not None:
        straddling = groups_spanning(groups, origin)
        note += f": {straddling} group(s) of copies/patients spanned several of those folders"
    return [note]


def register_folder_dataset(name: str, classes: list[str], summary: str, case_of: Callable[[Path], str] | None = None, images: int | None = None) -> None:
    """Register a folder-per-class loader; `case_of(path)` names an image's patient/case, if known;
    `images` is its published size (for plans made without it)."""

    @register_dataset(name, default_size=64, needs_root=True, summary=summary, images=images)
    def load(cfg: dict) -> ImageDataset:
        root = Path(cfg["root"])
        listing = read_class_folders(root, classes, cfg["ignore_folders"])
        labels = np.array(listing.labels, dtype=np.int64)
        cases = None if case_of is None else np.array([f"{classes[y]}/{case_of(p)}" for p, y in zip(listing.paths, labels)], dtype=object)
        decoded = decode_grouped(cfg, name, listing.paths, labels, cases, default_duplicates="near")
        notes = decoded.notes + origin_note(listing, decoded.groups)
        if listing.skipped:
            notes.append(f"skipped {len(listing.skipped)} non-image file(s) (first: {', '.join(listing.skipped[:5])})")
        return decoded.dataset(name, labels, classes, np.array(listing.ids, dtype=object), notes)
