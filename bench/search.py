"""Search spaces and training recipes: what tuning may vary, declared once next to what it varies.

A method declares the space of a hyper-parameter with its declaration,
`hparam(0.001, "...", search=loguniform(1e-3, 1, source="..."))`; the shared training settings
(client learning rate, optimizer, momentum, local epochs) carry theirs in the run schema
(`x-search` of `train.lr`, ...). A method may also declare a `Recipe`: the training settings
its paper assumes (client SGD for SCAFFOLD) and the paper's range of a shared setting (FedDyn's
learning rates). A study with `recipes: paper` runs every method on its recipe; tuning draws
trials over the method's spaces x the shared spaces (`bench.tuning`).

Spaces map a point u of the unit interval to a value, so a quasi-random sequence over the unit
cube (Sobol) becomes trials. Drawn floats are rounded to 3 significant digits: configs, run ids
and labels stay readable, and no difference below that resolution is worth a trial.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from functools import cache
from typing import Any

from bench.errors import UserError

KINDS = ("uniform", "loguniform", "int", "choices")
SIGNIFICANT = 3


@dataclass(frozen=True)
class Space:
    """One dimension of a search: a continuous range (uniform or log-uniform), whole numbers
    (inclusive), or listed choices; `source` says where it comes from (paper, section)."""

    kind: str
    low: float | None = None
    high: float | None = None
    values: tuple = ()
    source: str = ""

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"search space kind '{self.kind}': use one of {', '.join(KINDS)}")
        if self.kind == "choices":
            if not self.values or len(set(map(repr, self.values))) != len(self.values):
                raise ValueError("a choices space needs at least one value and no repeats")
            return
        if not (isinstance(self.low, (int, float)) and isinstance(self.high, (int, float))) or not self.low < self.high:
            raise ValueError(f"a {self.kind} space needs numbers low < high (got {self.low!r}, {self.high!r})")
        if self.kind == "loguniform" and self.low <= 0:
            raise ValueError(f"a loguniform space needs low > 0 (got {self.low!r})")
        if self.kind == "int" and not (float(self.low).is_integer() and float(self.high).is_integer()):
            raise ValueError(f"an int space needs whole-number bounds (got {self.low!r}, {self.high!r})")

    def at(self, u: float) -> Any:
        """The value at u in [0, 1): equal shares of the unit interval per choice or integer."""
        if self.kind == "choices":
            return self.values[min(int(u * len(self.values)), len(self.values) - 1)]
        if self.kind == "int":
            return int(self.low) + min(int(u * (self.high - self.low + 1)), int(self.high - self.low))
        if self.kind == "uniform":
            return rounded(self.low + u * (self.high - self.low))
        return rounded(math.exp(math.log(self.low) + u * (math.log(self.high) - math.log(self.low))))

    def candidates(self) -> list:
        """The values a check against a schema must accept: the ends of a range, or every choice."""
        return list(self.values) if self.kind == "choices" else [self.at(0.0), self.at(1.0 - 1e-12)]

    def to_json(self) -> dict:
        return {"choices": list(self.values)} if self.kind == "choices" else {self.kind: [self.low, self.high]}

    def describe(self) -> str:
        body = ", ".join(map(repr, self.values)) if self.kind == "choices" else f"{self.low:g}, {self.high:g}"
        return f"{self.kind}({body})"

    @property
    def log_scale(self) -> bool:
        return self.kind == "loguniform"


def rounded(value: float) -> float:
    return float(f"{value:.{SIGNIFICANT}g}")


def uniform(low: float, high: float, source: str = "") -> Space:
    return Space("uniform", low, high, source=source)


def loguniform(low: float, high: float, source: str = "") -> Space:
    return Space("loguniform", low, high, source=source)


def intuniform(low: int, high: int, source: str = "") -> Space:
    return Space("int", low, high, source=source)


def choices(*values: Any, source: str = "") -> Space:
    return Space("choices", values=tuple(values), source=source)


def space_from_json(spec: Any, where: str) -> Space:
    """A space written in a config: {loguniform: [1e-4, 1e-1]}, {uniform: [0, 0.99]}, {int: [1, 5]}
    or {choices: [adam, sgd]}; a one-line error naming the key otherwise."""
    if not isinstance(spec, dict) or len(spec) != 1 or next(iter(spec)) not in KINDS:
        raise UserError(f"config key '{where}': write a search space as one of {{loguniform: [low, high]}}, {{uniform: [low, high]}}, "
                        "{int: [low, high]} or {choices: [a, b, ...]}")
    kind, args = next(iter(spec.items()))
    try:
        if kind == "choices":
            if not isinstance(args, list):
                raise ValueError("choices takes a list")
            return Space(kind, values=tuple(args))
        if not isinstance(args, list) or len(args) != 2:
            raise ValueError(f"{kind} takes [low, high]")
        return Space(kind, *args)
    except ValueError as exc:
        raise UserError(f"config key '{where}': {exc}") from None


def check_space(space: Space, schema: dict, where: str) -> None:
    """Every value the space can give validates against `schema` (a hyper-parameter's or a run
    setting's): a space outside the bounds is refused when it is declared, not when a trial runs."""
    for value in space.candidates():
        error = violation(value, schema)
        if error is not None:
            raise UserError(f"{where}: search space {space.describe()} gives {value!r}, outside the allowed values ({error.message})")


def violation(value: Any, schema: dict):
    """What `jsonschema.validate(value, schema)` raises (the schema's own keys default, description
    and x-search left out), or None."""
    import jsonschema

    bare = json.dumps({k: v for k, v in schema.items() if k not in ("default", "description", "x-search")}, sort_keys=True)
    return jsonschema.exceptions.best_match(checked_validator(bare).iter_errors(value))


@cache
def checked_validator(schema_text: str):
    """The validator `jsonschema.validate` makes for a schema, the schema checked against its
    meta-schema once per schema, not once per value (that was a third of importing the methods)."""
    import jsonschema

    schema = json.loads(schema_text)
    kind = jsonschema.validators.validator_for(schema)
    kind.check_schema(schema)
    return kind(schema)


@dataclass(frozen=True)
class Recipe:
    """The training settings a method's paper assumes: fixed run-config values (`settings`,
    dotted `train.*` keys) and the paper's ranges of shared settings (`space`)."""

    settings: dict[str, Any] = field(default_factory=dict)
    space: dict[str, Space] = field(default_factory=dict)
    source: str = ""

    def describe(self) -> str:
        parts = [f"{k}={v}" for k, v in self.settings.items()] + [f"{k}~{s.describe()}" for k, s in self.space.items()]
        return ", ".join(parts) + (f"  [{self.source}]" if self.source else "")


# ---- the shared space, in the run schema --------------------------------------------------------
def setting_schema(key: str) -> dict:
    """The run schema of a dotted run-config key (e.g. train.lr); one line if there is none."""
    from bench.config import run_schema

    node = run_schema()
    for part in key.split("."):
        props = node.get("properties", {})
        if part not in props:
            raise UserError(f"'{key}' is not a run-config key (see bench/schemas/run.schema.yaml)")
        node = props[part]
    return node


def shared_space() -> dict[str, Space]:
    """The run settings that declare a search space (`x-search` in the run schema)."""
    from bench.config import run_schema

    found = {}
    for section, spec in run_schema()["properties"].items():
        for key, sub in spec.get("properties", {}).items():
            if "x-search" in sub:
                found[f"{section}.{key}"] = space_from_json(sub["x-search"], f"run schema {section}.{key}.x-search")
    return found


def check_recipe(recipe: Recipe, where: str) -> None:
    """A recipe sets only training settings, each to a value the run schema accepts, and its
    spaces are over shared settings that have a space."""
    shared = shared_space()
    for key, value in recipe.settings.items():
        if not key.startswith("train."):
            raise TypeError(f"{where}: recipe setting '{key}': a recipe sets training settings (train.*) only")
        error = violation(value, setting_schema(key))
        if error is not None:
            raise TypeError(f"{where}: recipe setting {key}={value!r}: {error.message}")
    for key, space in recipe.space.items():
        if key not in shared:
            raise TypeError(f"{where}: recipe space '{key}': not a shared setting with a space ({', '.join(shared)})")
        if key in recipe.settings:
            raise TypeError(f"{where}: recipe both fixes and searches '{key}'")
        check_space(space, setting_schema(key), f"{where}: recipe space {key}")
