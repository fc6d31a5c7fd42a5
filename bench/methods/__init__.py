"""Methods by name. Adding a method is adding one module that defines a `Method` subclass
decorated with `@register`; it then appears in `fedrank methods`, the config schema, the
workflow (`methods: all`) and the rankings without any other edit.

Where methods come from, in this order: the modules of this package; installed packages that
declare an entry point in the group `fedrank.methods` (its value a module, or a module:Class, that
registers methods when imported); and every `*.py` file in the folders of the environment variable
FEDRANK_METHODS_PATH (os.pathsep-separated) and of a workflow config's `methods_path`. Two methods
of one name are a one-line error naming both files. `method_source` says where a method came from
(file, sha256, package and version), for run.json.
"""

from __future__ import annotations

import copy
import functools
import hashlib
import importlib
import importlib.util
import inspect
import os
import pkgutil
import sys
from importlib import metadata
from pathlib import Path

from bench.errors import UserError, closest
from bench.methods.base import Method, hparam, proximal_term
from bench.search import Recipe, choices, intuniform, loguniform, uniform

__all__ = ["Method", "hparam", "proximal_term", "register", "registry", "make_method", "resolve_method_config",
           "method_source", "add_methods_path", "load_method_file", "Recipe", "choices", "intuniform", "loguniform", "uniform"]

ENTRY_POINT_GROUP = "fedrank.methods"
METHODS_PATH_ENV = "FEDRANK_METHODS_PATH"
_REGISTRY: dict[str, type[Method]] = {}
_PACKAGES: dict[str, dict] = {}  # method name -> {"name", "version"} of the installed package that registered it
_INFRASTRUCTURE = {"base"}
_ENTRY_POINTS_LOADED: list[bool] = []  # non-empty once this process imported the entry points


def source_file(cls: type) -> str:
    try:
        return str(Path(inspect.getsourcefile(cls) or "?").resolve())
    except TypeError:
        return "?"


def register(cls: type[Method]) -> type[Method]:
    """Class decorator: make a Method subclass available under its `name`."""
    if not cls.name:
        raise TypeError(f"{cls.__name__} needs a `name`")
    taken = _REGISTRY.get(cls.name)
    if taken is not None and taken is not cls:
        if (taken.__module__, taken.__qualname__) == (cls.__module__, cls.__qualname__):  # the same module imported again
            _REGISTRY[cls.name] = cls
            return cls
        raise UserError(f"method name '{cls.name}' is defined twice: {taken.__qualname__} in {source_file(taken)} and "
                        f"{cls.__qualname__} in {source_file(cls)}; rename one")
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
    """All methods: this package's modules, the `fedrank.methods` entry points and the files of
    the methods path (each imported once per process)."""
    import_methods(tuple(__path__))
    load_entry_points()
    for folder in methods_path():
        for file in sorted(folder.glob("*.py")):
            load_method_file(file)
    return dict(sorted(_REGISTRY.items()))


@functools.cache
def import_methods(path: tuple[str, ...]) -> None:
    """Import every module of this package, once per path (a workflow resolves thousands of
    runs, and listing the folder for each was a fifth of its DAG's build)."""
    for info in pkgutil.iter_modules(path):
        if info.name not in _INFRASTRUCTURE:
            importlib.import_module(f"{__name__}.{info.name}")


def load_entry_points() -> None:
    """Import every `fedrank.methods` entry point once, noting the package of the methods it registers."""
    if _ENTRY_POINTS_LOADED:
        return
    _ENTRY_POINTS_LOADED.append(True)
    for point in metadata.entry_points(group=ENTRY_POINT_GROUP):
        before = set(_REGISTRY)
        try:
            loaded = point.load()
        except Exception as exc:  # noqa: BLE001 - any import error of a third-party package is the user's to fix
            raise UserError(f"entry point {point.name} = {point.value} ({ENTRY_POINT_GROUP}): {type(exc).__name__}: {exc}") from None
        if isinstance(loaded, type) and issubclass(loaded, Method) and loaded.name not in _REGISTRY:
            register(loaded)
        dist = getattr(point, "dist", None)
        for name in set(_REGISTRY) - before:
            _PACKAGES[name] = {"name": dist.name if dist else point.module.split(".")[0], "version": dist.version if dist else None}


def methods_path() -> list[Path]:
    """The folders of FEDRANK_METHODS_PATH, each checked to exist."""
    folders = [Path(p) for p in os.environ.get(METHODS_PATH_ENV, "").split(os.pathsep) if p]
    for folder in folders:
        if not folder.is_dir():
            raise UserError(f"{METHODS_PATH_ENV} (or methods_path): {folder} is not a folder; fix the path or remove it")
    return folders


def add_methods_path(folders: list[str], base: Path | None = None) -> None:
    """Add folders (relative ones from `base`, default the working directory) to the methods path
    of this process and of the jobs it starts (they inherit FEDRANK_METHODS_PATH)."""
    current = [p for p in os.environ.get(METHODS_PATH_ENV, "").split(os.pathsep) if p]
    for folder in folders:
        path = str(((base or Path.cwd()) / os.path.expandvars(os.path.expanduser(folder))).resolve())
        if not Path(path).is_dir():
            raise UserError(f"config key 'methods_path': {folder} is not a folder (resolved to {path}); fix the path or remove it")
        if path not in current:
            current.append(path)
    os.environ[METHODS_PATH_ENV] = os.pathsep.join(current)


def load_method_file(file: str | Path) -> list[str]:
    """Import a method file from outside the package (once per process); the names it registers."""
    file = Path(file).resolve()
    module_name = f"fedrank_methods_path.{file.stem}_{hashlib.sha1(str(file).encode()).hexdigest()[:8]}"
    if module_name in sys.modules:
        return [name for name, cls in _REGISTRY.items() if cls.__module__ == module_name]
    spec = importlib.util.spec_from_file_location(module_name, file)
    if spec is None or spec.loader is None:
        raise UserError(f"{file}: not a Python file that can be imported as a method module")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    try:
        spec.loader.exec_module(module)
    except UserError:
        del sys.modules[module_name]
        raise
    except Exception as exc:  # noqa: BLE001 - an author's import error, as one line
        del sys.modules[module_name]
        raise UserError(f"method file {file}: {type(exc).__name__}: {exc}") from None
    return [name for name, cls in _REGISTRY.items() if cls.__module__ == module_name]


def method_source(name: str) -> dict:
    """Where method `name` comes from: its source file, the file's sha256, and the package that
    provides it (fedrank, an entry point's distribution, or none for a methods-path file)."""
    import bench

    cls = registry()[name]
    file = source_file(cls)
    digest = hashlib.sha256(Path(file).read_bytes()).hexdigest() if Path(file).is_file() else None
    if name in _PACKAGES:
        package = _PACKAGES[name]
    elif cls.__module__.startswith(f"{__name__}."):
        package = {"name": "fedrank", "version": bench.__version__}
    else:
        package = None
    return {"file": file, "sha256": digest, "package": package}


def resolve_method_config(section: dict) -> dict:
    """Validate a `method` section against the method's declared hyper-parameters; fill defaults."""
    from bench.config import fill_defaults, validate

    methods = registry()
    name = section.get("name")
    if name not in methods:
        raise UserError(f"config key 'method.name': unknown method '{name}'{closest(name, methods)}; choose one of: {', '.join(methods)} (see `fedrank methods`)")
    schema = methods[name].hparam_schema()
    resolved = fill_defaults(schema, copy.deepcopy(section))
    validate(schema, resolved, prefix="method")
    return resolved


def make_method(section: dict) -> Method:
    """An instance from a resolved `method` section (list values become tuples, as declared)."""
    cls = registry()[section["name"]]
    return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in section.items() if k != "name"})
