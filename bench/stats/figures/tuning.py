"""Tuning figures: whether the trial budget sufficed (best validation score against trials spent)
and how each searched value moved the validation score (sensitivity)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import matplotlib.pyplot as plt
from matplotlib.ticker import MaxNLocator, NullFormatter
import numpy as np
import pandas as pd

from bench.stats.figures.style import PALETTE, figure_style, save, slug
from bench.stats.tuning import TuningReport, best_so_far


def block_name(row) -> str:
    return row["dataset"] if row["setting"] == "all" else f"{row['dataset']}, {row['setting']}"


def grid(count: int, width: float = 4.2, height: float = 3.2):
    cols = min(3, count)
    rows = math.ceil(count / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(width * cols, height * rows), squeeze=False)
    for ax in axes.flat[count:]:
        ax.set_visible(False)
    return fig, list(axes.flat)


def tuning_curves(report: TuningReport, lower: bool, out: Path, settings: dict) -> dict[Path, str]:
    """Per study: a panel per block, a line per method of the best validation score after n trials."""
    written = {}
    curves = best_so_far(report.trials, lower)
    for study, rows in curves.groupby("study", sort=False):
        blocks = rows[["dataset", "setting"]].drop_duplicates()
        methods = list(dict.fromkeys(rows["method"]))
        with figure_style():
            fig, axes = grid(len(blocks))
            for ax, (_, block) in zip(axes, blocks.iterrows()):
                mine = rows[(rows["dataset"] == block["dataset"]) & (rows["setting"] == block["setting"])]
                for i, method in enumerate(methods):
                    line = mine[mine["method"] == method]
                    ax.plot(line["spent"], line["best"], marker="o", ms=3, color=PALETTE[i % len(PALETTE)], label=method)
                ax.set(title=block_name(block), xlabel="trials spent", ylabel=f"best validation {report.metric}")
                ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            fig.tight_layout()
            fig.legend(*axes[0].get_legend_handles_labels(), loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=8)  # outside the panels
            caption = (f"Tuning curves of study {study}: per block, the best validation {report.metric} among each method's first n trials "
                       "(failed trials skipped). A curve still rising at the last trial says the budget did not suffice for that method.")
            written.update(save(fig, out / f"tuning_curves_{slug(study)}", settings, caption))
    return written


def sensitivity(report: TuningReport, out: Path, settings: dict) -> dict[Path, str]:
    """Per study and method with searched values: a panel per dimension, validation score against
    the trial's value, a colour per block; failed trials as crosses on the floor."""
    written = {}
    value_columns = [c for c in report.trials.columns if c.startswith("value:")]
    for (study, method), rows in report.trials.groupby(["study", "method"], sort=False):
        dims = [c for c in value_columns if rows[c].notna().any()]
        if not dims:
            continue
        log = json.loads(rows["log"].iloc[0])
        blocks = list(dict.fromkeys(rows.apply(block_name, axis=1)))
        floor = np.nanmin(rows["validation"].astype(float)) if rows["validation"].notna().any() else 0.0
        with figure_style():
            fig, axes = grid(len(dims), 3.8, 3.0)
            for ax, column in zip(axes, dims):
                key = column.removeprefix("value:")
                for i, block in enumerate(blocks):
                    mine = rows[(rows.apply(block_name, axis=1) == block) & rows[column].notna()]
                    ok = mine["validation"].notna()
                    ax.scatter(mine.loc[ok, column], mine.loc[ok, "validation"], s=18, color=PALETTE[i % len(PALETTE)], label=block)
                    ax.scatter(mine.loc[~ok, column], [floor] * int((~ok).sum()), marker="x", color=PALETTE[i % len(PALETTE)])
                if log.get(key) and pd.api.types.is_numeric_dtype(rows[column].dropna()):
                    ax.set_xscale("log")
                    ax.xaxis.set_minor_formatter(NullFormatter())
                ax.set(xlabel=key, ylabel=f"validation {report.metric}")
            axes[0].legend(fontsize=7)
            fig.tight_layout()
            caption = (f"Sensitivity of {method} in study {study}: the validation {report.metric} of every trial against each searched value "
                       "(a colour per block; crosses: trials that diverged or failed). The untuned trial 0 sets none of them and is not drawn.")
            written.update(save(fig, out / f"sensitivity_{slug(study)}_{slug(method)}", settings, caption))
    return written
