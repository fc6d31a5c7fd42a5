"""The one exception type the CLI turns into a one-line message and a non-zero exit."""

from __future__ import annotations

import difflib
from typing import Iterable


class UserError(Exception):
    """Bad input from the user: the message names the problem and the fix, on one line."""

    exit_code = 2


class Stopped(UserError):
    """The run stopped for a reason outside its configuration (the folder is in use, the disk is
    full, Ctrl-C): the same command continues it, so it is never recorded as a failed run."""


class Interrupted(Stopped):
    exit_code = 130  # as a shell reports a process ended by Ctrl-C (128 + SIGINT)


def closest(name: str, choices: Iterable[str]) -> str:
    """' (did you mean a or b?)' for the choices nearest to a mistyped `name`, else ''."""
    near = difflib.get_close_matches(str(name), list(choices), n=3, cutoff=0.6)
    return f" (did you mean {' or '.join(near)}?)" if near else ""
