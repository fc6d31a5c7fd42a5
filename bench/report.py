"""The demo report: a results table and a convergence plot from a folder of runs."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402

from bench.collect import headline_metrics, load_runs  # noqa: E402
from bench.errors import UserError  # noqa: E402
from bench.io import atomic_path, write_csv, write_text  # noqa: E402

TABLE_METRICS = ("balanced_accuracy", "accuracy", "f1")


def final_metrics(runs: pd.DataFrame, metrics: pd.DataFrame) -> pd.DataFrame:
    """One row per run: its headline metrics at the last evaluated round."""
    scoped = headline_metrics(runs, metrics)
    last = scoped.groupby("run_id")["round"].transform("max")
    final = scoped[scoped["round"] == last].pivot_table(index="run_id", columns="metric", values="value")
    final = final.reindex(columns=sorted(set(final.columns) | set(TABLE_METRICS)))  # runs that never reached an evaluation
    return runs.set_index("run_id").join(final).reset_index()


def results_table(final: pd.DataFrame) -> pd.DataFrame:
    """Per dataset and method: mean and standard deviation over seeds, and the run statuses."""
    groups = final.groupby(["data.name", "method"], sort=True)
    table = groups[list(TABLE_METRICS)].agg(["mean", "std"])
    table.columns = [f"{m} {stat}" for m, stat in table.columns]
    table["seeds"] = groups["seed"].nunique()
    table["statuses"] = groups["status"].agg(lambda s: ", ".join(f"{k} {v}" for k, v in s.value_counts().items()))
    return table.reset_index().sort_values(["data.name", f"{TABLE_METRICS[0]} mean"], ascending=[True, False])


def markdown(table: pd.DataFrame) -> str:
    lines = ["| dataset | method | " + " | ".join(f"{m} (mean ± sd)" for m in TABLE_METRICS) + " | seeds | runs |", "|" + "---|" * (len(TABLE_METRICS) + 4)]
    for _, row in table.iterrows():
        cells = [f"{row[f'{m} mean']:.3f} ± {0 if pd.isna(row[f'{m} std']) else row[f'{m} std']:.3f}" for m in TABLE_METRICS]
        lines.append(f"| {row['data.name']} | {row['method']} | " + " | ".join(cells) + f" | {row['seeds']} | {row['statuses']} |")
    return "\n".join(lines) + "\n"


def convergence_plot(runs: pd.DataFrame, metrics: pd.DataFrame, path: Path) -> None:
    scoped = headline_metrics(runs, metrics)
    curves = scoped[scoped["metric"] == TABLE_METRICS[0]].merge(runs[["run_id", "method", "data.name"]], on="run_id")
    datasets = sorted(curves["data.name"].unique())
    fig, axes = plt.subplots(1, len(datasets), figsize=(6 * len(datasets), 4), squeeze=False)
    for ax, dataset in zip(axes[0], datasets):
        sns.lineplot(data=curves[curves["data.name"] == dataset], x="round", y="value", hue="method", errorbar=("ci", 95), ax=ax, palette="colorblind")
        ax.set(title=f"{dataset}: headline balanced accuracy (mean, 95% CI over seeds)", ylabel="balanced accuracy")
        ax.legend(fontsize=8)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=120, format="png")
    plt.close(fig)


def write_demo_report(source: Path | list[Path], out: Path) -> list[Path]:
    runs, metrics, _ = load_runs(source)
    if runs.empty:
        raise UserError(f"no finished runs in {source}; run `fedrank run` or `snakemake --cores all` first")
    final = final_metrics(runs, metrics)
    table = results_table(final)
    paths = [out / "results.csv", out / "results.md"]
    write_csv(paths[0], table)
    write_text(paths[1], markdown(table))
    if final[list(TABLE_METRICS)].notna().any(axis=None):  # else every run failed or diverged before its first evaluation
        paths.append(out / "convergence.png")
        convergence_plot(runs, metrics, paths[2])
    return paths
