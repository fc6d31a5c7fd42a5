"""One process per run folder: an exclusive `flock` on `<run folder>/run.lock`, which names its holder.

Two `fedrank run` processes on one folder would both train and overwrite each other's outputs; the
second one stops instead, with one line naming the holder (host and pid). The kernel drops a flock
when its process dies (kill -9 included), so a lock file left by a killed run is free to take: it is
recovered with a log line. The file is removed on release; a process that locked a file just removed
by its holder sees another inode (or none) at the path and tries again. py-filelock's UnixFileLock
(tox-dev/filelock, src/filelock/_unix.py) guards the same race by checking that the locked file
still has a link; comparing inodes also catches a file created anew in between.

Shared filesystems: on Linux, flock on NFS (v3 with lockd, v4) is emulated with byte-range locks and
holds across nodes; on Lustre it needs the `flock` mount option (`localflock` locks per node only,
`noflock` refuses: then a warning says concurrent runs of a folder are not detected); BeeGFS and
GPFS honour it cluster-wide when their global locking is on.
"""

from __future__ import annotations

import errno
import fcntl
import logging
import os
import socket
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from bench.errors import Stopped

log = logging.getLogger("fedrank")

LOCK_NAME = "run.lock"
UNSUPPORTED = (errno.ENOSYS, errno.EOPNOTSUPP, errno.ENOLCK, errno.EINVAL)


class FolderLocked(Stopped):
    """Another live process holds the run folder: not this run's failure, never recorded as one."""


def holder_text(fd: int) -> str:
    os.lseek(fd, 0, os.SEEK_SET)
    return os.read(fd, 4096).decode(errors="replace").strip()


def try_lock(path: Path) -> int | None:
    """An fd holding the flock of the file now at `path`; None when flock is unsupported here."""
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = holder_text(fd) or "another process"
            os.close(fd)
            raise FolderLocked(f"{path.parent} is in use by a run of {holder}; wait for it to end, or choose another --out") from None
        except OSError as exc:
            os.close(fd)
            if exc.errno in UNSUPPORTED:
                log.warning("%s: this filesystem does not support file locks (%s); two runs started on this folder at once are not detected",
                            path.parent, exc.strerror)
                return None
            raise
        try:
            same = os.fstat(fd).st_ino == os.stat(path).st_ino
        except FileNotFoundError:
            same = False
        if same:
            return fd
        os.close(fd)  # its holder removed it on release: lock the file now there


@contextmanager
def run_folder_lock(root: Path) -> Iterator[None]:
    """Hold the run folder's lock for the block; a lock left by a dead process is taken over (logged)."""
    path = root / LOCK_NAME
    fd = try_lock(path)
    if fd is None:
        yield
        return
    try:
        stale = holder_text(fd)
        if stale:
            log.warning("%s: recovered the lock of %s, which no longer runs", root, stale)
        os.ftruncate(fd, 0)
        os.lseek(fd, 0, os.SEEK_SET)
        os.write(fd, f"host {socket.gethostname()} pid {os.getpid()}\n".encode())
        yield
    finally:
        path.unlink(missing_ok=True)
        os.close(fd)
