"""The in-memory dataset every loader returns, and the registry loaders join by name."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from bench.errors import UserError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass
class ImageDataset:
    """Labelled images decoded once into uint8, channels first (N, C, H, W).

    `groups` holds the patient/lesion id of each image where the source has one, merged with its
    duplicate cluster: the global test split never separates a group. `test_mask` marks an
    official test split, if any. `sites` holds each image's acquisition centre as an index into
    `site_names` (-1: unknown), the clients of a natural partition. `duplicates` holds each
    image's cluster of exact/near copies (-1: none found; None: not checked).
    """

    name: str
    images: np.ndarray
    labels: np.ndarray
    classes: list[str]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    groups: np.ndarray | None = None
    ids: np.ndarray | None = None
    test_mask: np.ndarray | None = None
    sites: np.ndarray | None = None
    site_names: list[str] = field(default_factory=list)
    duplicates: np.ndarray | None = None
    notes: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.images.dtype != np.uint8 or self.images.ndim != 4:
            raise ValueError(f"{self.name}: images must be uint8 (N, C, H, W), got {self.images.dtype} {self.images.shape}")
        if len(self.labels) != len(self.images):
            raise ValueError(f"{self.name}: {len(self.labels)} labels for {len(self.images)} images")
        bad = (self.labels < 0) | (self.labels >= len(self.classes))
        if bad.any():
            raise UserError(
                f"{self.name}: {int(bad.sum())} label(s) outside the {len(self.classes)} classes "
                f"{self.classes} (first at row {int(np.flatnonzero(bad)[0])}); fix the labels file"
            )
        for name in ("groups", "ids", "test_mask", "sites", "duplicates"):
            column = getattr(self, name)
            if column is not None and len(column) != len(self.labels):
                raise ValueError(f"{self.name}: {len(column)} {name} for {len(self.labels)} images")

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def channels(self) -> int:
        return int(self.images.shape[1])

    @property
    def image_size(self) -> int:
        return int(self.images.shape[-1])


@dataclass(frozen=True)
class DatasetSpec:
    name: str
    load: Callable[[dict], ImageDataset]
    default_size: int | None  # None: the source's native size
    needs_root: bool
    summary: str
    root_kind: str = "folder"  # what data.root names: a folder, or a file (medmnist's .npz)
    images: int | None = None  # the published size, for plans made without the data (None: unknown)


DATASETS: dict[str, DatasetSpec] = {}


def register_dataset(name: str, *, default_size: int | None, needs_root: bool, summary: str, root_kind: str = "folder", images: int | None = None):
    """Decorator: make a loader `load(data_config) -> ImageDataset` available as `data.name`."""

    def wrap(load: Callable[[dict], ImageDataset]) -> Callable[[dict], ImageDataset]:
        DATASETS[name] = DatasetSpec(name, load, default_size, needs_root, summary, root_kind, images)
        return load

    return wrap
