"""The captions a report folder wrote (report.json `captions`), for Snakemake's HTML report.

The workflow hands a `StoredCaptions` to each report rule as a parameter; the rule's caption
template calls its `of` with the path of the file it shows (a method, not `__call__`: Snakemake
would take a callable parameter for a function of the wildcards). It reads report.json only
then, after the job ran, so the caption is the one computed with the file. Imports nothing heavy: Snakemake loads
it whenever it builds the DAG.
"""

from __future__ import annotations

import json
from functools import cached_property
from pathlib import Path

RST_SPECIAL = str.maketrans({c: f"\\{c}" for c in "\\*`|_"})


class StoredCaptions:
    def __init__(self, record: str | Path):
        self.record = Path(record)

    @cached_property
    def captions(self) -> dict[str, str]:
        try:
            return json.loads(self.record.read_text()).get("captions", {})
        except (OSError, json.JSONDecodeError):
            return {}

    def of(self, path: str) -> str:
        """The caption of `path` (relative to the report folder), escaped for reStructuredText."""
        return self.captions.get(path, f"{path}: no caption recorded in {self.record}").translate(RST_SPECIAL)

    def __repr__(self) -> str:  # Snakemake shows rule parameters; a stable text keeps logs readable
        return f"StoredCaptions({str(self.record)!r})"
