"""Where a result came from: library versions, device, git revision, host."""

from __future__ import annotations

import datetime as dt
import platform
import socket
import subprocess
from pathlib import Path

import numpy as np
import timm
import torch

import bench


def utc_now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


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


def environment(device: torch.device) -> dict:
    return {
        "fedrank": bench.__version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "timm": timm.__version__,
        "numpy": np.__version__,
        "device": device_name(device),
        "git_revision": git_revision(),
        "host": socket.gethostname(),
        "platform": platform.platform(),
    }
