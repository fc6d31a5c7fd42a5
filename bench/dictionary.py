"""The data dictionary (bench/schemas/data_dictionary.yaml): what every column and field means.

It is written into the files themselves, as Parquet field metadata (`description`, `unit`), and
rendered into the README:

    python -m bench.dictionary README.md     # rewrite the README's data dictionary from the YAML
"""

from __future__ import annotations

import sys
from functools import cache
from pathlib import Path


BEGIN = "<!-- data dictionary: generated from bench/schemas/data_dictionary.yaml by `python -m bench.dictionary README.md` -->"
END = "<!-- end of data dictionary -->"


@cache
def dictionary() -> dict:
    from bench.schemas import read_schema

    return read_schema("data_dictionary.yaml")


def config_meaning(key: str) -> str | None:
    """The run schema's description of a dotted run-config key (None if it has none)."""
    from bench.config import run_schema

    node = run_schema()
    for part in key.split("."):
        node = node.get("properties", {}).get(part)
        if node is None:
            return None
    return node.get("description")


def field_metadata(kind: str, column: str) -> dict[str, str]:
    """Parquet field metadata of `column` in the file kind (e.g. 'metrics.parquet')."""
    entry = dictionary()[kind]["columns"].get(column)
    if entry is not None:
        return {"description": entry["meaning"], "unit": entry["unit"]}
    if "." in column:  # a run-config key (results.parquet)
        meaning = config_meaning(column)
        return {"description": f"run config {column}" + (f": {meaning}" if meaning else ""), "unit": ""}
    if "metric_columns" in dictionary()[kind]:  # a metric (results.parquet)
        return {"description": f"metric {column}: the measurement; for personal and local the mean over clients", "unit": metric_unit(column)}
    return {}


def metric_unit(metric: str) -> str:
    """The unit of a metric of metrics.parquet."""
    if metric == "loss":
        return "nats"
    if metric.startswith("bytes"):
        return "bytes"
    return {"clients": "clients", "client_epsilon": "epsilon", "record_epsilon": "epsilon"}.get(metric, "fraction 0-1")


def described(table, kind: str):
    """The Arrow table with every field's description and unit attached."""
    import pyarrow as pa

    fields = [field.with_metadata(field_metadata(kind, field.name) or None) for field in table.schema]
    return pa.Table.from_arrays(table.columns, schema=pa.schema(fields, metadata=table.schema.metadata))


def write_run_table(path: str | Path, frame, kind: str, run_id: str) -> None:
    """A run's metrics or diagnostics: its run id as the first column, every field described."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from bench.io import atomic_path

    frame = frame.copy()
    frame.insert(0, "run_id", run_id)
    table = described(pa.Table.from_pandas(frame, preserve_index=False), kind)
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp)


def markdown() -> str:
    """The dictionary as Markdown tables, one per file."""
    lines = []
    for kind, spec in dictionary().items():
        entries = spec.get("columns") or spec["fields"]
        lines += [f"**`{kind}`**: {spec['about']}", "", f"| {'column' if 'columns' in spec else 'field'} | meaning | unit |", "|---|---|---|"]
        lines += [f"| `{name}` | {entry['meaning']} | {entry['unit']} |" for name, entry in entries.items()]
        if "metric_columns" in spec:
            lines.append(f"| `<metric>` | {spec['metric_columns']} | |")
        if "config_columns" in spec:
            lines.append(f"| `<section>.<key>` | {spec['config_columns']} | |")
        lines.append("")
    return "\n".join(lines)


def readme_block() -> str:
    return f"{BEGIN}\n\n{markdown()}\n{END}"


def update_readme(path: Path) -> None:
    text = path.read_text()
    start, end = text.index(BEGIN), text.index(END) + len(END)
    path.write_text(text[:start] + readme_block() + text[end:])


if __name__ == "__main__":
    if len(sys.argv) > 1:
        update_readme(Path(sys.argv[1]))
    else:
        print(markdown())
