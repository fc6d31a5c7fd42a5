"""Privacy-utility curves: the headline metric against epsilon at each privacy level (client-level
DP-FedAvg, record-level DP-SGD), with the same setting's non-private runs drawn as epsilon = infinity."""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd

from bench.stats.analysis import Analysis
from bench.stats.captions import axis_label, metric_name
from bench.stats.collect import Results, setting_part, short_names
from bench.stats.figures.curves import scale
from bench.stats.figures.style import MethodStyle, save, slug
from bench.stats.selection import rule_text
from bench.stats.summaries import summary_metrics
from bench.stats.sweeps import setting_table

LEVELS = {"client_dp": "client-level DP-FedAvg", "sample_dp": "record-level DP-SGD"}
INFINITY = 2.0**5  # where epsilon = infinity is drawn on the log2 axis


def level_of(row: pd.Series) -> tuple[str | None, float]:
    """(the privacy level of a setting, its target epsilon); (None, inf) for a non-private one."""
    for level in LEVELS:
        value = row.get(f"privacy.{level}.target_epsilon")
        if value is not None and not pd.isna(value):
            return level, float(value)
    return None, math.inf


def privacy_rows(results: Results, summary: pd.DataFrame, metric: str) -> pd.DataFrame:
    """Summary rows of `metric` with each setting's `level`, `epsilon` (its target; inf without
    privacy) and `context` (its other setting fields), for contexts that have private settings."""
    settings = setting_table(results)
    if not any(f"privacy.{level}.target_epsilon" in settings for level in LEVELS):
        return pd.DataFrame()
    others = [c for c in results.setting_columns if not c.startswith("privacy.")]
    names = short_names(results.setting_columns)
    settings["context"] = [", ".join(p for p in (setting_part(c, row[c], names) for c in others) if p) or "all runs" for _, row in settings.iterrows()]
    settings[["level", "epsilon"]] = [level_of(row) for _, row in settings.iterrows()]
    settings = settings[settings.groupby("context")["level"].transform(lambda levels: levels.notna().any())]
    rows = summary[summary["metric"] == metric].drop(columns=results.setting_columns, errors="ignore")
    return settings[["study", "setting", "setting_order", "context", "level", "epsilon"]].merge(rows, on=["study", "setting", "setting_order"])


def deltas(results: Results) -> str:
    """The deltas the private runs were accounted at, as text."""
    values = sorted({v for level in LEVELS for v in results.runs.get(f"privacy.{level}.delta", pd.Series(dtype=float)).dropna()})
    return ", ".join(f"{v:g}" for v in values) or "?"


REALISED = {"client_dp": "client_epsilon", "sample_dp": "record_epsilon"}


def overspent(results: Results) -> str:
    """The runs whose realised epsilon (their last privacy row; record level: the largest client's)
    passed the target by more than 1 %, as text ('none' when every run kept to its target)."""
    lines = []
    last = results.metrics[results.metrics["scope"] == "privacy"].sort_values("round").groupby(["run_id", "metric"], observed=True)["value"].last()
    for level, metric in REALISED.items():
        column = f"privacy.{level}.target_epsilon"
        if column not in results.runs:
            continue
        targets = results.runs[results.runs[column].notna()].drop_duplicates("run_id").set_index("run_id")[column].astype(float)
        for run_id, target in targets.items():
            realised = last.get((run_id, metric))
            if realised is not None and realised > 1.01 * target:
                lines.append(f"{run_id} ({realised:.3g} for target {target:g})")
    return "; ".join(lines) or "none"


def privacy_utility(analysis: Analysis, style: MethodStyle, folder: Path) -> dict[Path, str]:
    """figures/privacy_utility/<context>: per level a panel of the headline metric against epsilon
    (mean over seeds with its interval), non-private runs at the right end (infinity); the same for
    each other summarised metric (stats.table_metrics) as <context>_<metric>, since a privacy cost
    can show in one metric (e.g. AUROC) while another sits at chance."""
    paths = {}
    for metric in summary_metrics(analysis.settings):
        rows = privacy_rows(analysis.results, analysis.summary, metric)
        for context, group in ([] if rows.empty else rows.groupby("context", sort=False)):
            stem = slug(context if metric == analysis.settings["metric"] else f"{context} {metric}")
            paths.update(save(privacy_figure(analysis, style, group, metric, context), folder / "privacy_utility" / stem,
                              analysis.settings, privacy_caption(analysis, metric, context)))
    return paths


def privacy_figure(analysis: Analysis, style: MethodStyle, group: pd.DataFrame, metric: str, context: str) -> plt.Figure:
    k = scale(metric)
    levels = [level for level in LEVELS if (group["level"] == level).any()]
    fig, axes = plt.subplots(1, len(levels), figsize=(4.2 * len(levels) + 1.8, 3.8), sharey=True, squeeze=False)
    for ax, level in zip(axes[0], levels):
        points = group[(group["level"] == level) | group["level"].isna()]
        for method in [m for m in analysis.results.methods if m in set(points["method"])]:
            line = points[points["method"] == method].assign(x=lambda d: d["epsilon"].clip(upper=INFINITY)).sort_values("x")
            error = [k * (line["mean"] - line["ci_low"]), k * (line["ci_high"] - line["mean"])] if line["ci_low"].notna().all() else None
            ax.errorbar(line["x"], k * line["mean"], yerr=error, color=style.color(method), marker=style.marker(method), capsize=3, label=method)
        ax.set_xscale("log", base=2)
        ticks = sorted(set(points["epsilon"].clip(upper=INFINITY)))
        ax.set_xticks(ticks, ["∞" if t == INFINITY else f"{t:g}" for t in ticks])
        ax.set_xlabel("ε at δ")
        ax.set_title(LEVELS[level], fontsize=9)
    axes[0][0].set_ylabel(axis_label(metric))
    axes[0][-1].legend(fontsize=8, frameon=False, loc="center left", bbox_to_anchor=(1.01, 0.5))
    fig.suptitle(f"{context}; mean over seeds, {analysis.settings['confidence']:.0%} interval", fontsize=9)
    fig.tight_layout(rect=(0, 0, 1, 0.94))
    return fig


def privacy_caption(analysis: Analysis, metric: str, context: str) -> str:
    return (f"Privacy-utility, {context}: {metric_name(metric)} (scored at {rule_text(analysis.settings)}) against the target ε each run's "
            f"noise was solved for before round 1 over the releases the method declares (the realised ε is in metrics scope privacy; "
            f"runs whose realised ε passed the target by more than 1 %: {overspent(analysis.results)}), "
            f"at δ = {deltas(analysis.results)}; ∞: the same setting without privacy, the same seeds (record-level runs train the model with "
            "BatchNorm replaced by GroupNorm; the ∞ runs keep the configured model). Accountant: Opacus's RDP accountant "
            "for the Poisson-subsampled Gaussian (Balle et al. 2020's conversion to ε). Sampling: client level, the clients drawn per "
            "round over all clients (1 = every client, no amplification claimed); record level, the batch size over each client's "
            "training images, its shuffled fixed-size batches accounted as Poisson samples (the usual approximation). Mean over seeds "
            f"with {analysis.settings['confidence']:.0%} intervals where there are several seeds.")
