"""Atomic file output: a killed job never leaves a file that looks finished.

Every writer goes to a temporary sibling and `os.replace`s it into place, which is atomic on
POSIX file systems (including the NFS/Lustre scratch space of HPC clusters for same-directory
renames).
"""

from __future__ import annotations

import json
import os
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator

if TYPE_CHECKING:
    import pandas as pd

from bench.errors import UserError

MB = 2**20  # bytes per MB, as the FedLSC paper counts communication

TMP_MARK = ".tmp."


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to `path`; rename it onto `path` only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}{TMP_MARK}{os.getpid()}")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


@contextmanager
def output_folder(path: str | os.PathLike) -> Iterator[Path]:
    """Create a command's output folder (and missing parents) for the block; if the block fails,
    remove the folders it created that are still empty: a failed command leaves no empty folder."""
    path = Path(path)
    created = [folder for folder in (path, *path.parents) if not folder.exists()]  # deepest first
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"cannot create the output folder {path} ({exc.strerror}); pass a writable --out") from None
    try:
        yield path
    except BaseException:
        for folder in created:
            if any(folder.iterdir()):
                break
            folder.rmdir()
        raise


def write_json(path: str | os.PathLike, obj: Any) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n")


def write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_parquet(path: str | os.PathLike, frame: pd.DataFrame) -> None:
    with atomic_path(path) as tmp:
        frame.to_parquet(tmp, index=False)


def write_csv(path: str | os.PathLike, frame: pd.DataFrame) -> None:
    with atomic_path(path) as tmp:
        frame.to_csv(tmp, index=False)


def torch_save(path: str | os.PathLike, obj: Any) -> None:
    import torch

    with atomic_path(path) as tmp:
        torch.save(obj, tmp)


def remove_stale_temporaries(directory: str | os.PathLike) -> None:
    """Delete temporaries left by a killed writer (they never look finished, but take space)."""
    for stale in Path(directory).glob(f"*{TMP_MARK}*"):
        stale.unlink(missing_ok=True)
