"""The files of a run directory, importable without torch (`fedrank status` reads thousands)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass
class RunPaths:
    root: Path

    @property
    def record(self) -> Path:
        return self.root / "run.json"

    @property
    def metrics(self) -> Path:
        return self.root / "metrics.parquet"

    @property
    def diagnostics(self) -> Path:
        return self.root / "diagnostics.parquet"

    @property
    def checkpoint(self) -> Path:
        return self.root / "checkpoint.pt"
