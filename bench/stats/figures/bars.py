"""Rounds to target: the median over seeds per method as a bar, every run as a dot, and the
runs that never reached the target drawn as censored (open, at the budget, hatched bar)."""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.lines import Line2D
from matplotlib.patches import Patch

from bench.stats.analysis import Analysis
from bench.stats.captions import scope_phrase
from bench.stats.figures.style import MethodStyle, save, slug
from bench.stats.render import heading
from bench.stats.tables import target_text


LEGEND = [
    Line2D([], [], color="black", marker="o", linestyle="", markersize=4, label="run: first round at target"),
    Line2D([], [], markerfacecolor="white", markeredgecolor="black", marker=">", linestyle="", markersize=5, label="run: censored (never reached)"),
    Patch(facecolor="#bbbbbb", alpha=0.4, hatch="//", edgecolor="#888888", label="median not reached"),
]


def rounds_to_target(analysis: Analysis, style: MethodStyle, folder: Path) -> dict[Path, str]:
    """figures/rounds_to_target/<setting>: one figure per setting with a dataset target."""
    table, paths = analysis.rounds_to_target, {}
    if table.empty:
        return paths
    runs = analysis.results.runs[["study", "setting", "method", "run_id", "train.rounds"]].merge(analysis.targets, on="run_id")
    for (study, setting), group in table.groupby(["study", "setting"], sort=False):
        dots = runs[(runs["study"] == study) & (runs["setting"] == setting)]
        budget = int(dots["train.rounds"].max())
        methods = group["method"].tolist()
        fig, ax = plt.subplots(figsize=(7, 0.5 * len(methods) + 1.6))
        y = np.arange(len(methods))[::-1]
        for yi, row in zip(y, group.itertuples()):
            reached = not np.isnan(row.median_rounds)
            ax.barh(yi, row.median_rounds if reached else budget, color=style.color(row.method), alpha=0.75 if reached else 0.25,
                    hatch=None if reached else "//", edgecolor=style.color(row.method), height=0.6)
            mine = dots[dots["method"] == row.method]
            ax.text(budget * 1.06, yi, f"median {row.median_rounds:g} ({row.reached}/{row.runs} reached)" if reached else f"not reached ({row.reached}/{row.runs})",
                    va="center", fontsize=8)
            jitter = np.linspace(-0.18, 0.18, len(mine)) if len(mine) > 1 else np.zeros(len(mine))
            hit = mine["reached"].to_numpy(bool)
            ax.scatter(mine["round"][hit], yi + jitter[hit], color="black", s=12, zorder=3)
            ax.scatter(mine["round"][~hit], yi + jitter[~hit], facecolor="white", edgecolor="black", marker=">", s=22, zorder=3)
        ax.set_yticks(y, methods)
        ax.set_xlim(0, budget * 1.45)
        ax.axvline(budget, color="#666666", linewidth=0.8, linestyle=":")
        ax.set_xlabel(f"rounds until {target_text(row.target_metric, row.target, analysis.settings)} (median over seeds; dotted: round budget)")
        ax.set_title(heading(study, setting), fontsize=10, pad=24)
        ax.legend(handles=LEGEND, fontsize=7, loc="lower center", bbox_to_anchor=(0.5, 1.0), ncol=3, frameon=False)
        caption = (f"Rounds to target, {heading(study, setting)}: the first evaluated round at which each run reaches "
                   f"{target_text(row.target_metric, row.target, analysis.settings)} ({scope_phrase(analysis.results, methods)}), every run a dot; "
                   f"bars: the median over seeds, runs that never reach it counted as later than the budget of {budget} rounds "
                   "(open triangles at the budget; a hatched bar where the median run never reaches it).")
        paths.update(save(fig, folder / "rounds_to_target" / slug(heading(study, setting)), analysis.settings, caption))
    return paths
