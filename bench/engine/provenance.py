"""Where a result came from: library versions, device, git revision, host."""

from __future__ import annotations

import datetime as dt
import platform
import re
import socket
import subprocess
import time
import tomllib
from functools import cache
from importlib import metadata
from pathlib import Path

import psutil
import torch

import bench


def utc_now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


def process_age() -> float:
    """Seconds since this process started (interpreter start and imports included)."""
    return time.time() - psutil.Process().create_time()


def git_revision() -> str:
    """HEAD of the checkout fedrank runs from, marked '-dirty' with uncommitted changes."""
    repo = Path(bench.__file__).resolve().parent.parent
    try:
        head = subprocess.run(["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(repo), "status", "--porcelain", "--untracked-files=no"], capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return head + ("-dirty" if dirty else "")


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return f"{device} ({torch.cuda.get_device_name(device)})"
    return f"{device} ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


def dependency_names() -> list[str]:
    """The packages fedrank depends on: this checkout's pyproject.toml (the code that runs), or
    the installed package's metadata when there is no checkout."""
    pyproject = Path(bench.__file__).resolve().parent.parent / "pyproject.toml"
    if pyproject.is_file():
        requirements = tomllib.loads(pyproject.read_text())["project"]["dependencies"]
    else:
        requirements = [r for r in metadata.requires("fedrank") or [] if "extra ==" not in r]
    return sorted({re.match(r"[A-Za-z0-9_.-]+", r).group(0).lower() for r in requirements})


@cache
def package_versions() -> dict[str, str | None]:
    """Installed version of every dependency (None: not installed)."""
    versions = {}
    for name in dependency_names():
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def cuda_versions() -> dict | None:
    """CUDA and cuDNN versions torch was built with; None for a CPU-only build."""
    return {"cuda": torch.version.cuda, "cudnn": torch.backends.cudnn.version()} if torch.version.cuda else None


def environment(device: torch.device) -> dict:
    return {
        "fedrank": bench.__version__,
        "python": platform.python_version(),
        "packages": package_versions(),
        "cuda": cuda_versions(),
        "device": device_name(device),
        "git_revision": git_revision(),
        "host": socket.gethostname(),
        "platform": platform.platform(),
    }
