"""Independent, reproducible random streams: one seed per (run seed, round, client, ...) tuple."""

from __future__ import annotations

import numpy as np


def derive_seed(*parts: int) -> int:
    """A 63-bit seed from integers (run seed, round, client, ...): independent streams per part."""
    return int(np.random.SeedSequence([int(p) for p in parts]).generate_state(2, np.uint64)[0] >> np.uint64(1))
