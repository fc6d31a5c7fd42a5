"""Does a run's metrics.parquet belong to its run.json? Checked by the engine before it calls a run
finished, and by every report before it scores one (importable without torch).

A finished run records the SHA-256 of the metrics file it wrote (`metrics_sha256`); a file that
still has it is the one written with the record. Otherwise (a record without it, from an older
fedrank, or a file replaced since) the file's own content is checked: the run id in its rows must
be the record's, and a completed run must have every round 1..rounds and its evaluation rounds
(every `eval.every` rounds and the last). One line says what differs."""

from __future__ import annotations

import json
import logging
from pathlib import Path

from bench.io import file_sha256

log = logging.getLogger("fedrank")
FINAL_STATUSES = ("completed", "diverged")


def read_record(path: Path) -> dict | None:
    """A run.json as a dict; None when it is absent, or unreadable (logged: it is not trusted)."""
    if not path.is_file():
        return None
    try:
        record = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        log.warning("%s is unreadable (%s): not trusted, the run is not finished", path, type(exc).__name__)
        return None
    return record if isinstance(record, dict) else None


NOT_EVALUATION = ("train", "comm")  # scopes written every round; the others at evaluation rounds


def evaluation_rounds(rounds: int, every: int) -> set[int]:
    return {r for r in range(1, rounds + 1) if r % every == 0 or r == rounds}


def metrics_mismatch(folder: str | Path, run_id: str, status: str, rounds: int, every: int, sha256: str | None) -> str | None:
    """What differs between a run's record and its metrics.parquet ("its metrics.parquet ..."), or
    None (also when the file is absent or unreadable: those are reported where files are read)."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    path = Path(folder) / "metrics.parquet"
    if not path.is_file() or (sha256 is not None and file_sha256(path) == sha256):
        return None
    try:
        table = pq.read_table(path, columns=["run_id", "round", "scope"])
    except (pa.ArrowException, OSError, KeyError):
        return None
    others = sorted(set(pc.unique(table["run_id"].cast(pa.string())).to_pylist()) - {run_id})
    if others:
        return f"its metrics.parquet holds the rows of run {others[0]}"
    if status == "completed":
        present = set(pc.unique(table["round"]).to_pylist())
        evaluation = pc.invert(pc.is_in(table["scope"].cast(pa.string()), pa.array(NOT_EVALUATION)))
        evaluated = set(pc.unique(table.filter(evaluation)["round"]).to_pylist())
        lacking = sorted((set(range(1, rounds + 1)) - present) | (evaluation_rounds(rounds, every) - evaluated))
        if lacking:
            return (f"it completed {rounds} rounds (evaluated every {every}) but its metrics.parquet lacks round(s) "
                    f"{', '.join(map(str, lacking[:5]))}{' ...' if len(lacking) > 5 else ''}")
    if sha256 is not None:
        return "its metrics.parquet is not the file its run.json recorded (SHA-256 differs)"
    return None


def record_mismatch(folder: str | Path, record: dict) -> str | None:
    """`metrics_mismatch` for a run.json read as a dict."""
    config = record.get("config", {})
    return metrics_mismatch(folder, record.get("run_id"), record.get("status"), config.get("train", {}).get("rounds", 0),
                            config.get("eval", {}).get("every", 1), record.get("metrics_sha256"))


def unreadable_output(folder: str | Path) -> str | None:
    """What is wrong with a run's metrics or diagnostics file, or None when both read back."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    for path in (Path(folder) / "metrics.parquet", Path(folder) / "diagnostics.parquet"):
        if not path.is_file():
            return f"{path.name} is missing"
        try:
            pq.read_table(path)
        except (pa.ArrowException, OSError) as exc:
            return f"{path.name} is unreadable ({type(exc).__name__})"
    return None


def output_problem(folder: str | Path, record: dict) -> str | None:
    """Why a finished run's outputs cannot be trusted (unreadable, or not the run's), or None."""
    return unreadable_output(folder) or record_mismatch(folder, record)
