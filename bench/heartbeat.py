"""Progress lines for output that is not a terminal: a job writing to a file (a SLURM log,
train.log) logs at least every `every` seconds while it works, so it never looks hung for minutes
between a round's lines or while a data cache builds (tqdm draws nothing there)."""

from __future__ import annotations

import logging
import time
from typing import Callable

EVERY_SECONDS = 30.0


class Heartbeat:
    """Log a message when `every` seconds have passed since the last one (or since it was made)."""

    def __init__(self, log: logging.Logger, every: float | None = None, clock: Callable[[], float] = time.monotonic):
        self.log, self.every, self.clock = log, EVERY_SECONDS if every is None else every, clock
        self.last = clock()

    def reset(self) -> None:
        """Another line was just logged: the next beat is `every` seconds from now."""
        self.last = self.clock()

    def __call__(self, message: str, *args) -> bool:
        now = self.clock()
        if now - self.last < self.every:
            return False
        self.last = now
        self.log.info(message, *args)
        return True
