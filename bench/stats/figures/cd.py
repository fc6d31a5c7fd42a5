"""Critical-difference diagram (Demšar 2006): average ranks on an axis, the Nemenyi CD as a
scale bar, and thick bars joining methods whose ranks differ by less than the CD."""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt

from bench.stats.analysis import Analysis
from bench.stats.figures.style import MethodStyle, save
from bench.stats.ranking import cliques
from bench.stats.render import p_text


def cd_diagram(analysis: Analysis, style: MethodStyle, folder: Path) -> list[Path]:
    ranking = analysis.ranking
    if not ranking.friedman:
        return []
    average = ranking.ranks.mean().sort_values()
    k, cd = len(average), ranking.friedman["cd"]
    left = average.index[: (k + 1) // 2]
    right = average.index[(k + 1) // 2:][::-1]
    rows = max(len(left), len(right))
    fig, ax = plt.subplots(figsize=(8, 1.9 + 0.32 * rows))
    low, high = 1, max(k, 2)
    ax.set_xlim(low - 0.6 * (high - low) / 2, high + 0.6 * (high - low) / 2)
    ax.set_ylim(-(rows + 1.6), 1.6)
    ax.axis("off")
    ax.hlines(0, low, high, color="black", linewidth=1)
    for r in range(low, high + 1):
        ax.vlines(r, 0, 0.15, color="black", linewidth=1)
        ax.text(r, 0.25, str(r), ha="center", va="bottom", fontsize=9)
    if cd <= high - low:
        ax.hlines(1.1, low, low + cd, color="black", linewidth=1.5)
        ax.vlines([low, low + cd], 1.0, 1.2, color="black", linewidth=1.5)
        ax.text(low + cd / 2, 1.25, f"CD = {cd:.2f}", ha="center", va="bottom", fontsize=9)
    for names, end, align in ((left, low - 0.45 * (high - low) / 2, "right"), (right, high + 0.45 * (high - low) / 2, "left")):
        for i, method in enumerate(names):
            y = -(i + 1) * 0.9 - 0.3
            x = average[method]
            ax.vlines(x, y, 0, color=style.color(method), linewidth=1.4)
            ax.hlines(y, min(x, end), max(x, end), color=style.color(method), linewidth=1.4)
            ax.text(end + (-0.03 if align == "right" else 0.03), y, f"{method} ({x:.2f})", ha=align, va="center", fontsize=9, color="black")
    for level, members in enumerate(cliques(average, cd)):
        y = -0.25 - 0.18 * level
        ax.hlines(y, average[members[0]] - 0.03, average[members[-1]] + 0.03, color="black", linewidth=4, alpha=0.8)
    f = ranking.friedman
    blocks = "settings" if ranking.kind == "setting" else "setting x seed blocks"
    ax.set_title(f"Average rank over {f['blocks']} {blocks} (1 = best). Friedman {p_text(f['p'])}; "
                 f"bars join methods within the Nemenyi CD (alpha = {f['alpha']:g})", fontsize=9)
    return save(fig, folder / "cd_diagram", analysis.settings)

