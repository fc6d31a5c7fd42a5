"""Methods by name. Adding a method is adding one module here that defines a `Method` subclass
decorated with `@register`; it then appears in `fedrank methods`, the config schema, the
workflow (`methods: all`) and the rankings without any other edit."""

from __future__ import annotations

import copy
import functools
import importlib
import pkgutil

from bench.errors import UserError
from bench.methods.base import Method, hparam, proximal_term
from bench.search import Recipe, choices, intuniform, loguniform, uniform

__all__ = ["Method", "hparam", "proximal_term", "register", "registry", "make_method", "resolve_method_config",
           "Recipe", "choices", "intuniform", "loguniform", "uniform"]

_REGISTRY: dict[str, type[Method]] = {}
_INFRASTRUCTURE = {"base"}


def register(cls: type[Method]) -> type[Method]:
    """Class decorator: make a Method subclass available under its `name`."""
    if not cls.name:
        raise TypeError(f"{cls.__name__} needs a `name`")
    if cls.name in _REGISTRY and _REGISTRY[cls.name] is not cls:
        raise TypeError(f"method name '{cls.name}' is taken by {_REGISTRY[cls.name].__qualname__}")
    check_declared_search(cls)
    _REGISTRY[cls.name] = cls
    return cls


def check_declared_search(cls: type[Method]) -> None:
    """Every value a declared search space gives is one the hyper-parameter accepts, and the
    recipe sets valid training settings: a bad declaration fails when the method is imported."""
    from bench.search import check_recipe, check_space

    schema = cls.hparam_schema()["properties"]
    for hp, space in cls.search_space().items():
        check_space(space, schema[hp], f"method {cls.name}, hyper-parameter {hp}")
    if cls.recipe is not None:
        check_recipe(cls.recipe, f"method {cls.name}")


def registry() -> dict[str, type[Method]]:
    """All methods, discovered by importing every module of this package."""
    import_methods(tuple(__path__))
    return dict(sorted(_REGISTRY.items()))


@functools.cache
def import_methods(path: tuple[str, ...]) -> None:
    """Import every module on the methods path, once per path (a workflow resolves thousands of
    runs, and listing the folders for each was a fifth of its DAG's build)."""
    for info in pkgutil.iter_modules(path):
        if info.name not in _INFRASTRUCTURE:
            importlib.import_module(f"{__name__}.{info.name}")


def resolve_method_config(section: dict) -> dict:
    """Validate a `method` section against the method's declared hyper-parameters; fill defaults."""
    from bench.config import fill_defaults, validate

    methods = registry()
    name = section.get("name")
    if name not in methods:
        raise UserError(f"config key 'method.name': unknown method '{name}'; choose one of: {', '.join(methods)} (see `fedrank methods`)")
    schema = methods[name].hparam_schema()
    resolved = fill_defaults(schema, copy.deepcopy(section))
    validate(schema, resolved, prefix="method")
    return resolved


def make_method(section: dict) -> Method:
    """An instance from a resolved `method` section (list values become tuples, as declared)."""
    cls = registry()[section["name"]]
    return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in section.items() if k != "name"})
