"""Run configuration: YAML file + `--set` overrides + schema defaults, validated up front.

The schema (`bench/schemas/run.schema.yaml`) declares every key with its default and help;
methods and models validate their own options through their registries. A bad value is a
one-line `UserError` naming the key, before any data is read or any model is built.
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
import os
import re
from contextlib import contextmanager
from contextvars import ContextVar
from functools import cache, lru_cache
from pathlib import Path
from typing import Any, Iterator

import jsonschema
import yaml

from bench.errors import UserError
from bench.schemas import read_schema

# Sections that say *how* to run, not *what*: they do not change results, so not the run id.
NON_SEMANTIC = ("runtime",)
NON_SEMANTIC_DATA_KEYS = ("root", "cache_dir", "on_device")
# Runtime keys that do change what is computed (bf16 rounds every activation, far beyond the
# float noise of thread counts, channels_last or compiled kernels): hashed when set away from
# their default, so the run ids of default runs stay as they were.
SEMANTIC_RUNTIME_KEYS = ("precision",)
# Keys added after runs had been made without them, with a default that changes nothing: hashed only
# when set to something else, so the runs made before they existed keep their ids (and are reused).
HASHED_WHEN_SET = {"partition": ("val_fraction", "holdout"), "eval": ("new_client_steps",), "train": ("recipe", "tuned")}
# Sections added after runs had been made without them: left out of the hash while the whole section is at its default.
SECTIONS_HASHED_WHEN_SET = ("privacy",)


@cache
def run_schema() -> dict:
    return read_schema("run.schema.yaml")


def fill_defaults(schema: dict, value: Any) -> Any:
    """Return `value` with every missing key that has a schema default filled in, recursively."""
    if schema.get("type") != "object" and "properties" not in schema:
        return value
    if not isinstance(value, dict):
        return value
    out = dict(value)
    for key, sub in schema.get("properties", {}).items():
        if key not in out and "default" in sub:
            out[key] = copy.deepcopy(sub["default"])
        if key in out:
            out[key] = fill_defaults(sub, out[key])
    return out


def dotted(prefix: str, path) -> str:
    """A config key path as the user writes it: `method.tau`, `studies.main.grid`."""
    return ".".join([prefix, *map(str, path)] if prefix else map(str, path)) or "<top level>"


def reject_non_finite(value: Any, prefix: str = "", path: tuple = ()) -> None:
    """A NaN or infinity passes every bound (every comparison with NaN is false): refuse it, naming the key."""
    if isinstance(value, float) and not math.isfinite(value):
        raise UserError(f"config key '{dotted(prefix, path)}': {value} is not a finite number; give a finite value")
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    for key, item in items:
        reject_non_finite(item, prefix, (*path, key))


# YAML 1.1 (PyYAML, and Snakemake reading a workflow config) takes 1e10 and 1e-4 for text: a float needs
# a decimal point, and an exponent a sign.
NUMBER_TEXT = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?")


def yaml_number(text: str, integer: bool) -> str:
    """How to write the number `text` so that YAML 1.1 reads a number: 1e3 -> 1000 (an integer
    key), 1e10 -> 10000000000.0, 1e-5 -> 1.0e-05."""
    number = float(text)
    if integer and number.is_integer():
        return str(int(number))
    mantissa, _, exponent = repr(number).partition("e")
    return f"{mantissa if '.' in mantissa else mantissa + '.0'}{'e' + exponent if exponent else ''}"


def type_hint(error: jsonschema.exceptions.ValidationError) -> str:
    """For a number given as text, how to write it; else the key's description."""
    wanted = set(error.validator_value if isinstance(error.validator_value, list) else [error.validator_value]) if error.validator == "type" else set()
    if isinstance(error.instance, str) and NUMBER_TEXT.fullmatch(error.instance.strip()) and {"number", "integer"} & wanted:
        return f"YAML reads '{error.instance}' as text: write {yaml_number(error.instance, 'number' not in wanted)}"
    return error.schema.get("description", "") if isinstance(error.schema, dict) else ""


def validate(schema: dict, cfg: dict, prefix: str = "") -> None:
    """Raise a one-line UserError for the first schema violation or non-finite number, naming the key path."""
    reject_non_finite(cfg, prefix)
    error = schema_error(schema, cfg)
    if error is None:
        return
    key = dotted(prefix, error.absolute_path)
    if error.validator == "additionalProperties":
        allowed = sorted(error.schema.get("properties", {}))
        raise UserError(f"config key '{key}': {error.message}; valid keys: {', '.join(allowed)}")
    hint = type_hint(error)
    raise UserError(f"config key '{key}': {error.message}" + (f" ({hint})" if hint else ""))


def schema_error(schema: dict, cfg: Any) -> jsonschema.exceptions.ValidationError | None:
    """The best-matching violation of `schema` by `cfg`, or None. A run config is checked in
    parts: its top-level keys, then each section against its own schema, a section text found
    valid once being valid again: a workflow resolves thousands of runs that share most sections,
    and checking each whole run was half of its DAG's build. (The run schema relates no two
    sections, so the parts are the whole; with two bad sections the first in the schema's order
    is reported, as the whole check reports it.)"""
    if schema is not run_schema() or not isinstance(cfg, dict):
        return best_error(schema, cfg)
    outline, sections = run_schema_parts()
    error = best_error(outline, cfg)
    for key, (sub, text) in sections.items():
        if error is not None:
            break
        if key in cfg and not known_valid(text, cfg[key]):
            error = best_error(sub, cfg[key])
            if error is not None:
                error.path.appendleft(key)
    return error


@cache
def run_schema_parts() -> tuple[dict, dict[str, tuple[dict, str]]]:
    """The run schema's top level (its sections left open) and each section's schema with its text."""
    schema = run_schema()
    sections = schema["properties"]
    return {**schema, "properties": {key: True for key in sections}}, {key: (sub, json.dumps(sub, sort_keys=True)) for key, sub in sections.items()}


def best_error(schema: dict, value: Any) -> jsonschema.exceptions.ValidationError | None:
    return jsonschema.exceptions.best_match(jsonschema.Draft202012Validator(schema).iter_errors(value))


def known_valid(schema_text: str, value: Any) -> bool:
    """Whether `value` is valid, from the verdicts remembered by JSON text; a value JSON does not
    hold exactly (a tuple, a date YAML read) is left to the caller's full check."""
    try:
        text = json.dumps(value, sort_keys=True)
    except (TypeError, ValueError):
        return False
    return json.loads(text) == value and section_valid(schema_text, text)


@lru_cache(maxsize=8192)
def section_valid(schema_text: str, value_text: str) -> bool:
    return best_error(json.loads(schema_text), json.loads(value_text)) is None


_VAR = re.compile(r"\$\{(\w+)(?::-([^}]*))?\}|\$(\w+)")


def expand_path(text: str) -> str:
    """Expand `~`, `$VAR`, `${VAR}` and `${VAR:-default}` (unset variables without a default stay)."""

    def sub(match: re.Match) -> str:
        name = match.group(1) or match.group(3)
        default = match.group(2)
        if name in os.environ:
            return os.environ[name]
        return default if default is not None else match.group(0)

    return os.path.expanduser(_VAR.sub(sub, text))


def referenced_variables(text: str) -> list[str]:
    """The environment variables `expand_path` would read in `text`, sorted."""
    return sorted({match.group(1) or match.group(3) for match in _VAR.finditer(text)})


def set_key(cfg: dict, path: str, value: Any) -> None:
    """Set the dotted key `path` in place, creating sections on the way.

    A string given for a named section (data, model, method) replaces the whole section with
    `{name: value}`, because its options belong to the name: `method=fedlsc` then `method.tau=0.5`.
    """
    keys = path.strip().split(".")
    if not all(keys):
        raise UserError(f"config key '{path}': empty part in the dotted key")
    node = cfg
    for key in keys[:-1]:
        child = node.setdefault(key, {})
        if not isinstance(child, dict):
            raise UserError(f"config key '{path}': '{key}' is a value, not a section")
        node = child
    last = keys[-1]
    if node is cfg and last in _named_sections() and isinstance(value, str):
        node[last] = {"name": value}
    else:
        node[last] = copy.deepcopy(value)


_MISSING: ContextVar[dict[str, str] | None] = ContextVar("missing_inputs", default=None)


@contextmanager
def missing_inputs_recorded() -> Iterator[dict[str, str]]:
    """Inside, a file or folder a config names that does not exist is recorded (path -> the error
    it would raise) instead of stopping at the first: a plan then lists every missing input at once."""
    missing: dict[str, str] = {}
    token = _MISSING.set(missing)
    try:
        yield missing
    finally:
        _MISSING.reset(token)


def existing_path(value: str, key: str, kind: str, fix: str) -> str:
    """`value` with variables expanded, if that file or folder exists; else a UserError naming `key`
    (or, inside `missing_inputs_recorded`, the path recorded as missing)."""
    path = Path(expand_path(value))
    if not (path.is_dir() if kind == "folder" else path.is_file()):
        message = f"config key '{key}': {kind} {path} does not exist; {fix}"
        if (missing := _MISSING.get()) is None:
            raise UserError(message)
        missing.setdefault(str(path), message)
    return str(path)


class ConfigLoader(yaml.SafeLoader):
    """yaml.safe_load that refuses a key given twice in one mapping (YAML would keep the last, silently)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        seen = set()
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":  # `<<: *defaults`: its keys may be overridden
                continue
            key = self.construct_object(key_node, deep=True)
            if isinstance(key, (str, int, float, bool)) and key in seen:
                raise yaml.constructor.ConstructorError(None, None, f"key '{key}' is given twice in one mapping: keep one", key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep)


def yaml_problem(exc: yaml.YAMLError) -> str:
    """What a YAML error says is wrong, in a few words."""
    return getattr(exc, "problem", None) or exc.__class__.__name__


def apply_override(cfg: dict, assignment: str) -> None:
    """Apply one `--set key.path=value` in place; the value is parsed as YAML."""
    if "=" not in assignment:
        raise UserError(f"--set '{assignment}': expected key=value, e.g. --set method.tau=0.5")
    path, raw = assignment.split("=", 1)
    try:
        value = yaml.load(raw, Loader=ConfigLoader) if raw.strip() else None
    except yaml.YAMLError as exc:
        raise UserError(f"--set '{assignment}': the value is not valid YAML ({yaml_problem(exc)}); write it as YAML, e.g. --set 'model.widths=[8, 16]'") from None
    set_key(cfg, path, value)


@cache
def _named_sections() -> frozenset[str]:
    props = run_schema()["properties"]
    return frozenset(k for k, v in props.items() if "name" in v.get("properties", {}))


def read_yaml(path: str | os.PathLike) -> dict:
    path = Path(path)
    if not path.is_file():
        raise UserError(f"config file {path} not found; pass an existing YAML file (e.g. configs/default.yaml)")
    try:
        data = yaml.load(path.read_bytes(), Loader=ConfigLoader) or {}  # bytes: a binary file is a YAML error too
    except yaml.YAMLError as exc:
        where = getattr(exc, "problem_mark", None)
        line = f" line {where.line + 1}" if where else ""
        raise UserError(f"config file {path}{line} is not valid YAML: fix it ({yaml_problem(exc)})")
    if not isinstance(data, dict):
        raise UserError(f"config file {path} must hold a mapping of keys, not {type(data).__name__}")
    return data


def load_config(path: str | os.PathLike | None = None, overrides: list[str] | tuple = ()) -> dict:
    """Read, override, default-fill and validate a run config; returns the resolved dict."""
    cfg = read_yaml(path) if path else {}
    for assignment in overrides:
        apply_override(cfg, assignment)
    return resolve(cfg)


def parse_config_json(text: str):
    """The value of a `--config-json` option, or a one-line error saying where the JSON breaks."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise UserError(f"--config-json is not valid JSON ({exc.msg} at char {exc.pos}); pass one JSON object")


def resolve_json(text: str, overrides: list[str] | tuple = ()) -> dict:
    """A run config given as a JSON object (the workflow passes resolved configs this way)."""
    cfg = parse_config_json(text)
    if not isinstance(cfg, dict):
        raise UserError("--config-json must be a JSON object of config keys")
    for assignment in overrides:
        apply_override(cfg, assignment)
    return resolve(cfg)


def resolve(cfg: dict) -> dict:
    """Fill defaults and validate: schema keys, then dataset, model and method options."""
    from bench.data import resolve_data_config
    from bench.methods import resolve_method_config
    from bench.methods.requirements import check_requirements
    from bench.models import resolve_model_config

    schema = run_schema()
    cfg = fill_defaults(schema, copy.deepcopy(cfg))
    validate(schema, cfg)
    cfg["data"] = resolve_data_config(cfg["data"])
    cfg["model"] = resolve_model_config(cfg["model"])
    cfg["method"] = resolve_method_config(cfg["method"])
    for record in ("recipe", "tuned"):
        check_record(cfg, record)
    check_requirements(cfg)
    check_client_architectures(cfg)
    if cfg["privacy"] != schema_default("privacy", None):
        from bench.engine.privacy import check_privacy

        check_privacy(cfg)
    return cfg


def check_client_architectures(cfg: dict) -> None:
    """The model sections a method gives its clients (`Method.client_architecture`) resolve, so a
    config that validates is one that builds."""
    from bench.methods import make_method
    from bench.models import resolve_model_config

    method = make_method(cfg["method"])
    clients = max(cfg["partition"]["clients"], len(cfg["partition"]["sites"] or ()))
    sections = {json.dumps(s, sort_keys=True): (i, s) for i in reversed(range(clients)) if (s := method.client_architecture(i)) is not None}
    for client, section in sections.values():
        try:
            resolve_model_config(section)
        except UserError as exc:
            raise UserError(f"config key 'method': method {cfg['method']['name']} gives client {client} a model it cannot build: {exc}") from None


def get_key(cfg: dict, path: str) -> Any:
    node = cfg
    for key in path.split("."):
        node = node[key]
    return node


def check_record(cfg: dict, record: str) -> None:
    """`train.recipe` and `train.tuned` record settings a method's recipe or tuning set: each must
    be the run's value, or run.json would claim a setting the run did not train with."""
    for key, value in cfg["train"][record].items():
        try:
            actual = get_key(cfg, key)
        except KeyError:
            raise UserError(f"config key 'train.{record}': '{key}' is not a run-config key") from None
        if actual != value:
            raise UserError(f"config key 'train.{record}': records {key}={value!r} but the run sets {key}={actual!r}; "
                            "remove the record or set the value it names")


def semantic_view(cfg: dict) -> dict:
    """The part of a resolved config that determines the results (what the run id hashes)."""
    view = {k: v for k, v in cfg.items() if k not in NON_SEMANTIC}
    view["data"] = {k: v for k, v in cfg["data"].items() if k not in NON_SEMANTIC_DATA_KEYS}
    for section, keys in HASHED_WHEN_SET.items():
        if section in view:
            view[section] = {k: v for k, v in view[section].items() if k not in keys or not is_default(section, k, v)}
    for section in SECTIONS_HASHED_WHEN_SET:
        if view.get(section) == schema_default(section, None):
            del view[section]
    runtime = cfg.get("runtime", {})
    changed = {k: runtime[k] for k in SEMANTIC_RUNTIME_KEYS if not is_default("runtime", k, runtime.get(k, schema_default("runtime", k)))}
    if changed:
        view["runtime"] = changed
    return view


def with_later_keys(cfg: dict) -> dict:
    """A recorded run config with the HASHED_WHEN_SET keys it predates filled in at their
    defaults, so runs made before and after those keys existed compare as the same setting.
    Only the sections it fills are copied (a deep copy of every config was a fifth of reading
    10,000 runs); the rest is shared with `cfg`."""
    out = dict(cfg)
    for section in SECTIONS_HASHED_WHEN_SET:
        out[section] = {**copy.deepcopy(schema_default(section, None)), **out.get(section, {})}
    for section, keys in HASHED_WHEN_SET.items():
        if isinstance(out.get(section), dict):
            missing = {key: copy.deepcopy(schema_default(section, key)) for key in keys if key not in out[section]}
            out[section] = {**out[section], **missing}
    for mode in ("client_dp", "sample_dp"):  # off (null) or on, a DP mode has the same fields, so runs differ in values, not keys
        fields = run_schema()["properties"]["privacy"]["properties"][mode]["properties"]
        out["privacy"] = {**out["privacy"], mode: {key: (out["privacy"][mode] or {}).get(key) for key in fields}}
    return out


def schema_default(section: str, key: str | None):
    """The default of a key of a section (key None: of the whole section, its keys filled)."""
    props = run_schema()["properties"][section]
    return fill_defaults(props, props["default"]) if key is None else props["properties"][key]["default"]


def is_default(section: str, key: str, value) -> bool:
    return value == schema_default(section, key)


def config_digest(cfg: dict) -> str:
    blob = json.dumps(semantic_view(cfg), sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()


def run_id(cfg: dict) -> str:
    """Readable, unique id: two studies asking for the same resolved run share it."""
    return f"{cfg['data']['name']}-{cfg['method']['name']}-s{cfg['seed']}-{config_digest(cfg)[:10]}"
