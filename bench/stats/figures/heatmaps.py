"""Heatmaps: method x swept value (beta, clients, ...) and a method's per-layer similarity over
rounds (FedLSC's Eq. 3 means) with its personal layers marked."""

from __future__ import annotations

import logging
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.ticker import MaxNLocator

from bench.stats.analysis import Analysis
from bench.stats.collect import format_value, read_diagnostics, sort_key
from bench.stats.figures.curves import metric_label, scale
from bench.stats.figures.style import MethodStyle, save, slug
from bench.stats.scores import STATS_STATUS, lower_is_better
from bench.stats.tables import heading

log = logging.getLogger(__name__)
SIMILARITY, PERSONAL = "layer_similarity", "personal"
MAX_LAYER_LABELS = 60


def sweep_heatmaps(analysis: Analysis, style: MethodStyle, folder: Path) -> list[Path]:
    """figures/heatmap_<sweep>/<context>: mean headline metric, methods x values (annotated)."""
    metric, paths = analysis.settings["metric"], []
    k = scale(metric)
    for sweep in analysis.settings["sweeps"]:
        rows = analysis.setting_sweep_rows[sweep["name"]]
        if rows.empty:
            continue
        for context, group in rows.groupby("context", sort=False):
            values = sorted(group["value"].drop_duplicates(), key=sort_key)
            methods = [m for m in analysis.results.methods if m in set(group["method"])]
            grid = group.pivot_table(index="method", columns="value", values="mean", aggfunc="first").reindex(index=methods, columns=values) * k
            fig, ax = plt.subplots(figsize=(1.1 * len(values) + 3.2, 0.42 * len(methods) + 1.6))
            cmap = "viridis_r" if lower_is_better(metric, analysis.settings) else "viridis"
            sns.heatmap(grid, annot=True, fmt=".1f" if k == 100 else ".3f", cmap=cmap, ax=ax, cbar_kws={"label": metric_label(metric)},
                        linewidths=0.5, linecolor="white", annot_kws={"fontsize": 8})
            ax.set(xlabel=sweep["title"], ylabel="")
            ax.set_xticklabels([format_value(v) for v in values], rotation=0)
            for label in ax.get_yticklabels():
                label.set_color(style.color(label.get_text()))
                label.set_fontweight("bold")
            ax.set_title(f"{metric.replace('_', ' ')} by method and {sweep['title']}\n{context}", fontsize=9)
            paths += save(fig, folder / f"heatmap_{sweep['name']}" / slug(context), analysis.settings)
    return paths


def layer_similarity(analysis: Analysis, style: MethodStyle, folder: Path) -> list[Path]:
    """figures/layer_similarity/<setting>__<method>: mean over seeds of each layer's mean
    similarity per round; personal layers (at the last round) starred, with their seed share."""
    diagnostics = read_diagnostics(analysis.results, (SIMILARITY, PERSONAL))
    if diagnostics.empty:
        log.info("no run recorded per-layer similarities (%s): skipping figures/layer_similarity", SIMILARITY)
        return []
    runs = analysis.results.runs
    runs = runs[runs["status"] == STATS_STATUS][["study", "setting", "method", "run_id"]]
    data = diagnostics.merge(runs, on="run_id")
    paths = []
    for (study, setting, method), group in data.groupby(["study", "setting", "method"], sort=False, observed=True):
        similarity = group[group["name"] == SIMILARITY].pivot_table(index="layer", columns="round", values="value", aggfunc="mean", observed=True)
        if similarity.empty:
            continue
        personal = group[group["name"] == PERSONAL]
        last = personal[personal["round"] == personal["round"].max()]
        share = last.groupby("layer", observed=True)["value"].mean().reindex(similarity.index).fillna(0)
        stem = folder / "layer_similarity" / f"{slug(heading(study, setting))}__{slug(method)}"
        paths += draw_layer_similarity(similarity, share, f"{method}: {heading(study, setting)}", group["run_id"].nunique(), stem, analysis)
    return paths


def draw_layer_similarity(similarity: pd.DataFrame, share: pd.Series, title: str, seeds: int, stem: Path, analysis: Analysis) -> list[Path]:
    """Heatmap (layers x rounds), a strip with each layer's personal share, and a colour bar."""
    layers, rounds = similarity.shape
    fig, (ax, side, bar) = plt.subplots(1, 3, figsize=(min(5 + 0.16 * rounds, 15), min(2.2 + 0.17 * layers, 24)),
                                        gridspec_kw={"width_ratios": [24, 1.6, 0.8], "wspace": 0.08})
    first, last = similarity.columns.min(), similarity.columns.max()
    image = ax.imshow(similarity.to_numpy(), aspect="auto", cmap="viridis", vmin=-1, vmax=1, interpolation="nearest",
                      extent=(first - 0.5, last + 0.5, layers - 0.5, -0.5))
    ax.grid(False)
    step = max(1, layers // MAX_LAYER_LABELS)
    names = [("★ " if share.iloc[i] > 0 else "") + str(name) for i, name in enumerate(similarity.index)]
    ax.set_yticks(np.arange(0, layers, step), names[::step], fontsize=max(4, 8 - layers // 40))
    for i, label in zip(range(0, layers, step), ax.get_yticklabels()):
        if share.iloc[i] > 0:
            label.set_fontweight("bold")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("round")
    side.imshow(share.to_numpy()[:, None], aspect="auto", cmap="Oranges", vmin=0, vmax=1, interpolation="nearest")
    side.grid(False)
    side.set_xticks([0], ["personal"], rotation=90, fontsize=7)
    side.set_yticks([])
    fig.colorbar(image, cax=bar, label="mean cosine similarity of client updates")
    ax.set_title(f"{title}\nper-layer mean similarity, mean over {seeds} seed(s); ★ = personal layer (strip: share of seeds)", fontsize=9)
    return save(fig, stem, analysis.settings)
