"""Figures of a results set (PNG and PDF): each module draws one kind, from the analysis.

`style.py` holds what every figure shares: the colour-blind-safe palette with one fixed colour
per method, file names, atomic saving. `all_figures` draws every figure the results support and
logs what it skips.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

from tqdm import tqdm

log = logging.getLogger(__name__)


def all_figures(analysis, folder: Path, progress: bool = True, only: tuple[str, ...] | None = None) -> dict[Path, str]:
    """Draw every figure the results support into `folder`; returns the files written, each
    with its caption.
    `only` restricts to some kinds (names of FIGURES)."""
    from bench.stats.figures.style import MethodStyle, figure_style

    style = MethodStyle(analysis.results, analysis.settings["paper_names"])
    kinds = [(name, draw) for name, draw in figure_kinds().items() if only is None or name in only]
    paths: dict[Path, str] = {}
    with figure_style():
        for name, draw in tqdm(kinds, desc="figures", unit="kind", disable=not progress or None, leave=False):
            tic = time.perf_counter()
            written = draw(analysis, style, folder)
            if written:
                log.info("figures: %d %s files in %.1f s", len(written), name, time.perf_counter() - tic)
            else:
                log.info("figures: no %s (nothing in the results to draw it from)", name)
            paths.update(written)
    return paths


def figure_kinds() -> dict:
    """Figure kind -> draw(analysis, style, folder) -> {path: caption}."""
    from bench.stats.figures.bars import rounds_to_target
    from bench.stats.figures.cd import cd_diagram
    from bench.stats.figures.curves import convergence, sensitivity
    from bench.stats.figures.heatmaps import layer_similarity, sweep_heatmaps
    from bench.stats.figures.partitions import partitions
    from bench.stats.figures.privacy import privacy_utility
    from bench.stats.figures.protocols import client_dots, frequency_curves, unseen_scatter

    return {
        "convergence": convergence,
        "rounds_to_target": rounds_to_target,
        "cd_diagram": cd_diagram,
        "sweep_heatmaps": sweep_heatmaps,
        "sensitivity": sensitivity,
        "layer_similarity": layer_similarity,
        "partitions": partitions,
        "fairness": client_dots,
        "communication_frequency": frequency_curves,
        "leave_one_centre_out": unseen_scatter,
        "privacy_utility": privacy_utility,
    }
