"""torch._dynamo only when something is compiled: about 1.7 s of every uncompiled run's start-up.

torch's optimizers import torch._dynamo on their first use, for three calls that do nothing when
no graph is being captured: `disable(fn)` (keep the compiler out of fn), `graph_break()` and
`is_compiling()` (False). `defer_dynamo()` puts a stand-in module answering those three in its
place; any other attribute, or a submodule, imports the real torch._dynamo and hands over to it
(torch.compile then works as usual). Torch's own lazy-import hook is the pattern
(torch/__init__.py, `__getattr__` over `_lazy_modules`).
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import sys
import types

import torch

NAME = "torch._dynamo"


class DynamoUntilNeeded(types.ModuleType):
    """The three no-capture answers of torch._dynamo; anything else loads the real module."""

    __path__: list[str] = []  # a submodule import goes through `HandOver`, never through this

    def __init__(self) -> None:
        super().__init__(NAME, __doc__)

    @staticmethod
    def disable(fn=None, recursive=True, *, reason=None, wrapping=True):
        """Nothing is compiled, so there is nothing to keep the compiler out of."""
        return fn if fn is not None else (lambda f: f)

    @staticmethod
    def graph_break(msg: str = "") -> None:
        """No graph is being captured: nothing to break."""

    @staticmethod
    def is_compiling() -> bool:
        return False

    def __getattr__(self, name: str):
        return getattr(real_dynamo(), name)


class HandOver(importlib.abc.MetaPathFinder):
    """A torch._dynamo submodule asked for while the stand-in is in place: load the real package
    first (which may already import that submodule), then find the submodule in it as usual."""

    def find_spec(self, name, path, target=None):
        if not name.startswith(NAME + ".") or not isinstance(sys.modules.get(NAME), DynamoUntilNeeded):
            return None
        real = real_dynamo()
        if name in sys.modules:
            return importlib.util.spec_from_loader(name, AlreadyLoaded())
        return importlib.machinery.PathFinder.find_spec(name, real.__path__)


class AlreadyLoaded(importlib.abc.Loader):
    """The module the real package's import already created."""

    def create_module(self, spec):
        return sys.modules[spec.name]

    def exec_module(self, module) -> None:
        pass


def defer_dynamo() -> None:
    """Put the stand-in in place unless torch._dynamo is loaded already (then it stays)."""
    if NAME in sys.modules:
        return
    sys.modules[NAME] = torch._dynamo = DynamoUntilNeeded()
    sys.meta_path.insert(0, HandOver())


def real_dynamo() -> types.ModuleType:
    """The real torch._dynamo, imported now if the stand-in is in its place."""
    if isinstance(sys.modules.get(NAME), DynamoUntilNeeded):
        del sys.modules[NAME]
        del torch._dynamo
        sys.meta_path[:] = [finder for finder in sys.meta_path if not isinstance(finder, HandOver)]
    return importlib.import_module(NAME)
