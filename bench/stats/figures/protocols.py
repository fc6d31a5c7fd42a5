"""Figures of the evaluation protocols: every client's score per method (fairness), score
against local epochs at a fixed budget (communication frequency), and in-federation against
held-out scores (leave-one-centre-out)."""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np

from bench.stats.analysis import Analysis
from bench.stats.fairness import fairness_metric
from bench.stats.captions import axis_label, metric_name
from bench.stats.figures.curves import scale
from bench.stats.figures.style import MethodStyle, save, slug
from bench.stats.protocols import unseen_rows
from bench.stats.scores import STATS_STATUS
from bench.stats.selection import rule_text
from bench.stats.render import heading


def client_dots(analysis: Analysis, style: MethodStyle, folder: Path) -> dict[Path, str]:
    """figures/fairness/<setting>: per method every client of every seed as a dot (its local
    test score at its selected round), the mean over them as a bar."""
    metric, paths = fairness_metric(analysis.settings), {}
    k = scale(metric)
    runs = analysis.results.runs[analysis.results.runs["status"] == STATS_STATUS][["study", "setting", "method", "run_id"]]
    dots = runs.merge(analysis.clients, on="run_id")
    for (study, setting), group in dots.groupby(["study", "setting"], sort=False):
        methods = [m for m in analysis.results.methods if m in set(group["method"])]
        fig, ax = plt.subplots(figsize=(1.1 * len(methods) + 2.5, 4))
        for x, method in enumerate(methods):
            values = k * group.loc[group["method"] == method, "value"].to_numpy()
            jitter = np.linspace(-0.22, 0.22, len(values)) if len(values) > 1 else np.zeros(1)
            ax.scatter(x + jitter, values, color=style.color(method), s=14, alpha=0.8, zorder=3)
            ax.hlines(values.mean(), x - 0.3, x + 0.3, color="black", linewidth=1.5, zorder=4)
        ax.set_xticks(range(len(methods)), methods, rotation=20, ha="right")
        ax.set_ylabel(f"{axis_label(metric)}, each client's local test split")
        ax.set_title(f"{heading(study, setting)}\nevery client of every seed a dot; bar: mean", fontsize=9)
        caption = (f"Fairness across clients, {heading(study, setting)}: {metric_name(metric)} of every client of every seed on its own "
                   f"local test split (the global model for global methods, each client's own model for personalised ones), scored at "
                   f"{rule_text(analysis.settings)}; a dot per client and seed, the bar the mean over them.")
        paths.update(save(fig, folder / "fairness" / slug(heading(study, setting)), analysis.settings, caption))
    return paths


def frequency_curves(analysis: Analysis, style: MethodStyle, folder: Path) -> dict[Path, str]:
    """figures/communication_frequency/<context>: mean score and CI against local epochs E."""
    rows, metric, paths = analysis.frequency_rows, analysis.settings["metric"], {}
    if rows.empty:
        return paths
    k = scale(metric)
    for context, group in rows.groupby("context", sort=False):
        fig, ax = plt.subplots(figsize=(6.5, 4))
        for method in [m for m in analysis.results.methods if m in set(group["method"])]:
            line = group[group["method"] == method].sort_values("value")
            error = [k * (line["mean"] - line["ci_low"]), k * (line["ci_high"] - line["mean"])] if line["ci_low"].notna().all() else None
            ax.errorbar(line["value"], k * line["mean"], yerr=error, color=style.color(method), marker=style.marker(method), capsize=3, label=method)
        ax.set_xscale("log", base=2)
        values = sorted(group["value"].unique())
        ax.set_xticks(values, [f"{v:g}" for v in values])
        ax.set(xlabel="local epochs E per round (rounds = budget / E)", ylabel=axis_label(metric))
        ax.set_title(f"{context}\nmean over seeds, {analysis.settings['confidence']:.0%} bootstrap CI", fontsize=9)
        ax.legend(fontsize=8, frameon=False, loc="center left", bbox_to_anchor=(1.01, 0.5))
        caption = (f"Communication frequency at a fixed budget, {context}: {metric_name(metric)} against the local epochs E per round, "
                   f"with rounds = budget / E (the same total local training), scored at {rule_text(analysis.settings)}; mean over seeds "
                   f"with {analysis.settings['confidence']:.0%} bootstrap intervals where there are several seeds.")
        paths.update(save(fig, folder / "communication_frequency" / slug(context), analysis.settings, caption))
    return paths


def unseen_scatter(analysis: Analysis, style: MethodStyle, folder: Path) -> dict[Path, str]:
    """figures/leave_one_centre_out/<context>: in-federation against held-out score, one dot per
    method and held-out centre (mean over seeds)."""
    metric, paths = fairness_metric(analysis.settings), {}
    unseen, inside = unseen_rows(analysis, "heldout"), unseen_rows(analysis, "in_federation")
    if unseen.empty or inside.empty:
        return paths
    k = scale(metric)
    cells = unseen.merge(inside, on=["study", "context", "value", "method"], suffixes=("_heldout", "_inside"))
    for context, group in cells.groupby("context", sort=False):
        fig, ax = plt.subplots(figsize=(6.5, 4.6))
        for method, points in group.groupby("method", sort=False):
            ax.scatter(k * points["mean_inside"], k * points["mean_heldout"], color=style.color(method), marker=style.marker(method), s=30, label=method)
            for _, p in points.iterrows():
                ax.annotate(str(p["value"]), (k * p["mean_inside"], k * p["mean_heldout"]), fontsize=6, xytext=(3, 2), textcoords="offset points")
        low = k * np.nanmin([group["mean_inside"].min(), group["mean_heldout"].min()])
        high = k * np.nanmax([group["mean_inside"].max(), group["mean_heldout"].max()])
        pad = 0.05 * (high - low) if math.isfinite(high - low) and high > low else 1
        ax.plot([low - pad, high + pad], [low - pad, high + pad], color="#999999", linestyle=":", linewidth=1)
        ax.set(xlabel=f"in-federation {axis_label(metric)} (mean over the training centres)", ylabel=f"held-out centre {axis_label(metric)}")
        ax.set_title(f"{context}\nmean over seeds; scored at {rule_text(analysis.settings).split(' (')[0]}", fontsize=8)
        ax.legend(fontsize=8, frameon=False, loc="center left", bbox_to_anchor=(1.01, 0.5))
        caption = (f"Unseen centres, {context}: for each method and held-out centre (labelled), the in-federation "
                   f"{metric_name(metric)} (mean over the training centres' local test splits) against the score on the held-out "
                   f"centre's test split, means over seeds, scored at {rule_text(analysis.settings)}; dotted: equal scores.")
        paths.update(save(fig, folder / "leave_one_centre_out" / slug(context), analysis.settings, caption))
    return paths
