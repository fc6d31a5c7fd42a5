"""Collect run directories into tidy tables, whatever methods produced them.

Every run is kept whatever its status (completed, diverged, failed are columns, not filters);
folders without a readable run.json (running, killed, half-written, foreign) are reported and
skipped. A run belongs to the studies an optional manifest (CSV `study,run_id`) names, else to
the one study `all`; runs a manifest names but the results lack are reported as missing.

A *setting* is a study plus the config fields that vary between runs and are not the method or
the seed (dataset, beta, clients, local epochs, ...); a *treatment* is a method with its
hyper-parameters, labelled by name plus the hyper-parameters that vary or differ from their
defaults (`fedlsc (per=0.01, tau=0.5)`), shown under its paper name where one is configured.
"""

from __future__ import annotations

import json
import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm import tqdm

from bench.config import NON_SEMANTIC, NON_SEMANTIC_DATA_KEYS, with_later_keys
from bench.data.partition import scheme_reads
from bench.errors import UserError

log = logging.getLogger(__name__)

RUN_FIELDS = {
    "run_id": "run_id",
    "status": "status",
    "error": "error",
    "seed": "seed",
    "headline_scope": "headline_scope",
    "rounds_completed": "rounds_completed",
    "diverged_round": "diverged_round",
    "model.parameters": "model_parameters",
    "communication.full_state_mb_per_round": "full_state_mb_per_round",
    "timing.seconds_per_round": "seconds_per_round",
    "environment.git_revision": "git_revision",
    "environment.device": "device",
    "data.train_pool": "train_pool",
    "data.global_test": "global_test",
}
REQUIRED_KEYS = ("run_id", "status", "seed", "headline_scope", "config")
# Config fields that never define a setting: the treatment, the replicate, and what does not
# change results (the fields the run id ignores: how a run ran, where the data lives).
NOT_SETTING = ("seed", "method.", *(f"{section}." for section in NON_SEMANTIC), *(f"data.{key}" for key in NON_SEMANTIC_DATA_KEYS))
BY_METHOD = "by method"
NOT_CONFIG = (*(f"{section}." for section in NON_SEMANTIC), "train.recipe.", "train.tuned.")  # how it ran; the records of treatment keys
SETTING_ORDER = ("data.name", "partition.beta", "partition.clients", "train.local_epochs")
ABSENT_KEYS = "absent_config_keys"
SCHEME = "partition.scheme"  # which partition fields a run reads (bench.data.partition.SCHEME_KEYS)
MEASURED = ["round", "scope", "client", "metric", "value"]  # the metrics files' columns the statistics read
CLIENT_SCOPES = ("local", "local_val")  # per-client rows read with the runs: fairness, best_val selection
DEFAULT_STUDY = "all"
PROBLEM_KINDS = ("record", "scan", "missing", "mismatch")  # a run's problems, reported in this order


def run_file_schema(kind: str):
    """The engine's Parquet schema of metrics.parquet or diagnostics.parquet, given explicitly
    because a run that ends before its first evaluation writes untyped (null) empty columns.
    Text columns are read as dictionaries: a few distinct names repeated thousands of times."""
    import pyarrow as pa

    text, integer = pa.dictionary(pa.int32(), pa.large_string()), pa.int64()
    columns = {
        "metrics": [("round", integer), ("scope", text), ("client", integer), ("metric", text), ("value", pa.float64())],
        "diagnostics": [("round", integer), ("name", text), ("layer", text), ("client", integer), ("value", pa.float64())],
    }
    return pa.schema(columns[kind])


@dataclass
class Results:
    """Runs (one row per study membership) and their evaluation rows (global model or mean
    over clients); of the per-client rows those the statistics need (`clients`), the others stay
    in each run's metrics.parquet."""

    runs: pd.DataFrame
    metrics: pd.DataFrame
    setting_columns: list[str]
    problems: list[str] = field(default_factory=list)
    missing: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=["study", "run_id"]))
    clients: pd.DataFrame | None = None  # run_id, round, scope, client, metric, value: CLIENT_SCOPES x client_metrics
    client_metrics: tuple[str, ...] = ()

    @property
    def methods(self) -> list[str]:
        """Display names of every treatment, in table order (paper order, then by label)."""
        ordered = self.runs.drop_duplicates("method").sort_values(["method_order", "method"])
        return ordered["method"].tolist()


# ---- reading --------------------------------------------------------------------------------
def flatten(mapping: dict, prefix: str = "") -> dict:
    """Dotted keys for nested dicts; lists become their JSON text so they can be grouped on."""
    out = {}
    for key, value in mapping.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flatten(value, f"{name}."))
        else:
            out[name] = json.dumps(value) if isinstance(value, list) else value
    return out


def run_files(source: Path | list[Path]) -> tuple[list[Path], list[str]]:
    """The run.json files of a results folder (or the given list) and what was skipped."""
    if isinstance(source, list):
        return sorted(Path(p) for p in source), []
    if not source.is_dir():
        raise UserError(f"results folder {source} not found; pass --runs DIR holding run directories (default results/runs)")
    paths, problems = [], []
    for folder in sorted(p for p in source.iterdir() if p.is_dir()):
        if (folder / "run.json").is_file():
            paths.append(folder / "run.json")
        else:
            problems.append(f"{folder}: no run.json (still running, killed, or not a run); skipped")
    return paths, problems


def read_record(path: Path) -> tuple[dict | None, str | None]:
    """(record, None) or (None, why it was skipped)."""
    try:
        record = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        return None, f"{path}: unreadable ({exc.__class__.__name__}: half-written or not a run record); skipped"
    missing = [k for k in REQUIRED_KEYS if not isinstance(record, dict) or k not in record]
    if not missing:
        config = record["config"] if isinstance(record["config"], dict) else {}
        missing = [f"config.{k}.name" for k in ("data", "method") if not isinstance(config.get(k), dict) or "name" not in config[k]]
    if missing:
        return None, f"{path}: not a fedrank run record (no {', '.join(missing)}); skipped"
    return record, None


def field_value(record: dict, key: str):
    """The value at a dotted key of a record as `flatten` gives it (a list as its JSON text; a
    mapping or an absent key: None), without flattening the whole record (its per-client lists
    were most of the time of reading 10,000 runs)."""
    node = record
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return None if isinstance(node, dict) else json.dumps(node) if isinstance(node, list) else node


def run_row(path: Path, record: dict) -> dict:
    """One runs-table row: run fields, the flattened config, what figures need from the record."""
    row = {new: field_value(record, old) for old, new in RUN_FIELDS.items()}
    config = {k: v for k, v in flatten(with_later_keys(record["config"])).items() if not k.startswith(NOT_CONFIG)}
    row.update(config, treatment_keys=treatment_keys(record["config"]))
    data = record.get("data", {})
    row.update(folder=str(path.parent), config_keys=frozenset(config), method_config=json.dumps(untuned_method(record["config"]), sort_keys=True),
               classes=data.get("classes"), class_counts=[c.get("class_counts") for c in data.get("clients", [])],
               metrics_sha256=record.get("metrics_sha256"))  # read by `metrics_problems` and the tidy table's keys
    return row


def treatment_keys(config: dict) -> frozenset[str]:
    """Dotted keys a method's recipe or tuning chose for this run (train.recipe, train.tuned)."""
    train = config.get("train", {})
    return frozenset(train.get("recipe", {})) | frozenset(train.get("tuned", {}))


def by_method(runs: pd.DataFrame) -> pd.DataFrame:
    """In a study where recipes or tuning chose a setting for some runs, that setting differs
    between methods by design: it reads BY_METHOD in all the study's runs, part of the treatment
    and never of the setting (one setting, not one per learning rate or optimizer)."""
    runs = runs.copy()
    for _, rows in runs.groupby("study", sort=False):
        for key in frozenset().union(*rows["treatment_keys"]) & set(runs.columns):
            runs[key] = runs[key].map(lambda v: v if v is None or isinstance(v, str) else format_value(v))  # one type: text
            runs.loc[rows.index, key] = BY_METHOD
    return runs


def untuned_method(config: dict) -> dict:
    """The method section with tuned hyper-parameters at their defaults: a tuned method is one
    treatment across settings ('fedprox'), whatever mu each setting selected."""
    method = dict(config["method"])
    tuned = [key.removeprefix("method.") for key in config.get("train", {}).get("tuned", {}) if key.startswith("method.")]
    if not tuned:
        return method
    from bench.methods import registry  # imports torch: only where a run was tuned

    fields = registry()[method["name"]].hparams()
    return {**method, **{hp: json.loads(json.dumps(fields[hp].default)) for hp in tuned}}


def read_rows(paths: list[Path], progress: bool) -> list[tuple[dict | None, str | None]]:
    """(runs-table row, None) or (None, why skipped) per run.json, in order."""
    out = []
    for path in tqdm(paths, desc="reading runs", unit="run", disable=not progress or None, leave=False):
        record, problem = read_record(path)
        out.append((None, problem) if problem else (run_row(path, record), None))
    return out


def scan_files(files: list[str], kind: str, columns: list[str], condition, select=None) -> tuple[list[tuple[str, object]], dict[str, str]]:
    """(path, record batch) of the rows of every file that match `condition` (and are kept by
    `select`, batch -> its rows to keep), in one multi-threaded scan; a file Arrow cannot read
    (corrupt, foreign) is reported (path -> line) and skipped."""
    import pyarrow as pa
    import pyarrow.dataset as ds

    schema = run_file_schema(kind)
    text = [f.name for f in schema if pa.types.is_dictionary(f.type)]
    file_format = ds.ParquetFileFormat(read_options=ds.ParquetReadOptions(dictionary_columns=text))

    def scan(paths: list[str]) -> list[tuple[str, object]]:
        dataset = ds.dataset(paths, format=file_format, schema=schema)
        batches = ((t.fragment.path, t.record_batch) for t in dataset.scanner(columns=columns, filter=condition).scan_batches())
        chosen = ((path, batch if select is None else select(batch)) for path, batch in batches)
        return [(path, batch) for path, batch in chosen if batch.num_rows]

    present = [f for f in files if Path(f).is_file()]
    try:
        return scan(present), {}
    except (pa.ArrowException, OSError):  # find the culprits one by one
        found, problems = [], {}
        for path in present:
            try:
                found += scan([path])
            except (pa.ArrowException, OSError) as exc:
                problems[path] = f"{path}: unreadable ({exc.__class__.__name__}: corrupt or not a fedrank file); its run has no {kind}"
        return found, problems


def read_measurements(folders: list[str], client_metrics: list[str]):
    """(evaluation rows, per-client rows, unreadable file -> line) of the runs' metrics files,
    in one scan, as Arrow tables whose `run` is the index of the run's folder in `folders`.
    Evaluation rows: client mean or global model, plus communication (client is null). Per-client
    rows: CLIENT_SCOPES x `client_metrics`, what fairness and best_val selection read. Rows are
    chosen per batch on the dictionaries' codes: a scanner filter on the text columns took three
    times as long as the scan."""
    import pyarrow as pa
    import pyarrow.compute as pc

    position = {str(Path(f) / "metrics.parquet"): i for i, f in enumerate(folders)}
    found, problems = scan_files(list(position), "metrics", MEASURED, None, lambda batch: batch.filter(pa.array(wanted_rows(batch, client_metrics))))
    schema = pa.schema([pa.field("run", pa.int32()), *(run_file_schema("metrics").field(c) for c in MEASURED)])
    batches = [pa.record_batch([pa.array(np.full(b.num_rows, position[path], np.int32)), *b.columns], schema=schema) for path, b in found]
    table = pa.Table.from_batches(batches, schema=schema)
    is_client = pc.is_valid(table["client"])
    return table.filter(pc.invert(is_client)).drop(["client"]), table.filter(is_client), problems


def wanted_rows(batch, client_metrics: list[str]) -> np.ndarray:
    """Rows of a metrics batch (MEASURED columns) that collection keeps: client null, or a
    CLIENT_SCOPES row of one of `client_metrics`."""
    def among(column: str, values) -> np.ndarray:
        text = batch.column(column)
        return np.isin(text.dictionary.to_numpy(zero_copy_only=False), list(values))[text.indices.to_numpy()]

    return batch.column("client").is_null().to_numpy(zero_copy_only=False) | (among("scope", CLIENT_SCOPES) & among("metric", client_metrics))


def metrics_problems(row: dict) -> dict[str, str]:
    """Why a run's metrics are absent ("missing") or not scored ("mismatch": its metrics.parquet is
    not its run.json's: another run's rows, missing rounds, another file than recorded)."""
    from bench.engine.verify import metrics_mismatch

    path = Path(row["folder"]) / "metrics.parquet"
    if not path.is_file():
        return {"missing": f"{path}: missing; its run has no metrics"}
    problem = metrics_mismatch(row["folder"], row["run_id"], row["status"], row.get("train.rounds"), row.get("eval.every"), row["metrics_sha256"])
    return {"mismatch": f"run {row['run_id']} ({row['folder']}): {problem}; its metrics are not scored: rerun it (the workflow: delete its run.json)"} if problem else {}


@dataclass
class RunSummaries:
    """What the statistics read of each run, reduced (bench.stats.run_cache stores it): per run
    in folder order its runs-table row or why it was skipped, why its metrics are unreadable,
    missing or untrusted; its evaluation rows and per-client rows (`run` = its position)."""

    folders: list[str]
    rows: list[dict | None]
    problems: list[dict[str, str]]  # per run: {kind: line}, kinds in PROBLEM_KINDS
    metrics: object  # pyarrow.Table: run, round, scope, metric, value
    clients: object  # pyarrow.Table: run, round, scope, client, metric, value


def reduce_runs(paths: list[Path], client_metrics: list[str], progress: bool) -> RunSummaries:
    """Read and reduce every run; the metrics files are scanned in a background thread (Arrow
    releases the GIL) while the records are parsed."""
    folders = [str(p.parent) for p in paths]
    with ThreadPoolExecutor(1) as pool:
        scan = pool.submit(read_measurements, folders, client_metrics)
        read = read_rows(paths, progress)
        metrics, clients, unreadable = scan.result()
    rows, problems = [row for row, _ in read], []
    for folder, (row, record_problem) in zip(folders, read):
        lines = {"record": record_problem, "scan": unreadable.get(str(Path(folder) / "metrics.parquet")), **(metrics_problems(row) if row else {})}
        problems.append({kind: line for kind, line in lines.items() if line})
    return RunSummaries(folders, rows, problems, metrics, clients)


def unpack(summaries: RunSummaries) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame, list[str]]:
    """(runs table, evaluation rows, per-client rows, problems) of the reduced runs: a run id read
    from two folders counts once (the first); untrusted metrics are not scored."""
    import pyarrow as pa
    import pyarrow.compute as pc

    rows, seen, untrusted, lines = [], set(), [], {kind: [] for kind in PROBLEM_KINDS}
    for position, (folder, row, problems) in enumerate(zip(summaries.folders, summaries.rows, summaries.problems)):
        lines["scan"] += [problems["scan"]] if "scan" in problems else []
        if row is None:
            lines["record"].append(problems["record"])
        elif row["run_id"] in seen:
            lines["record"].append(f"{Path(folder) / 'run.json'}: run {row['run_id']} already read from another folder; skipped")
        else:
            seen.add(row["run_id"])
            rows.append(row)
            for kind in ("missing", "mismatch"):
                lines[kind] += [problems[kind]] if kind in problems else []
            untrusted += [position] if "mismatch" in problems else []
    metrics = summaries.metrics.filter(pc.invert(pc.is_in(summaries.metrics["run"], pa.array(untrusted, pa.int32()))))
    runs = pd.DataFrame(rows)
    return (runs, measurement_frame(metrics, ["round", "scope", "metric", "value"]),
            measurement_frame(summaries.clients, MEASURED), [line for kind in PROBLEM_KINDS for line in lines[kind]])


def measurement_frame(table, columns: list[str]) -> pd.DataFrame:
    """An Arrow table of measurements as a frame: run position, integers, text as categories."""
    table = table.unify_dictionaries()
    frame = {"run": table["run"].to_numpy()}
    for column in columns:
        values = table[column]
        frame[column] = (values.to_numpy().astype(np.int32) if column == "round" else values.to_numpy() if column == "value"
                         else values.to_pandas().astype("category") if column in ("scope", "metric") else values.to_numpy())
    return pd.DataFrame(frame)


# ---- studies --------------------------------------------------------------------------------
def read_studies(path: Path) -> pd.DataFrame:
    """The study manifest: one row per (study, run_id) membership."""
    if not path.is_file():
        raise UserError(f"study manifest {path} not found; pass a CSV with columns study,run_id (or leave out --studies)")
    try:
        manifest = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise UserError(f"study manifest {path} is not a readable CSV ({exc.__class__.__name__}); write it with a header line study,run_id") from exc
    lacking = {"study", "run_id"} - set(manifest.columns)
    if lacking:
        raise UserError(f"study manifest {path} lacks column(s) {', '.join(sorted(lacking))}; its header must be study,run_id")
    manifest = manifest[["study", "run_id"]].apply(lambda s: s.str.strip())
    if (manifest == "").any(axis=None):
        raise UserError(f"study manifest {path} has an empty study or run_id; give both on every line")
    return manifest.drop_duplicates(ignore_index=True)


def assign_studies(runs: pd.DataFrame, manifest: pd.DataFrame | None) -> tuple[pd.DataFrame, pd.DataFrame, list[str]]:
    """(runs x their studies, manifest rows whose run is absent, notes)."""
    if manifest is None:
        return runs.assign(study=DEFAULT_STUDY), pd.DataFrame(columns=["study", "run_id"]), []
    joined = manifest.merge(runs, on="run_id", how="inner")
    missing = manifest[~manifest["run_id"].isin(runs["run_id"])].reset_index(drop=True)
    notes = [f"study {s}: run {r} is in the study manifest but not in the results (not run yet, or deleted)" for s, r in missing.itertuples(index=False)]
    outside = int((~runs["run_id"].isin(manifest["run_id"])).sum())
    if outside:
        notes.append(f"{outside} run(s) in the results belong to no study of the manifest; left out")
    return joined, missing, notes


# ---- treatments -----------------------------------------------------------------------------
def method_defaults() -> dict[str, dict]:
    """Registered methods' hyper-parameter defaults by method name, as a run's config holds them
    (tuples as lists), so a paper name or label that leaves one at its default matches. Read
    from the stored `fedrank methods --json` (bench.listings): no torch import while no source changed."""
    from bench.listings import method_schemas

    return {name: {"name": name, **{k: p["default"] for k, p in schema["properties"].items() if k != "name"}}
            for name, schema in method_schemas().items()}


def format_value(value) -> str:
    """How a setting or hyper-parameter value reads: 0.01, fedavg, [resnet10(stem_stride=2), ...]
    (a list or mapping in full, so two different values never read the same)."""
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(map(format_value, value)) + "]"
    if isinstance(value, dict):
        rest = ", ".join(f"{k}={format_value(v)}" for k, v in value.items() if k != "name")
        return f"{value['name']}({rest})" if "name" in value else "{" + rest + "}"
    return str(value)


def treatment_labels(configs: list[dict], defaults: dict[str, dict]) -> list[str]:
    """Method name plus the hyper-parameters that vary across these configs or differ from
    the method's defaults: 'fedlsc (per=0.01, tau=0.5)'."""
    values: dict[tuple[str, str], set] = {}
    for cfg in configs:
        for key, value in cfg.items():
            values.setdefault((cfg["name"], key), set()).add(json.dumps(value))
    labels = []
    for cfg in configs:
        base = defaults.get(cfg["name"], {})
        shown = [f"{k}={format_value(v)}" for k, v in sorted(cfg.items())
                 if k != "name" and (len(values[(cfg["name"], k)]) > 1 or (k in base and base[k] != v))]
        labels.append(cfg["name"] + (f" ({', '.join(shown)})" if shown else ""))
    return labels


def paper_entry(cfg: dict, paper_names: list[dict], defaults: dict[str, dict]) -> int | None:
    """Index of the first paper-name entry that is exactly this method configuration."""
    for index, entry in enumerate(paper_names):
        wanted = entry["method"]
        if wanted["name"] != cfg["name"]:
            continue
        if cfg["name"] in defaults:
            if {**defaults[cfg["name"]], **wanted} == cfg:
                return index
        elif wanted.items() <= cfg.items():
            return index
    return None


def name_treatments(runs: pd.DataFrame, paper_names: list[dict]) -> pd.DataFrame:
    """Add `label` (from the config), `method` (paper name or label) and `method_order`. Two
    paper-name entries may give one name to two configurations (FedLSC at each dataset's tuned
    tau): one method, ordered by its first entry, as long as no setting runs both."""
    unique = sorted(runs["method_config"].unique())
    configs = [json.loads(text) for text in unique]
    defaults = method_defaults()
    labels = treatment_labels(configs, defaults)
    entries = [paper_entry(cfg, paper_names, defaults) for cfg in configs]
    display = [label if entry is None else paper_names[entry]["name"] for label, entry in zip(labels, entries)]
    first = {}
    for index, entry in enumerate(paper_names):
        first.setdefault(entry["name"], index)
    order = [len(paper_names) if entry is None else first[paper_names[entry]["name"]] for entry in entries]
    table = pd.DataFrame({"method_config": unique, "label": labels, "method": display, "method_order": order})
    return runs.merge(table, on="method_config", how="left")


# ---- settings -------------------------------------------------------------------------------
def setting_columns(runs: pd.DataFrame) -> list[str]:
    """Config fields that take different values in runs that have them, other than the method,
    seed and runtime; the dataset always (every table says which dataset it is about); and
    ABSENT_KEYS when runs of an older (or newer) config schema lack some fields."""
    candidates = [c for c in runs.columns if "." in c and not c.startswith(NOT_SETTING)]
    has = {c: runs["config_keys"].map(lambda keys, c=c: c in keys).to_numpy(bool) & read_by_scheme(runs, c) for c in candidates}
    varying = [c for c in candidates if c == "data.name" or runs.loc[has[c], c].astype(str).nunique(dropna=False) > 1]
    first = [c for c in SETTING_ORDER if c in varying]
    return first + sorted(set(varying) - set(first)) + ([ABSENT_KEYS] if runs[ABSENT_KEYS].nunique() > 1 else [])


def read_by_scheme(table: pd.DataFrame, column: str) -> np.ndarray:
    """Rows whose partition scheme depends on this config field: a field the scheme ignores
    (beta of a pathological partition) is no part of those runs' setting."""
    if not column.startswith("partition.") or SCHEME not in table:
        return np.ones(len(table), bool)
    key = column.removeprefix("partition.")
    return table[SCHEME].map(lambda scheme: scheme_reads(scheme, key)).to_numpy(bool)


def mark_absent_keys(runs: pd.DataFrame) -> pd.DataFrame:
    """ABSENT_KEYS: the setting-defining config fields other runs have and this one lacks (a
    run made before a field existed is not silently paired with runs made after)."""
    every = frozenset().union(*runs["config_keys"])
    relevant = {k for k in every if not k.startswith(NOT_SETTING)}
    return runs.assign(**{ABSENT_KEYS: [", ".join(sorted(relevant - keys)) for keys in runs["config_keys"]]})


def short_names(columns: list[str]) -> dict[str, str]:
    """Column -> its last dotted part where that is unambiguous, else the full key."""
    tails = [c.rsplit(".", 1)[-1] for c in columns]
    return {c: t if tails.count(t) == 1 else c for c, t in zip(columns, tails)}


def sort_key(value) -> tuple:
    """Numbers before text, numbers by value: settings sort as a reader expects."""
    if isinstance(value, (int, float, np.number)) and not isinstance(value, bool) and not pd.isna(value):
        return (0, float(value), "")
    return (1, 0.0, str(value))


def setting_part(column: str, value, names: dict[str, str]) -> str:
    """How one setting field reads in a setting's name."""
    if column == "data.name":
        return str(value)
    if column == ABSENT_KEYS:
        keys = value.split(", ") if value else []
        return f"config without {', '.join(keys[:2])}{f' (+{len(keys) - 2} more)' if len(keys) > 2 else ''}" if keys else ""
    return f"{names[column]}={'none' if value is None or pd.isna(value) else format_value(value)}"  # a null config value (no held-out centre)


def set_by_dataset(combos: pd.DataFrame, columns: list[str]) -> set[str]:
    """Setting columns that only differ between datasets (ISIC2019's sites file, where HAM10000
    has none): the dataset's name already says them, so setting names leave them out."""
    if "data.name" not in columns or combos["data.name"].nunique() < 2:
        return set()
    text = combos[columns].astype(str)
    return {c for c in columns if c != "data.name" and (text.groupby("data.name")[c].nunique(dropna=False) == 1).all()}


def check_distinct_setting_names(combos: pd.DataFrame, columns: list[str]) -> None:
    """Two settings with one name differ only in a field their partition scheme ignores: the same
    experiment run twice, whose runs would be counted twice in every table and test."""
    distinct = combos.drop_duplicates(columns)
    twice = distinct[distinct.duplicated("setting", keep=False)]
    if not twice.empty:
        differ = [c for c in columns if twice.groupby("setting")[c].nunique(dropna=False).gt(1).any()]
        raise UserError(f"setting '{twice['setting'].iloc[0]}' was run with several values of {', '.join(differ)}, which its partition scheme "
                        "ignores: the same experiment twice; keep one value for that scheme in the study's grid")


def describe_settings(runs: pd.DataFrame, columns: list[str], studies: list[str]) -> pd.DataFrame:
    """Add `setting` (readable, without the study), `block` (the same: a run shared by two
    studies is one block) and `setting_order` (studies in manifest order, then settings by
    value), by which every table is sorted."""
    names = short_names(columns)
    combos = runs[["study", *columns]].astype(object).drop_duplicates()
    combos["_key"] = [(studies.index(row[0]), *(sort_key(v) for v in row[1:])) for row in combos.itertuples(index=False)]
    combos = combos.sort_values("_key").drop(columns="_key")
    hidden = set_by_dataset(combos, columns)
    shown = [c for c in columns if c not in hidden]
    reads = pd.DataFrame({c: read_by_scheme(runs, c) for c in shown}, index=runs.index).loc[combos.index]  # combos keep their runs' index
    combos["setting"] = [", ".join(part for c in shown if reads.at[i, c] and (part := setting_part(c, combos.at[i, c], names)))
                         for i in combos.index]
    check_distinct_setting_names(combos, columns)
    combos["setting_order"] = np.arange(len(combos))
    keyed = runs.astype({c: object for c in columns}).merge(combos, on=["study", *columns], how="left")
    return keyed.assign(block=keyed["setting"])


# ---- everything -----------------------------------------------------------------------------
def client_metrics(settings: dict) -> list[str]:
    """The metrics whose per-client rows (CLIENT_SCOPES) are read with the runs: the fairness
    metric and best_val's selection metric."""
    from bench.stats.scores import base_metric

    base = base_metric(settings["metric"])
    return sorted({settings.get("fairness_metric") or base, settings.get("selection_metric") or base})


def load_results(source: Path | list[Path], settings: dict, studies: Path | None = None, progress: bool = True, cache: Path | None = None) -> Results:
    """Read, label and index a results folder (or a list of run.json files). With `cache` (a
    folder, bench.stats.run_cache) only runs that are new or changed since it was written are read."""
    from bench.stats.run_cache import cached_summaries

    paths, problems = run_files(source)
    wanted = client_metrics(settings)
    reduced = cached_summaries(paths, wanted, progress, cache) if cache else reduce_runs(paths, wanted, progress)
    runs, metrics, clients, found = unpack(reduced)
    problems += found
    for problem in problems:
        log.warning(problem)
    if runs.empty:
        raise UserError(f"no run records in {source}; run `fedrank run` or `snakemake --cores all` first")
    manifest = read_studies(studies) if studies else None
    runs, missing, notes = assign_studies(runs, manifest)
    runs = by_method(runs)
    for note in notes:
        log.warning(note)
    if runs.empty:
        raise UserError(f"no run of the results is in a study of {studies}; check that its run_id column names runs in {source}")
    runs = mark_absent_keys(name_treatments(runs, settings["paper_names"]))
    columns = setting_columns(runs)
    study_order = list(dict.fromkeys((manifest if manifest is not None else runs)["study"]))
    runs = describe_settings(runs, columns, study_order).sort_values(["setting_order", "method_order", "method", "seed"], ignore_index=True)
    check_one_configuration_per_name(runs)
    return Results(runs, label_metrics(metrics, reduced.folders, runs), columns, problems + notes, missing,
                   label_metrics(clients, reduced.folders, runs), tuple(wanted))


def check_one_configuration_per_name(runs: pd.DataFrame) -> None:
    """A method name stands for one configuration within a setting, or its runs would be
    averaged together in every table and test."""
    counts = runs.groupby(["study", "setting", "method"], observed=True)["method_config"].nunique()
    if (counts > 1).any():
        study, setting, method = counts[counts > 1].index[0]
        raise UserError(f"stats.paper_names names two method configurations '{method}' in study {study}, setting {setting}: "
                        "give each its own name (entries may share a name only across settings, e.g. a per-dataset tuned value)")


def label_metrics(metrics: pd.DataFrame, folders: list[str], runs: pd.DataFrame) -> pd.DataFrame:
    """Replace the folder index of each metrics row by its run id (categorical); rows of folders
    that are no run of the analysis (unreadable, duplicate, outside the studies) are dropped."""
    kept = runs.drop_duplicates("run_id")
    position = pd.Index(folders).get_indexer(kept["folder"])
    code = np.full(len(folders), -1)
    code[position] = np.arange(len(kept))
    run_code = code[metrics.pop("run").to_numpy()]
    metrics.insert(0, "run_id", pd.Categorical.from_codes(run_code, categories=pd.Index(kept["run_id"])))
    return metrics[run_code >= 0].reset_index(drop=True) if (run_code < 0).any() else metrics


def as_text(values: pd.Series) -> pd.Series:
    """`values.astype(str)`; for a categorical column (the run ids of the metrics) converted per
    category, not per row: 16x faster for a million rows."""
    codes = values.cat.codes.to_numpy() if isinstance(values.dtype, pd.CategoricalDtype) else None
    if codes is None or (codes < 0).any():
        return values.astype(str)
    return pd.Series(values.cat.categories.astype(str).take(codes), index=values.index, name=values.name)


def batches_frame(found: list[tuple[str, object]], run_of: dict[str, str]) -> pd.DataFrame:
    """The scanned (file, record batch) pairs as one frame with each row's run id: one Arrow
    table converted once (a conversion per file was most of the client scores' time)."""
    import pyarrow as pa

    table = pa.Table.from_batches([batch for _, batch in found])
    run_ids = np.repeat(np.array([run_of[path] for path, _ in found], dtype=object), [batch.num_rows for _, batch in found])
    return table.to_pandas().assign(run_id=run_ids)


CLIENT_ROWS = ["run_id", "round", "client", "metric", "value"]


def read_client_metrics(results: Results, scope: str, metrics: list[str], run_ids: list[str] | None = None) -> pd.DataFrame:
    """run_id, round, client, metric, value: the per-client rows of `scope` and `metrics` of the
    given runs (default all), from those read with the runs, or else from the runs' files."""
    import pyarrow.dataset as ds

    folders = results.runs.drop_duplicates("run_id").set_index("run_id")["folder"]
    chosen = folders if run_ids is None else folders.reindex(run_ids).dropna()
    if results.clients is not None and scope in CLIENT_SCOPES and set(metrics) <= set(results.client_metrics):
        return held_client_rows(results.clients, scope, metrics, chosen.index)
    files = {str(Path(f) / "metrics.parquet"): run for run, f in chosen.items()}
    condition = (ds.field("scope") == scope) & ds.field("metric").isin(list(metrics)) & ~ds.field("client").is_null()
    found, problems = scan_files(list(files), "metrics", CLIENT_ROWS[1:], condition) if files and metrics else ([], {})
    for problem in problems.values():
        log.warning(problem)
    if not found:
        return no_client_rows()
    out = batches_frame(found, files)
    return out.assign(metric=out["metric"].astype(str))[CLIENT_ROWS]


def no_client_rows() -> pd.DataFrame:
    return pd.DataFrame({"run_id": pd.Series(dtype=str), "round": pd.Series(dtype=np.int64), "client": pd.Series(dtype=np.int64),
                         "metric": pd.Series(dtype=str), "value": pd.Series(dtype=float)})


def held_client_rows(clients: pd.DataFrame, scope: str, metrics: list[str], run_ids: pd.Index) -> pd.DataFrame:
    """`read_client_metrics` from the rows read with the runs: the same rows, in the same order
    (runs in `run_ids` order, each run's rows in its file's order); run ids and metric names
    looked up per category, not converted per row."""
    chosen = np.flatnonzero((clients["scope"] == scope).to_numpy() & clients["metric"].isin(metrics).to_numpy())
    runs, names = clients["run_id"].array, clients["metric"].array
    rank = run_ids.get_indexer(runs.categories)[runs.codes[chosen]]
    order = np.argsort(rank, kind="stable")
    rows = chosen[order[rank[order] >= 0]]
    if not len(rows):
        return no_client_rows()
    return pd.DataFrame({"run_id": runs.categories.to_numpy(object)[runs.codes[rows]], "round": clients["round"].to_numpy(np.int64)[rows],
                         "client": clients["client"].to_numpy(np.int64)[rows], "metric": names.categories.to_numpy(object)[names.codes[rows]],
                         "value": clients["value"].to_numpy()[rows]})


def read_diagnostics(results: Results, names: tuple[str, ...]) -> pd.DataFrame:
    """run_id, round, name, layer, value of the given per-layer diagnostics (client-free rows)
    of every run that recorded them; layers keep the model's order."""
    import pyarrow.dataset as ds

    folders = results.runs.drop_duplicates("run_id").set_index("folder")["run_id"]
    files = {str(Path(f) / "diagnostics.parquet"): run for f, run in folders.items()}
    columns = ["round", "name", "layer", "value"]
    found, problems = scan_files(list(files), "diagnostics", columns, ds.field("name").isin(list(names)) & ds.field("client").is_null())
    for problem in problems.values():
        log.warning(problem)
    if not found:
        return pd.DataFrame(columns=["run_id", *columns])
    out = batches_frame(found, files)
    out["layer"] = pd.Categorical(out["layer"].astype(str), categories=out["layer"].astype(str).drop_duplicates())
    out["name"] = out["name"].astype(str)
    return out
