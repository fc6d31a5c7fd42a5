"""Atomic file output: a killed job never leaves a file that looks finished.

Every writer goes to a temporary sibling and `os.replace`s it into place, which is atomic on
POSIX file systems (including the NFS/Lustre scratch space of HPC clusters for same-directory
renames).
"""

from __future__ import annotations

import json
import os
import tempfile
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


def check_writable(root: Path, what: str, fix: str) -> None:
    """A one-line error now, before anything is written, if the folder `root` (`what`, e.g.
    "output folder") cannot be created or written: a file on its path, a name too long for the
    filesystem, no permission."""
    existing = next(p for p in (root, *root.parents) if os.path.exists(p))  # os.path: a name too long is only not there
    if not existing.is_dir():
        raise UserError(f"{what} {root}: {existing} is a file, not a folder; {fix}")
    limit = os.pathconf(existing, "PC_NAME_MAX")
    too_long = next((part for part in root.parts if len(os.fsencode(part)) > limit), None)
    if too_long is not None:
        raise UserError(f"{what} {root}: the name '{too_long[:24]}...' has {len(os.fsencode(too_long))} bytes, more than the {limit} "
                        f"this filesystem allows; {fix}")
    try:
        os.rmdir(tempfile.mkdtemp(prefix=".fedrank-write-test-", dir=existing))
    except OSError as exc:
        raise UserError(f"{what} {root}: cannot write in {existing} ({exc.strerror}); {fix}") from None


def write_json(path: str | os.PathLike, obj: Any, compact: bool = False) -> None:
    """JSON, atomically; indented for a reader, or compact for a large machine-read file (indenting
    takes json's pure-Python encoder, 5x slower)."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=None if compact else 2, separators=(",", ":") if compact else None, default=str) + "\n")


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

    with atomic_path(path) as tmp, open(tmp, "wb") as file:
        torch.save(obj, file)  # through a Python file object: a full disk is an OSError with its errno (ENOSPC)


def file_sha256(path: str | os.PathLike) -> str:
    import hashlib

    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def remove_stale_temporaries(directory: str | os.PathLike) -> None:
    """Delete temporaries left by a killed writer (they never look finished, but take space)."""
    for stale in Path(directory).glob(f"*{TMP_MARK}*"):
        stale.unlink(missing_ok=True)
