"""Line figures: convergence per setting, and sensitivity to a method's hyper-parameter."""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.lines import Line2D
from matplotlib.patches import Patch
from matplotlib.ticker import MaxNLocator

from bench.stats.analysis import Analysis
from bench.stats.captions import axis_label, coinciding, coinciding_note, family_name, headline_scopes, interval_phrase, listing, metric_name, scope_phrase
from bench.stats.collect import format_value, sort_key
from bench.stats.figures.style import DASHES, MethodStyle, save, slug
from bench.stats.render import heading, is_percent

OVERVIEW_PANELS = 6
LINE_WIDTH_SHARE = 0.01  # curves closer than this share of the axis range look like one line


def scale(metric: str) -> float:
    return 100.0 if is_percent(metric) else 1.0


def draw_convergence(ax: plt.Axes, bands: pd.DataFrame, methods: list[str], style: MethodStyle, metric: str) -> tuple[list[list[str]], list]:
    """Mean over seeds per round, one line per method, its CI band where one was computed.
    Methods whose curves coincide get their own dash and staggered markers, and the legend
    says which they coincide with. Returns (coinciding groups, ci_method of every band drawn)."""
    k = scale(metric)
    lines = {m: bands[bands["method"] == m].sort_values("round") for m in methods}
    lines = {m: line for m, line in lines.items() if len(line)}
    means = {m: (k * line.set_index("round")["mean"]) for m, line in lines.items()}
    span = max((s.max() for s in means.values()), default=1) - min((s.min() for s in means.values()), default=0)
    groups = coinciding(means, LINE_WIDTH_SHARE * max(span, 1e-12))
    place = {m: (g, i) for g in groups for i, m in enumerate(g)}
    drawn = []
    for method, line in lines.items():
        every = max(1, len(line) // 8)
        group, i = place.get(method, ([method], 0))
        label = method + (f" (≈ {group[0]})" if i else "")
        ax.plot(line["round"], k * line["mean"], color=style.color(method), linestyle=DASHES[i % len(DASHES)] if i else style.dash(method),
                marker=style.marker(method), markevery=(i * every // len(group), every), markersize=4, linewidth=1.5, label=label)
        band = line.dropna(subset=["ci_low", "ci_high"])
        if len(band):
            ax.fill_between(band["round"], k * band["ci_low"], k * band["ci_high"], color=style.color(method), alpha=0.18, linewidth=0)
            drawn += band["ci_method"].tolist()
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("round")
    ax.set_ylabel(axis_label(metric))
    return groups, drawn


def convergence_caption(analysis: Analysis, title: str, bands: pd.DataFrame, groups: list[list[str]], drawn: list) -> str:
    seeds = bands.groupby("method", observed=True)["n"].max()
    seeds = seeds.reindex([m for m in analysis.results.methods if m in seeds.index])
    counted = f"{int(seeds.min())}" if seeds.min() == seeds.max() else f"{int(seeds.min())} to {int(seeds.max())}"
    shaded = (f" Shaded: the {interval_phrase(drawn, analysis.settings['confidence'])} of the mean at each round." if drawn
              else " No bands: each method has a single completed seed.")
    return (f"{title}: {metric_name(analysis.settings['metric'])} per communication round of {listing(seeds.index)} "
            f"({scope_phrase(analysis.results, seeds.index)}); lines: the mean over {counted} completed seeds.{shaded}"
            f"{coinciding_note(groups)}")


def convergence(analysis: Analysis, style: MethodStyle, folder: Path) -> dict[Path, str]:
    """figures/convergence/<setting>: one figure per study and setting."""
    metric, paths, bands = analysis.settings["metric"], {}, analysis.bands
    methods = analysis.results.methods
    for (study, setting), group in bands.groupby(["study", "setting"], sort=False):
        fig, ax = plt.subplots(figsize=(7, 4.2))
        groups, drawn = draw_convergence(ax, group, methods, style, metric)
        band = f", shaded: {analysis.settings['confidence']:.0%} bootstrap CI" if drawn else ""
        ax.set_title(f"{heading(study, setting)}\nmean over seeds{band}", fontsize=10)
        ax.legend(fontsize=8, loc="center left", bbox_to_anchor=(1.01, 0.5), frameon=False)
        caption = convergence_caption(analysis, f"Convergence, {heading(study, setting)}", group, groups, drawn)
        paths.update(save(fig, folder / "convergence" / slug(heading(study, setting)), analysis.settings, caption))
    return paths


def convergence_overview(analysis: Analysis, style: MethodStyle, path: Path) -> dict[Path, str]:
    """The report's convergence.png: the first settings side by side, one shared legend (a
    figure saying so when no completed run was ever evaluated)."""
    bands = analysis.bands
    every_setting = bands[["study", "setting"]].drop_duplicates()
    settings_shown = every_setting.head(OVERVIEW_PANELS)
    png = {**analysis.settings, "figures": {**analysis.settings["figures"], "formats": ["png"]}}
    if settings_shown.empty:
        fig, ax = plt.subplots(figsize=(6, 1.2))
        ax.axis("off")
        ax.text(0.5, 0.5, "No completed run has an evaluated round: nothing to plot (run counts: tables/runs).", ha="center", va="center")
        return save(fig, path.with_suffix(""), png, "Convergence: no completed run has an evaluated round, so there is no curve to draw.")
    columns = min(3, len(settings_shown))
    rows = math.ceil(len(settings_shown) / columns)
    fig, axes = plt.subplots(rows, columns, figsize=(5.2 * columns, 3.8 * rows), squeeze=False)
    groups, drawn = [], []
    for ax, (study, setting) in zip(axes.flat, settings_shown.itertuples(index=False)):
        panel = draw_convergence(ax, bands[(bands["study"] == study) & (bands["setting"] == setting)], analysis.results.methods, style, analysis.settings["metric"])
        groups += [g for g in panel[0] if g not in groups]
        drawn += panel[1]
        ax.set_title(heading(study, setting), fontsize=9)
    for ax in list(axes.flat)[len(settings_shown):]:
        ax.set_visible(False)
    legend = {label.split(" (≈ ")[0]: handle for ax in axes.flat for handle, label in zip(*ax.get_legend_handles_labels())}
    hidden = len(every_setting) - len(settings_shown)
    more = f"; {hidden} more settings in figures/convergence/" if hidden > 0 else ""
    band = f", shaded: {analysis.settings['confidence']:.0%} bootstrap CI" if drawn else ""
    fig.tight_layout()
    fig.legend(list(legend.values()), list(legend), loc="lower center", ncol=min(len(legend), 4), fontsize=8, frameon=False,
               bbox_to_anchor=(0.5, 1.0), title=f"Convergence (mean over seeds{band}){more}", title_fontsize=10)
    shown = f"the first {len(settings_shown)} of {len(every_setting)} settings (every one in figures/convergence/)" if hidden > 0 else "every setting"
    caption = convergence_caption(analysis, f"Convergence at a glance, {shown}", bands.merge(settings_shown), groups, drawn)
    return save(fig, path.with_suffix(""), png, caption)


def reference_lines(ax: plt.Axes, summary: pd.DataFrame, references: list[str], style: MethodStyle, k: float, confidence: float) -> tuple[list, list]:
    """Each reference's mean as a horizontal line (a dash of its own), its CI as a band; returns
    the legend handles of the bands and the ci_method of each band drawn."""
    handles, drawn = [], []
    for i, ref in enumerate(references):
        line = summary[summary["method"] == ref]
        if line.empty:
            continue
        row = line.iloc[0]
        ax.axhline(k * row["mean"], color=style.color(ref), linestyle=DASHES[1 + i % (len(DASHES) - 1)], linewidth=1.3, label=f"{ref} (mean)")
        if pd.notna(row["ci_low"]):
            ax.axhspan(k * row["ci_low"], k * row["ci_high"], color=style.color(ref), alpha=0.12, linewidth=0)
            handles.append(Patch(color=style.color(ref), alpha=0.25, label=f"{ref} ({confidence:.0%} CI)"))
            drawn.append(row["ci_method"])
    return handles, drawn


SCOPE_LINES = {"global": ("-", "global model"), "personal": ("--", "mean of clients' own models")}


def join_same_scope(ax: plt.Axes, x: np.ndarray, y: np.ndarray, scope: np.ndarray) -> None:
    """Join neighbouring values scored on the same model; a change of scored model (FedLSC's
    Per = 0 is the global model, Per > 0 the clients' own) breaks the line, so two scores that are
    not one curve are never drawn as one."""
    runs = np.split(np.arange(len(x)), np.flatnonzero(scope[1:] != scope[:-1]) + 1)
    for run in runs:
        ax.plot(x[run], y[run], color="#333333", linewidth=1, zorder=1, linestyle=SCOPE_LINES.get(scope[run[0]], ("-",))[0])


def scope_handles(scopes: set[str]) -> list[Line2D]:
    return [Line2D([], [], color="#333333", linestyle=dash, marker="o", markerfacecolor="#333333" if scope == "global" else "white", label=label)
            for scope, (dash, label) in SCOPE_LINES.items() if scope in scopes]


def sensitivity(analysis: Analysis, style: MethodStyle, folder: Path) -> dict[Path, str]:
    """figures/sensitivity_<method>_<hparam>: mean and CI per value, one panel per setting,
    the reference methods as dashed lines with their CI band."""
    metric, paths, confidence = analysis.settings["metric"], {}, analysis.settings["confidence"]
    k = scale(metric)
    summary = analysis.summary[analysis.summary["metric"] == metric]
    scopes = headline_scopes(analysis.results)
    for (name, hparam), rows in analysis.hparam_sweep_rows.items():
        family = family_name(name, analysis.settings["paper_names"])
        panels = rows.groupby(["study", "setting", "fixed"], sort=False)
        columns = min(2, panels.ngroups)
        fig, axes = plt.subplots(math.ceil(panels.ngroups / columns), columns, figsize=(7.5 * columns, 3.6 * math.ceil(panels.ngroups / columns)), squeeze=False)
        bars, bands, mixed = [], [], False
        for ax, ((study, setting, fixed), panel) in zip(axes.flat, panels):
            panel = panel.assign(order=panel["value"].map(sort_key)).sort_values("order")
            x = np.arange(len(panel))
            scope = panel["method"].map(scopes).to_numpy()
            join_same_scope(ax, x, k * panel["mean"].to_numpy(), scope)
            for xi, row, personal in zip(x, panel.itertuples(), scope == "personal"):
                ci = pd.notna(row.ci_low)
                ax.errorbar(xi, k * row.mean, yerr=[[k * (row.mean - row.ci_low)], [k * (row.ci_high - row.mean)]] if ci else None,
                            color=style.color(row.method), marker=style.marker(row.method), markersize=7, capsize=3, zorder=2, label=row.method,
                            markerfacecolor="white" if personal else style.color(row.method))
                bars.append(row.ci_method)
            handles, drawn = reference_lines(ax, summary[(summary["study"] == study) & (summary["setting"] == setting)], analysis.references, style, k, confidence)
            handles += scope_handles(set(scope)) if len(set(scope)) > 1 else []
            mixed |= len(set(scope)) > 1
            bands += drawn
            ax.set_xticks(x, [format_value(v) for v in panel["value"]])
            ax.set(xlabel=hparam, ylabel=axis_label(metric))
            ax.set_title(heading(study, setting) + (f"\n{family} with {fixed}" if fixed else ""), fontsize=9)
            ax.legend(handles=ax.get_legend_handles_labels()[0] + handles, fontsize=7, frameon=False, loc="center left", bbox_to_anchor=(1.01, 0.5))
        for ax in list(axes.flat)[panels.ngroups:]:
            ax.set_visible(False)
        fig.suptitle(f"Sensitivity of {family} to {hparam} ({metric_name(metric)})", fontsize=11)
        fig.tight_layout()
        whiskers = f"; error bars: the {interval_phrase(bars, confidence)}" if any(m != "n<2" for m in bars) else "; no error bars (one seed per value)"
        refs = (f" Dashed: the mean of {listing(r for r in analysis.references if r in set(summary['method']))} in the same setting"
                + (f", shaded: the {interval_phrase(bands, confidence)} of each." if bands else ".")) if analysis.references else ""
        caption = (f"Sensitivity of {family} to {hparam}: {metric_name(metric)} ({scope_phrase(analysis.results, rows['method'])}) at each value of "
                   f"{hparam}, one panel per setting and per combination of the other hyper-parameters (under each panel title); markers: the mean "
                   f"over completed seeds{whiskers}.{refs}"
                   + (" The scored model changes along the axis: filled markers and the solid line are the global model, open markers "
                      "and the dashed line the mean over clients of their own models; the line is not drawn across the change." if mixed else ""))
        paths.update(save(fig, folder / f"sensitivity_{slug(name)}_{slug(hparam)}", analysis.settings, caption))
    return paths
