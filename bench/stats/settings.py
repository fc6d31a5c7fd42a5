"""Statistics settings: `bench/schemas/stats.schema.yaml` defaults + a YAML file + overrides.

The file is either the settings mapping itself or a workflow config that embeds it under
`stats:`, so the workflow passes its own config file unchanged. Dataset targets are merged with
the defaults (a file adding a target for one dataset keeps the paper's HAM10000/ISIC2019 ones).
"""

from __future__ import annotations

import copy
import logging
from functools import cache
from importlib import resources
from pathlib import Path

import yaml

from bench.config import apply_override, fill_defaults, read_yaml, validate
from bench.errors import UserError

log = logging.getLogger(__name__)


@cache
def stats_schema() -> dict:
    return yaml.safe_load(resources.files("bench.schemas").joinpath("stats.schema.yaml").read_text())


def resolve_stats(mapping: dict) -> dict:
    """Fill defaults, merge the targets with the default ones, validate; returns a new dict."""
    schema = stats_schema()
    settings = fill_defaults(schema, copy.deepcopy(mapping))
    targets = {**schema["properties"]["targets"]["default"], **(mapping.get("targets") or {})}
    settings["targets"] = {name: {"metric": "accuracy", **goal} if isinstance(goal, dict) else goal for name, goal in targets.items()}
    validate(schema, settings, prefix="stats")
    return settings


def settings_section(data: dict, path: str | Path) -> dict:
    """The `stats:` section of a config file, or the file itself when it is a bare settings
    mapping (it shares a key with the schema); a config with neither gives the defaults."""
    if "stats" in data:
        if not isinstance(data["stats"] or {}, dict):
            raise UserError(f"{path}: 'stats' must be a mapping of statistics settings (see bench/schemas/stats.schema.yaml)")
        return copy.deepcopy(data["stats"] or {})
    if data.keys() & stats_schema()["properties"].keys():
        return copy.deepcopy(data)
    log.info("%s has no `stats:` section; using the default statistics settings", path)
    return {}


def load_stats_settings(path: str | Path | None = None, overrides: list[str] | tuple = ()) -> dict:
    """Settings from a YAML file (the mapping, or a config holding it under `stats:`) plus
    `key=value` overrides (dotted keys, values parsed as YAML)."""
    mapping: dict = {}
    if path is not None:
        mapping = settings_section(read_yaml(path), path)
    for assignment in overrides:
        apply_override(mapping, assignment)
    return resolve_stats(mapping)
