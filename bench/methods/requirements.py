"""What a method needs of its run's setting (`Method.requires`), checked when a config resolves:
`fedrank run --print-config`, `fedrank plan` and the DAG refuse a setting some method cannot run
in, before any run starts, with one line naming every method that needs what is missing."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from bench.errors import UserError


@dataclass(frozen=True)
class Requirement:
    what: str  # the missing thing, as a message names it
    met: Callable[[dict], bool]  # does a resolved run config provide it?
    fix: str


REQUIREMENTS = {
    "public_split": Requirement("a public split (unlabelled images given to no client)", lambda cfg: cfg["data"]["public_fraction"] > 0,
                                "set data.public_fraction > 0 (e.g. 0.1)"),
}


def check_requirements(cfg: dict) -> None:
    """A one-line UserError when the config's method needs what its setting lacks."""
    from bench.methods import registry

    methods = registry()
    for key in methods[cfg["method"]["name"]].requires:
        need = REQUIREMENTS[key]
        if not need.met(cfg):
            needing = ", ".join(name for name, cls in methods.items() if key in cls.requires)
            raise UserError(f"method {cfg['method']['name']} needs {need.what}, which this setting lacks; {need.fix}, "
                            f"or leave out the methods that need it ({needing})")
