"""Line figures: convergence per setting, and sensitivity to a method's hyper-parameter."""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from bench.stats.analysis import Analysis
from bench.stats.collect import format_value, sort_key
from bench.stats.figures.style import MethodStyle, save, slug
from bench.stats.tables import heading, is_percent

OVERVIEW_PANELS = 6


def metric_label(metric: str) -> str:
    return metric.replace("_", " ") + (" (%)" if is_percent(metric) else "")


def scale(metric: str) -> float:
    return 100.0 if is_percent(metric) else 1.0


def draw_convergence(ax: plt.Axes, bands: pd.DataFrame, methods: list[str], style: MethodStyle, metric: str) -> None:
    """Mean over seeds per round with its bootstrap CI band, one line per method."""
    k = scale(metric)
    for method in methods:
        line = bands[bands["method"] == method].sort_values("round")
        if line.empty:
            continue
        every = max(1, len(line) // 8)
        ax.plot(line["round"], k * line["mean"], color=style.color(method), linestyle=style.dash(method), marker=style.marker(method),
                markevery=every, markersize=4, linewidth=1.5, label=method)
        ax.fill_between(line["round"], k * line["ci_low"], k * line["ci_high"], color=style.color(method), alpha=0.18, linewidth=0)
    ax.set_xlabel("round")
    ax.set_ylabel(metric_label(metric))


def convergence(analysis: Analysis, style: MethodStyle, folder: Path) -> list[Path]:
    """figures/convergence/<setting>: one figure per study and setting."""
    metric, paths, bands = analysis.settings["metric"], [], analysis.bands
    methods = analysis.results.methods
    for (study, setting), group in bands.groupby(["study", "setting"], sort=False):
        fig, ax = plt.subplots(figsize=(7, 4.2))
        draw_convergence(ax, group, methods, style, metric)
        ax.set_title(f"{heading(study, setting)}\nmean over seeds, {analysis.settings['confidence']:.0%} bootstrap CI", fontsize=10)
        ax.legend(fontsize=8, loc="center left", bbox_to_anchor=(1.01, 0.5), frameon=False)
        paths += save(fig, folder / "convergence" / slug(heading(study, setting)), analysis.settings)
    return paths


def convergence_overview(analysis: Analysis, style: MethodStyle, path: Path) -> list[Path]:
    """The report's convergence.png: the first settings side by side, one shared legend."""
    bands = analysis.bands
    settings_shown = bands[["study", "setting"]].drop_duplicates().head(OVERVIEW_PANELS)
    if settings_shown.empty:  # no completed run was ever evaluated
        return []
    columns = min(3, len(settings_shown))
    rows = math.ceil(len(settings_shown) / columns)
    fig, axes = plt.subplots(rows, columns, figsize=(5.2 * columns, 3.8 * rows), squeeze=False)
    for ax, (study, setting) in zip(axes.flat, settings_shown.itertuples(index=False)):
        draw_convergence(ax, bands[(bands["study"] == study) & (bands["setting"] == setting)], analysis.results.methods, style, analysis.settings["metric"])
        ax.set_title(heading(study, setting), fontsize=9)
    for ax in list(axes.flat)[len(settings_shown):]:
        ax.set_visible(False)
    legend = {label: handle for ax in axes.flat for handle, label in zip(*ax.get_legend_handles_labels())}
    handles, labels = list(legend.values()), list(legend)
    fig.legend(handles, labels, loc="upper center", ncol=min(len(labels), 4), fontsize=8, frameon=False, bbox_to_anchor=(0.5, 1.0 + 0.06 / rows))
    hidden = len(bands[["study", "setting"]].drop_duplicates()) - len(settings_shown)
    fig.suptitle(f"Convergence (mean over seeds, {analysis.settings['confidence']:.0%} bootstrap CI)" + (f"; {hidden} more settings in figures/convergence/" if hidden > 0 else ""),
                 y=1.0 + 0.14 / rows, fontsize=10)
    fig.tight_layout()
    return save(fig, path.with_suffix(""), {**analysis.settings, "figures": {**analysis.settings["figures"], "formats": ["png"]}})


def sensitivity(analysis: Analysis, style: MethodStyle, folder: Path) -> list[Path]:
    """figures/sensitivity_<method>_<hparam>: mean and CI per value, one panel per setting,
    the reference methods as dashed lines with their CI band."""
    metric, paths = analysis.settings["metric"], []
    k = scale(metric)
    summary = analysis.summary[analysis.summary["metric"] == metric]
    for (name, hparam), rows in analysis.hparam_sweep_rows.items():
        panels = rows.groupby(["study", "setting", "fixed"], sort=False)
        columns = min(2, panels.ngroups)
        fig, axes = plt.subplots(math.ceil(panels.ngroups / columns), columns, figsize=(7.5 * columns, 3.6 * math.ceil(panels.ngroups / columns)), squeeze=False)
        for ax, ((study, setting, fixed), panel) in zip(axes.flat, panels):
            panel = panel.assign(order=panel["value"].map(sort_key)).sort_values("order")
            x = np.arange(len(panel))
            ax.plot(x, k * panel["mean"], color="#333333", linewidth=1, zorder=1)
            for xi, row in zip(x, panel.itertuples()):
                ax.errorbar(xi, k * row.mean, yerr=[[k * (row.mean - row.ci_low)], [k * (row.ci_high - row.mean)]] if pd.notna(row.ci_low) else None,
                            color=style.color(row.method), marker=style.marker(row.method), markersize=7, capsize=3, zorder=2, label=row.method)
            for ref in analysis.references:
                line = summary[(summary["study"] == study) & (summary["setting"] == setting) & (summary["method"] == ref)]
                if len(line):
                    ref_row = line.iloc[0]
                    ax.axhline(k * ref_row["mean"], color=style.color(ref), linestyle="--", linewidth=1.2, label=ref)
                    if pd.notna(ref_row["ci_low"]):
                        ax.axhspan(k * ref_row["ci_low"], k * ref_row["ci_high"], color=style.color(ref), alpha=0.12, linewidth=0)
            ax.set_xticks(x, [format_value(v) for v in panel["value"]])
            ax.set(xlabel=hparam, ylabel=metric_label(metric))
            ax.set_title(heading(study, setting) + (f"\n{fixed}" if fixed else ""), fontsize=9)
            ax.legend(fontsize=7, frameon=False, loc="center left", bbox_to_anchor=(1.01, 0.5))
        for ax in list(axes.flat)[panels.ngroups:]:
            ax.set_visible(False)
        fig.suptitle(f"Sensitivity of {name} to {hparam}", fontsize=11)
        fig.tight_layout()
        paths += save(fig, folder / f"sensitivity_{name}_{hparam}", analysis.settings)
    return paths
