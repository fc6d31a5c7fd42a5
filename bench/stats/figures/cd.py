"""Critical-difference diagram (Demšar 2006): average ranks on an axis, the Nemenyi CD as a
scale bar above it, thick bars below it joining methods whose ranks differ by less than the CD,
and a note when there are too few blocks for the test to tell any two methods apart."""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib.pyplot as plt

from bench.stats.analysis import Analysis
from bench.stats.captions import friedman_phrase, metric_name
from bench.stats.figures.style import MethodStyle, save
from bench.stats.ranking import cliques
from bench.stats.render import p_text

ROW, BAR = 0.5, 0.22  # vertical spacing of label rows and of clique bars (data units)


def blocks_needed(k: int, q: float, gap: float) -> int:
    """Fewest blocks for which the Nemenyi CD of k methods is shorter than `gap` ranks."""
    return math.floor(q * q * k * (k + 1) / (6 * gap * gap)) + 1


def limits_note(friedman: dict, average) -> str:
    """What the test cannot say with these blocks, in words (empty when it can tell some apart)."""
    n, cd, k = friedman["blocks"], friedman["cd"], len(average)
    gap = float(average.max() - average.min())
    if math.isnan(friedman["p"]):
        return f"Friedman test {friedman['undefined']}: no evidence that the methods' ranks differ at all."
    if cd >= k - 1:
        return (f"With N = {n} blocks the critical difference ({cd:.2f}) is longer than the whole rank range ({k - 1}): no two of the "
                f"{k} methods can be told apart, whatever their ranks; at least {blocks_needed(k, friedman['q_alpha'], k - 1)} blocks are needed.")
    if gap < cd:
        needs = (f"the gap between the best and the worst average rank here ({gap:.2f}) would need at least {blocks_needed(k, friedman['q_alpha'], gap)} blocks"
                 if gap > 0 else "every method has the same average rank")
        return f"With N = {n} blocks no two methods are further apart than the critical difference ({cd:.2f}): the test tells none of them apart; {needs}."
    if friedman["p"] > friedman["alpha"]:
        return f"Friedman {p_text(friedman['p'])} > alpha = {friedman['alpha']:g}: no evidence that the methods' ranks differ at all."
    return ""


def cd_diagram(analysis: Analysis, style: MethodStyle, folder: Path) -> dict[Path, str]:
    ranking = analysis.ranking
    if not ranking.friedman:
        return {}
    f = ranking.friedman
    average = ranking.ranks.mean().sort_values()
    k, cd = len(average), f["cd"]
    groups = cliques(average, cd)
    left, right = average.index[: (k + 1) // 2], average.index[(k + 1) // 2:][::-1]
    top_row = -(0.35 + BAR * len(groups) + 0.3)  # label rows start below the clique bars
    rows = max(len(left), len(right))
    bottom = top_row - ROW * (rows - 1) - 0.35
    top = 1.45 if cd < k - 1 else 0.55
    fig, ax = plt.subplots(figsize=(8, 0.55 * (top - bottom) + 0.5))
    high = max(k, 2)
    ax.set_xlim(1, high)
    ax.set_ylim(bottom, top)
    ax.axis("off")
    ax.hlines(0, 1, high, color="black", linewidth=1)
    for r in range(1, high + 1):
        ax.vlines(r, 0, 0.12, color="black", linewidth=1)
        ax.text(r, 0.2, str(r), ha="center", va="bottom", fontsize=9)
    if cd < k - 1:  # the scale bar, above the tick labels
        ax.hlines(1.0, 1, 1 + cd, color="black", linewidth=1.5)
        ax.vlines([1, 1 + cd], 0.92, 1.08, color="black", linewidth=1.5)
        ax.text(1 + cd / 2, 1.13, f"CD = {cd:.2f}", ha="center", va="bottom", fontsize=9)
    for level, members in enumerate(groups):  # below the axis, one level per clique
        y = -0.35 - BAR * level
        ax.hlines(y, average[members[0]] - 0.04, average[members[-1]] + 0.04, color="black", linewidth=4, alpha=0.8)
    for names, end, align in ((left, 1 - 0.08 * (high - 1), "right"), (right, high + 0.08 * (high - 1), "left")):
        for i, method in enumerate(names):
            y, x = top_row - ROW * i, average[method]
            ax.vlines(x, y, 0, color=style.color(method), linewidth=1.4)
            ax.hlines(y, min(x, end), max(x, end), color=style.color(method), linewidth=1.4, clip_on=False)
            ax.text(end + (-0.03 if align == "right" else 0.03), y, f"{method} ({x:.2f})", ha=align, va="center", fontsize=9, clip_on=False)
    blocks = "settings" if ranking.kind == "setting" else "setting x seed blocks"
    ax.set_title(f"Average rank of {metric_name(analysis.settings['metric'])} over N = {f['blocks']} {blocks} (1 = best)", fontsize=10)
    note = limits_note(f, average)
    if note:
        ax.text((1 + high) / 2, bottom, note, ha="center", va="top", fontsize=8, wrap=True, color="#aa3333")
    kind = "settings (each method's mean over its seeds)" if ranking.kind == "setting" else "setting x seed pairs"
    caption = (f"Critical-difference diagram (Demšar 2006) of {metric_name(analysis.settings['metric'])}: each method's average rank over "
               f"N = {f['blocks']} {kind} (1 = best; tied scores share their average rank); thick bars join methods whose average ranks "
               f"differ by less than the Nemenyi critical difference CD = {cd:.2f} (alpha = {f['alpha']:g}, q = {f['q_alpha']:.3f}). "
               f"{friedman_phrase(f)}. {note}").strip()
    return save(fig, folder / "cd_diagram", analysis.settings, caption)
