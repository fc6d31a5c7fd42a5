"""`fedrank methods`, `models` and `datasets` in a fraction of a second: their text, remembered.

A listing is printed from the registries, and filling them imports every method, model and
dataset module, and with them torch: 4 to 7 s for a few lines of text. The text depends only on
the package's sources (and the Python and timm it runs with), so it is stored under a hash of
exactly what `bench.plan_cache` hashes for a plan; while no file of `bench` changed, a listing is
read back without importing torch. A new or edited method module is a different key: the next
listing is rendered afresh (and stored). Listings live under $FEDRANK_CACHE_DIR/listings
(default ~/.cache/fedrank/listings); a cache that cannot be written only costs the speed.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import io
import json
import logging
import platform
from importlib import metadata
from pathlib import Path
from typing import Callable

from bench.io import atomic_path
from bench.plan_cache import cache_root, code_fingerprint

log = logging.getLogger(__name__)

Command = Callable[[argparse.Namespace], int]


def listing_path(name: str, args: argparse.Namespace) -> Path:
    """Where the text of listing `name` with these options is stored: a hash of the options, the
    sources, Python's and timm's versions."""
    options = {k: v for k, v in sorted(vars(args).items()) if k not in ("func", "command", "verbose") and not callable(v)}
    parts = [name, options, code_fingerprint(), platform.python_version(), metadata.version("timm")]
    return cache_root() / "listings" / f"{name}-{hashlib.sha256(json.dumps(parts, default=str).encode()).hexdigest()[:32]}.txt"


def rendered(name: str, command: Command, args: argparse.Namespace) -> str:
    """The text `command` prints, from the store when the sources are unchanged, else rendered
    now (importing the registries) and stored."""
    path = listing_path(name, args)
    try:
        return path.read_text()
    except OSError:
        pass
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        command(args)
    try:
        with atomic_path(path) as tmp:
            tmp.write_text(out.getvalue())
    except OSError as exc:
        log.debug("listing not stored under %s: %s", path.parent, exc)
    return out.getvalue()


def remembered(name: str, command: Command) -> Command:
    """`command`, a listing that only prints, answered from the store while the sources are unchanged."""

    def listing(args: argparse.Namespace) -> int:
        print(rendered(name, command, args), end="")
        return 0

    return listing


def method_names() -> list[str]:
    """The registered methods' names, read back like a listing (registering imports torch)."""

    def print_names(_: argparse.Namespace) -> int:
        from bench.methods import registry

        print("\n".join(registry()))
        return 0

    return rendered("method-names", print_names, argparse.Namespace()).split()


def method_schemas() -> dict[str, dict]:
    """`fedrank methods --json` as data: each method's config schema (defaults included), read
    back like a listing, so the statistics name treatments without importing torch."""
    from bench.commands.run import cmd_methods

    return json.loads(rendered("methods", cmd_methods, argparse.Namespace(json=True)))
