"""Per-client label distribution of every partition (from the class counts in run.json).

A partition is fixed by the setting (dataset, scheme, beta, clients, ...) and the seed, and is
the same for every method, so one figure per setting shows a panel per seed: a stacked bar of
class counts per client.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import seaborn as sns

from bench.stats.analysis import Analysis
from bench.stats.captions import listing
from bench.stats.figures.style import MethodStyle, save, slug

MAX_SEEDS_SHOWN = 6
# Paul Tol's "light" and "pale" schemes: light tones, told apart by colour-blind readers, and
# unlike the saturated method colours (style.PALETTE), so a class is never read as a method.
CLASS_PALETTE = ["#77AADD", "#EE8866", "#EEDD88", "#FFAABB", "#99DDFF", "#44BB99", "#BBCC33", "#AAAA00", "#DDDDDD",
                 "#BBCCEE", "#CCEEFF", "#CCDDAA", "#EEEEBB", "#FFCCCC"]


def class_colors(count: int) -> list:
    """One light colour per class (CLASS_PALETTE), distinct light hues beyond its 14."""
    return CLASS_PALETTE[:count] if count <= len(CLASS_PALETTE) else sns.husl_palette(count, l=0.8)


def partitions(analysis: Analysis, style: MethodStyle, folder: Path) -> dict[Path, str]:
    seeds = analysis.results.runs.groupby("block", sort=False)["seed"].nunique()
    runs = analysis.results.runs.drop_duplicates(["block", "seed"])
    runs = runs[runs["class_counts"].map(lambda c: bool(c) and all(x is not None for x in c))]
    paths = {}
    for block, group in runs.groupby("block", sort=False):
        group = group.sort_values("seed").head(MAX_SEEDS_SHOWN)
        classes = group["classes"].iloc[0] or [str(i) for i in range(len(group["class_counts"].iloc[0][0]))]
        colors = class_colors(len(classes))
        fig, axes = plt.subplots(1, len(group), figsize=(2.2 + 2.0 * len(group), 3.2), squeeze=False, sharey=True)
        for ax, row in zip(axes[0], group.itertuples()):
            counts = np.array(row.class_counts, dtype=float)
            bottom = np.zeros(len(counts))
            for c, name in enumerate(classes):
                ax.bar(np.arange(len(counts)), counts[:, c], bottom=bottom, color=colors[c], label=name, width=0.8, edgecolor="#555555", linewidth=0.3)
                bottom += counts[:, c]
            ax.set_xticks(np.arange(len(counts)), [str(i) for i in range(len(counts))])
            ax.set(title=f"seed {row.seed}", xlabel="client")
        axes[0][0].set_ylabel("training samples")
        axes[0][-1].legend(title="class", fontsize=7, title_fontsize=8, loc="center left", bbox_to_anchor=(1.02, 0.5), frameon=False)
        more = seeds[block] - len(group)
        fig.suptitle(f"Label distribution per client: {block}" + (f" (first {len(group)} seeds of {len(group) + more})" if more > 0 else ""), fontsize=10)
        fig.tight_layout()
        shown = f"seeds {listing(map(str, group['seed']))}" + (f" (the first {len(group)} of {len(group) + more})" if more > 0 else "")
        caption = (f"Partitions, {block}: the training images of each client by class (stacked bars), one panel per seed ({shown}); "
                   "a partition depends on the setting and the seed only, so every method trains on these clients.")
        paths.update(save(fig, folder / "partitions" / slug(block), analysis.settings, caption))
    return paths
