"""Which privacy modes each method runs under: the table bench.engine.privacy derives by running
every method under each mode (bench/methods/privacy_compatibility.json), read without torch, so
`fedrank methods` and a report's leaderboard show it in milliseconds."""

from __future__ import annotations

import json
from importlib import resources

MODES = ("client_dp", "sample_dp", "secure_aggregation")
TABLE = "privacy_compatibility.json"


def compatibility() -> dict[str, dict[str, bool]]:
    """The derived table as committed (read in milliseconds by `fedrank methods`); {} if absent."""
    path = resources.files("bench").joinpath("methods", TABLE)
    return json.loads(path.read_text()) if path.is_file() else {}


def compatibility_columns(name: str, table: dict[str, dict[str, bool]]) -> dict[str, str]:
    """The DP-compatible and SecAgg-compatible columns of `fedrank methods` and the leaderboard."""
    row = table.get(name)
    if row is None:
        return {"DP-compatible": "not derived", "SecAgg-compatible": "not derived"}
    levels = [level for level, mode in (("client", "client_dp"), ("record", "sample_dp")) if row[mode]]
    return {"DP-compatible": " + ".join(levels) or "no", "SecAgg-compatible": "yes" if row["secure_aggregation"] else "no"}
