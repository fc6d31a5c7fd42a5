"""What every figure shares: one fixed colour (and marker) per method, file names, saving.

Colours come from seaborn's colour-blind-safe palette, assigned in table order (the configured
paper methods first), so a method has the same colour in every figure of a report and the paper's
methods keep theirs across reports. Markers follow the same order; past 19 methods colours repeat with another dash.
"""

from __future__ import annotations

import hashlib
import re
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import seaborn as sns  # noqa: E402

from bench.io import atomic_path  # noqa: E402

# The paper's seven methods first, far apart in CIELAB (every pair at least 40 apart, ΔE76) because
# their bands overlap: grey (local-only, the floor every method should beat), blue, orange, green,
# purple, near-black, red; then seaborn "colorblind" and Paul Tol's "muted" colours: 19 before any repeats.
PALETTE = ["#949494", "#0173b2", "#de8f05", "#029e73", "#7b3fa0", "#1a1a1a", "#cc3311", "#56b4e9", "#cc78bc", "#ca9161",
           "#117733", "#882255", "#44aa99", "#999933", "#332288", "#cc6677", "#88ccee", "#ddcc77", "#ece133"]
MARKERS = ["o", "s", "^", "D", "v", "P", "X", "*"]
DASHES = ["-", "--", "-.", ":"]


class MethodStyle:
    """Colour, marker and dash of every method, fixed for the whole report: a paper method by
    its place in `paper_names` (the same in every report), any other method after them."""

    def __init__(self, results, paper_names: list[dict]):
        methods = results.runs.drop_duplicates("method").set_index("method")["method_order"]
        others = [m for m in results.methods if methods[m] >= len(paper_names)]
        self.index = {m: int(methods[m]) if methods[m] < len(paper_names) else len(paper_names) + others.index(m) for m in results.methods}

    def _index(self, method: str) -> int:
        return self.index.get(method, len(self.index))

    def color(self, method: str) -> str:
        return PALETTE[self._index(method) % len(PALETTE)]

    def marker(self, method: str) -> str:
        return MARKERS[self._index(method) % len(MARKERS)]

    def dash(self, method: str) -> str:
        return DASHES[self._index(method) // len(PALETTE) % len(DASHES)]


def slug(text: str) -> str:
    """A file name safe in LaTeX's \\includegraphics and in URLs, from a setting or method name:
    'ham10000, beta=0.5' -> 'ham10000_beta0p5', 'FedLSC Per=1%' -> 'FedLSC_Per1pct' (hashed if long)."""
    name = text.replace("=", "").replace("%", "pct")
    name = re.sub(r"(?<=\d)\.(?=\d)", "p", name)
    name = re.sub(r"[^A-Za-z0-9-]+", "_", name).strip("_") or "all"
    if len(name) > 80:
        name = f"{name[:70]}_{hashlib.sha1(text.encode()).hexdigest()[:8]}"
    return name


@contextmanager
def figure_style() -> Iterator[None]:
    """seaborn's whitegrid look for the figures drawn inside, without touching global state."""
    with sns.axes_style("whitegrid"), sns.plotting_context("paper", font_scale=1.1), plt.rc_context({"figure.dpi": 100, "savefig.bbox": "tight"}):
        yield


def save(fig: plt.Figure, stem: Path, settings: dict, caption: str) -> dict[Path, str]:
    """Write `stem`.png/.pdf/... (figures.formats) atomically, the caption in each file's
    metadata too, and close the figure; returns path -> caption."""
    paths = {}
    for ext in settings["figures"]["formats"]:
        path = stem.with_name(f"{stem.name}.{ext}")
        key = {"png": "Description", "pdf": "Subject", "svg": "Description"}[ext]
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format=ext, dpi=settings["figures"]["dpi"], metadata={key: caption})
        paths[path] = caption
    plt.close(fig)
    return paths
