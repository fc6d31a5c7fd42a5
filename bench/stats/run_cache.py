"""Per-run summaries of a results folder, kept between reports: a refresh reads only new runs.

What collection reads of a run (its runs-table row, its evaluation rows and the per-client rows
the statistics need, the problems found: bench.stats.collect.RunSummaries) depends only on its
run.json, its metrics.parquet, the code and the per-client metrics asked for. So it is stored
under a key hashing the run.json's bytes (which record the metrics file's SHA-256), the metrics
file's size and modification time, a fingerprint of the code (bench.plan_cache) and those
metrics. A refresh hashes every run.json, reads and reduces only the runs whose key is new,
and builds every statistic again from the stored summaries; runs no longer in the folder drop out.

The cache is a folder of segments, one per refresh that read runs: `<name>.metrics.arrow` and
`<name>.clients.arrow` (rows of the segment's runs, `run` = the run's index in the segment; Arrow
IPC files, LZ4-compressed), then `<name>.runs.json` (per run: folder, key,
row, problems), written last and atomically: a segment without it is incomplete and ignored. Segments none of whose runs are current are
deleted; when more than MAX_SEGMENTS remain, or most stored runs are stale, they are merged into one.
The layout follows Benchopt's per-result cache (benchopt/benchopt, benchopt/utils/parquet.py keeps
one file per solver run and concatenates them on read) and an LSM tree's merge of small segments.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

import numpy as np
import pandas as pd

from bench.io import atomic_path, write_json
from bench.stats.collect import RunSummaries, reduce_runs

log = logging.getLogger(__name__)
VERSION = 1  # of the stored summaries' format: a new one ignores older segments
MAX_SEGMENTS = 8
SETS = ("config_keys", "treatment_keys")  # row fields that are frozensets (stored as sorted lists)
RUNS, ARROW, TABLES = ".runs.json", ".arrow", ("metrics", "clients")


def cache_salt(client_metrics: list[str]) -> bytes:
    """What every key shares: the format, the code that reduces runs, the per-client metrics."""
    from bench.plan_cache import code_fingerprint

    return json.dumps([VERSION, code_fingerprint(), client_metrics]).encode()


def run_key(path: Path, salt: bytes) -> str:
    """The key of a run's summary: its run.json's bytes, its metrics file's size and mtime."""
    digest = hashlib.sha256(salt)
    try:
        digest.update(path.read_bytes())
        stat = (path.parent / "metrics.parquet").stat()
        digest.update(f"{stat.st_size}:{stat.st_mtime_ns}".encode())
    except OSError as exc:  # unreadable or absent: reduced (and reported) every time
        digest.update(f"{exc.__class__.__name__}:{hash(object())}".encode())
    return digest.hexdigest()


def cached_summaries(paths: list[Path], client_metrics: list[str], progress: bool, cache: Path) -> RunSummaries:
    """The summaries of every run of `paths`, reading only those the cache lacks, and the cache
    brought up to date."""
    if not paths:
        return reduce_runs(paths, client_metrics, progress)
    salt = cache_salt(client_metrics)
    keys = [run_key(p, salt) for p in paths]
    folders = [str(p.parent) for p in paths]
    segments = read_segments(cache)
    stored = {(entry["folder"], entry["key"]): (name, index) for name, entries in segments.items() for index, entry in enumerate(entries)}
    fresh = [i for i, pair in enumerate(zip(folders, keys)) if pair not in stored]
    if fresh:
        new = reduce_runs([paths[i] for i in fresh], client_metrics, progress)
        name = write_segment(cache, new, [keys[i] for i in fresh])
        segments[name] = entries_of(new, [keys[i] for i in fresh])
        stored.update({(folders[i], keys[i]): (name, j) for j, i in enumerate(fresh)})
    log.info("run summaries: %d read, %d from %s", len(fresh), len(paths) - len(fresh), cache)
    where = [stored[pair] for pair in zip(folders, keys)]
    summaries = new if len(fresh) == len(paths) else gather(cache, segments, where)  # all just read: already in order
    tidy_up(cache, segments, set(where), summaries, keys)
    return summaries


def entries_of(summaries: RunSummaries, keys: list[str]) -> list[dict]:
    rows = [None if row is None else {**row, **{k: sorted(row[k]) for k in SETS}} for row in summaries.rows]
    return [{"folder": f, "key": k, "row": r, "problems": p} for f, k, r, p in zip(summaries.folders, keys, rows, summaries.problems)]


def write_segment(cache: Path, summaries: RunSummaries, keys: list[str]) -> str:
    """Store the summaries as one segment (its tables first, its runs.json last); returns its name."""
    import pyarrow as pa

    name = hashlib.sha256("\n".join(keys).encode()).hexdigest()[:16]
    for kind in TABLES:
        table = getattr(summaries, kind).unify_dictionaries().combine_chunks()  # an IPC file holds one dictionary per column
        with (atomic_path(cache / f"{name}.{kind}{ARROW}") as tmp, pa.OSFile(str(tmp), "wb") as sink,
              pa.ipc.new_file(sink, table.schema, options=pa.ipc.IpcWriteOptions(compression="lz4")) as writer):
            writer.write_table(table)
    write_json(cache / f"{name}{RUNS}", {"version": VERSION, "runs": entries_of(summaries, keys)}, compact=True)
    return name


def read_segments(cache: Path) -> dict[str, list[dict]]:
    """Segment name -> its runs' entries, of every complete segment of the current format."""
    segments = {}
    for path in sorted(cache.glob(f"*{RUNS}")) if cache.is_dir() else []:
        try:
            stored = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):
            continue
        name = path.name.removesuffix(RUNS)
        if stored.get("version") == VERSION and all((cache / f"{name}.{t}{ARROW}").is_file() for t in TABLES):
            segments[name] = stored["runs"]
    return segments


def gather(cache: Path, segments: dict[str, list[dict]], where: list[tuple[str, int]]) -> RunSummaries:
    """The summaries of the runs at `where` (segment, index), in that order, `run` renumbered;
    each run's rows in the order its file holds them, segment after segment."""
    entries = [segments[name][index] for name, index in where]
    rows = [None if e["row"] is None else {**e["row"], **{k: frozenset(e["row"][k]) for k in SETS}} for e in entries]
    position = {name: np.full(len(segments[name]), -1, np.int32) for name, _ in where}  # index in the segment -> run position
    for run, (name, index) in enumerate(where):
        position[name][index] = run
    tables = {kind: joined([(read_arrow(cache / f"{name}.{kind}{ARROW}"), runs) for name, runs in position.items()]) for kind in TABLES}
    return RunSummaries([e["folder"] for e in entries], rows, [e["problems"] for e in entries], tables["metrics"], tables["clients"])


def read_arrow(path: Path):
    """A segment's table, read whole: LZ4 makes the file a third of its size, and reading it in
    one pass is 25x faster than faulting a memory map of the uncompressed file in, page by page."""
    import pyarrow as pa

    with pa.OSFile(str(path)) as source:
        return pa.ipc.open_file(source).read_all()


def joined(parts: list[tuple[object, np.ndarray]]):
    """One table of the segments' rows of current runs, `run` = the run's position, segment after
    segment (a run's rows keep their order; no statistic depends on the order of runs' rows, and
    sorting 28.7 million rows by run took seconds: tests/test_stats_refresh.py checks a refresh
    whose new runs interleave with the stored ones equals a full rebuild). Gathered with numpy:
    Arrow's `take` of dictionary columns was most of a refresh's time."""
    import pyarrow as pa

    schema = parts[0][0].schema
    texts = [f.name for f in schema if pa.types.is_dictionary(f.type)]
    words = {c: list(dict.fromkeys(w for table, _ in parts for w in whole(table[c]).dictionary.to_pylist())) for c in texts}
    columns = {f.name: [] for f in schema}
    for table, runs in parts:
        run = runs[table["run"].to_numpy()]
        kept = slice(None) if (run >= 0).all() else run >= 0
        columns["run"].append(run[kept])
        for column in schema.names[1:]:
            values = whole(table[column])
            if column in texts:
                lookup = pd.Index(words[column]).get_indexer(values.dictionary.to_pylist()).astype(np.int32)
                columns[column].append(lookup[values.indices.to_numpy()][kept])
            else:
                columns[column].append(values.to_numpy(zero_copy_only=False)[kept])
    arrays = []
    for field in schema:
        values = np.concatenate(columns[field.name])
        arrays.append(pa.DictionaryArray.from_arrays(values, pa.array(words[field.name], field.type.value_type)) if field.name in texts
                      else pa.array(values, field.type))
    return pa.Table.from_arrays(arrays, schema=schema)


def whole(column):
    """A column as one array (combining a dictionary column's chunks unifies their dictionaries:
    seconds for millions of rows, so a single chunk is taken as it is)."""
    return column.chunk(0) if column.num_chunks == 1 else column.combine_chunks()


def tidy_up(cache: Path, segments: dict[str, list[dict]], live: set[tuple[str, int]], summaries: RunSummaries, keys: list[str]) -> None:
    """Delete segments none of whose runs are current; merge all into one when there are more
    than MAX_SEGMENTS or most stored runs are stale."""
    used = {name for name, _ in live}
    stored = sum(len(entries) for entries in segments.values())
    if len(used) > MAX_SEGMENTS or (len(used) > 1 and stored > 2 * len(live)):
        used = {write_segment(cache, summaries, keys)}
    for name in set(segments) - used:
        for suffix in (RUNS, *(f".{t}{ARROW}" for t in TABLES)):  # runs.json first: the segment is then incomplete
            (cache / f"{name}{suffix}").unlink(missing_ok=True)
