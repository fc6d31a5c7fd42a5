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
from bench.stats.captions import axis_label, metric_name, scope_phrase
from bench.stats.collect import format_value, read_diagnostics, sort_key
from bench.stats.figures.curves import scale
from bench.stats.figures.style import MethodStyle, save, slug
from bench.stats.render import heading
from bench.stats.scores import STATS_STATUS, lower_is_better

log = logging.getLogger(__name__)
SIMILARITY, PERSONAL = "layer_similarity", "personal"
MAX_LAYER_LABELS = 60  # more layers than this are labelled by group (stage), not one by one
MAX_GROUPS = 24


def sweep_heatmaps(analysis: Analysis, style: MethodStyle, folder: Path) -> dict[Path, str]:
    """figures/heatmap_<sweep>/<context>: mean headline metric, methods x values (annotated)."""
    metric, paths = analysis.settings["metric"], {}
    k = scale(metric)
    for sweep in analysis.settings["sweeps"]:
        rows = analysis.setting_sweep_rows[sweep["name"]]
        if rows.empty:
            continue
        for context, group in rows.groupby("context", sort=False):
            values = sorted(group["value"].drop_duplicates(), key=sort_key)
            methods = [m for m in analysis.results.methods if m in set(group["method"])]
            grid = group.pivot_table(index="method", columns="value", values="mean", aggfunc="first").reindex(index=methods, columns=values) * k
            width = max(1.1 * len(values) + 3.2, 0.075 * len(context) + 2)  # room for the title
            fig, ax = plt.subplots(figsize=(width, 0.42 * len(methods) + 1.8))
            cmap = "viridis_r" if lower_is_better(metric, analysis.settings) else "viridis"
            sns.heatmap(grid, annot=True, fmt=".1f" if k == 100 else ".3f", cmap=cmap, ax=ax, cbar_kws={"label": axis_label(metric)},
                        linewidths=0.5, linecolor="white", annot_kws={"fontsize": 8})
            ax.set(xlabel=sweep["title"], ylabel="")
            ax.set_xticklabels([format_value(v) for v in values], rotation=0)
            for label in ax.get_yticklabels():
                label.set_color(style.color(label.get_text()))
                label.set_fontweight("bold")
            ax.set_title(f"{metric_name(metric)} by method and {sweep['title']}\n{context}", fontsize=9)
            seeds = group["n"].dropna()
            caption = (f"Ablation over {sweep['title']} ({context}): the mean over completed seeds ({int(seeds.min())}"
                       f"{'' if seeds.min() == seeds.max() else f' to {int(seeds.max())}'} per cell) of {metric_name(metric)} "
                       f"({scope_phrase(analysis.results, methods)}) for each method (rows) and value of {sweep['key']} (columns); "
                       f"empty: not run. Intervals are in tables/ablation_{sweep['name']}.")
            paths.update(save(fig, folder / f"heatmap_{sweep['name']}" / slug(context), analysis.settings, caption))
    return paths


def layer_similarity(analysis: Analysis, style: MethodStyle, folder: Path) -> dict[Path, str]:
    """figures/layer_similarity/<setting>__<method>: mean over seeds of each layer's mean
    similarity per round; personal layers (at the last round) starred, with their seed share."""
    diagnostics = read_diagnostics(analysis.results, (SIMILARITY, PERSONAL))
    if diagnostics.empty:
        log.info("no run recorded per-layer similarities (%s): skipping figures/layer_similarity", SIMILARITY)
        return {}
    runs = analysis.results.runs
    runs = runs[runs["status"] == STATS_STATUS][["study", "setting", "method", "run_id"]]
    data = diagnostics.merge(runs, on="run_id")
    paths = {}
    for (study, setting, method), group in data.groupby(["study", "setting", "method"], sort=False, observed=True):
        similarity = group[group["name"] == SIMILARITY].pivot_table(index="layer", columns="round", values="value", aggfunc="mean", observed=True)
        if similarity.empty:
            continue
        personal = group[group["name"] == PERSONAL]
        last = personal[personal["round"] == personal["round"].max()]
        share = last.groupby("layer", observed=True)["value"].mean().reindex(similarity.index).fillna(0)
        stem = folder / "layer_similarity" / f"{slug(heading(study, setting))}__{slug(method)}"
        paths.update(draw_layer_similarity(similarity, share, f"{method}: {heading(study, setting)}", group["run_id"].nunique(), stem, analysis))
    return paths


def layer_groups(names: list[str]) -> list[tuple[str, int, int]]:
    """(label, first, last) runs of consecutive layers sharing a dotted prefix, at the deepest
    prefix that gives at most MAX_GROUPS runs (the stages of a deep model: stem, layer1, ...,
    head); runs too short to hold a readable label are merged with their neighbours."""
    best = [("all layers", 0, len(names) - 1)]
    for depth in range(1, max((n.count(".") for n in names), default=0) + 1):
        runs: list[tuple[str, int, int]] = []
        for i, name in enumerate(names):
            prefix = ".".join(name.split(".")[:depth])
            if runs and runs[-1][0] == prefix:
                runs[-1] = (prefix, runs[-1][1], i)
            else:
                runs.append((prefix, i, i))
        if len(runs) > MAX_GROUPS:
            break
        best = runs
    return merge_short(best, max(1, len(names) // (2 * MAX_GROUPS)))


def merge_short(runs: list[tuple[str, int, int]], shortest: int) -> list[tuple[str, int, int]]:
    """Join consecutive runs shorter than `shortest` layers into one labelled 'first … last'."""
    merged: list[tuple[str, int, int]] = []
    for label, first, last in runs:
        previous = merged[-1] if merged else None
        if previous and last - first + 1 < shortest and previous[2] - previous[1] + 1 < shortest:
            start = previous[0].split(" … ")[0]
            merged[-1] = (f"{start} … {label}", previous[1], last)
        else:
            merged.append((label, first, last))
    return merged


def label_layers(ax: plt.Axes, names: list[str], share: pd.Series) -> str:
    """Layer names on the y axis, personal layers starred and bold; past MAX_LAYER_LABELS
    layers, one label per group (stage) with lines between groups. Returns how it labelled."""
    layers = len(names)
    if layers <= MAX_LAYER_LABELS:
        ax.set_yticks(np.arange(layers), [("★ " if s > 0 else "") + n for n, s in zip(names, share)], fontsize=max(5, 8 - layers // 20))
        for label, s in zip(ax.get_yticklabels(), share):
            label.set_fontweight("bold" if s > 0 else "normal")
        return "one row per layer"
    groups = layer_groups(names)
    for _, first, _ in groups[1:]:
        ax.axhline(first - 0.5, color="white", linewidth=0.6)
    personal = share.to_numpy() > 0
    labels = [f"{label} ({last - first + 1})" + (" ★" if personal[first:last + 1].any() else "") for label, first, last in groups]
    ax.set_yticks([(first + last) / 2 for _, first, last in groups], labels, fontsize=7)
    return f"{layers} layers in {len(groups)} groups of consecutive layers (layer count in brackets; ★: the group holds a personal layer)"


def draw_layer_similarity(similarity: pd.DataFrame, share: pd.Series, title: str, seeds: int, stem: Path, analysis: Analysis) -> dict[Path, str]:
    """Heatmap (layers x rounds), a strip with each layer's personal share, and their colour bars."""
    layers, rounds = similarity.shape
    fig, (ax, side, bar, gap, side_bar) = plt.subplots(1, 5, figsize=(min(7 + 0.16 * rounds, 17), min(2.6 + 0.17 * min(layers, MAX_LAYER_LABELS), 13)),
                                                       gridspec_kw={"width_ratios": [24, 1.4, 0.7, 2.6, 0.7], "wspace": 0.1})
    gap.axis("off")  # room for the first colour bar's label
    first, last = similarity.columns.min(), similarity.columns.max()
    image = ax.imshow(similarity.to_numpy(), aspect="auto", cmap="viridis", vmin=-1, vmax=1, interpolation="nearest",
                      extent=(first - 0.5, last + 0.5, layers - 0.5, -0.5))
    ax.grid(False)
    rows = label_layers(ax, [str(n) for n in similarity.index], share)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("round")
    strip = side.imshow(share.to_numpy()[:, None], aspect="auto", cmap="Oranges", vmin=0, vmax=1, interpolation="nearest")
    side.grid(False)
    side.set_xticks([0], ["personal"], rotation=90, fontsize=7)
    side.set_yticks([])
    fig.colorbar(image, cax=bar, label="mean cosine similarity of client updates")
    fig.colorbar(strip, cax=side_bar, label="personal: share of seeds")
    ax.set_title(f"{title}\nper-layer mean similarity, mean over {seeds} seed(s); ★ = personal layer", fontsize=9)
    caption = (f"Layer similarity, {title}: for every layer (rows: {rows}) and round (columns), the mean over the clients' pairs of the "
               f"cosine similarity of their updates of that layer, averaged over {seeds} completed seed(s) (-1 to 1). "
               f"Strip: the share of seeds in which the layer stays personal at the last round (0 to 1).")
    return save(fig, stem, analysis.settings, caption)
