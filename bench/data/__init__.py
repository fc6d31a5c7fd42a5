"""Datasets by name: each loader is one module in `bench/data/sources/` calling `register_dataset`."""

from __future__ import annotations

import functools
import importlib
import pkgutil
from pathlib import Path

from bench.config import existing_path, expand_path
from bench.data.base import DATASETS, ImageDataset, register_dataset
from bench.errors import UserError

__all__ = ["DATASETS", "ImageDataset", "register_dataset", "import_loaders", "load_dataset", "resolve_data_config", "sites_path"]


@functools.cache
def import_loaders() -> None:
    """Import every module under bench/data/sources: adding a dataset is adding a file there
    (once per process: a workflow resolves thousands of runs)."""
    from bench.data import sources

    for info in pkgutil.iter_modules(sources.__path__):
        importlib.import_module(f"{sources.__name__}.{info.name}")


def resolve_data_config(section: dict) -> dict:
    """Check the dataset name, its root and sites file; fill the dataset's default image size."""
    import_loaders()
    name = section["name"]
    if name not in DATASETS:
        raise UserError(f"config key 'data.name': unknown dataset '{name}'; choose one of: {', '.join(sorted(DATASETS))}")
    spec = DATASETS[name]
    out = dict(section)
    out["image_size"] = section["image_size"] or spec.default_size
    if spec.needs_root:
        if not section["root"]:
            raise UserError(f"config key 'data.root': dataset '{name}' needs the folder it was downloaded to; set data.root")
        out["root"] = existing_path(section["root"], "data.root", spec.root_kind, f"point data.root (or FEDRANK_DATA_ROOT) at the downloaded {name} dataset")
    if section["sites_file"]:  # checked, but kept as written so the run id travels between machines
        existing_path(section["sites_file"], "data.sites_file", "file", "point it at the centre/split CSV (e.g. FLamby's flamby_train_test_split.csv) or set it to null")
    return out


def sites_path(section: dict) -> Path:
    """The sites file with variables expanded (the config keeps it as written, so run ids travel)."""
    return Path(expand_path(section["sites_file"]))


def load_dataset(data_cfg: dict) -> ImageDataset:
    """Load (from the decode cache when possible) the dataset a resolved `data` section names."""
    import_loaders()
    return DATASETS[data_cfg["name"]].load(data_cfg)
