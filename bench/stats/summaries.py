"""Per setting and method: mean final score over seeds with a bootstrap CI, and run counts.

Only completed runs enter the means; diverged and failed runs, and seeds a method lacks that
other methods of its setting have, are counted in the same rows so no gap goes unseen.
"""

from __future__ import annotations

import pandas as pd

from bench.stats.bootstrap import grouped_mean_ci
from bench.stats.collect import Results
from bench.stats.scores import STATS_STATUS, base_metric, run_counts

GROUP = ["study", "setting", "method"]


def bootstrap_args(settings: dict) -> dict:
    """The interval settings every `grouped_mean_ci` call takes."""
    boot = settings["bootstrap"]
    return {"confidence": settings["confidence"], "resamples": boot["resamples"], "seed": boot["seed"], "min_values": boot["min_values"]}


CLINICAL = ["auroc", "ece", "melanoma_sensitivity"]


def summary_metrics(settings: dict) -> list[str]:
    """The headline metric first, then the table metrics."""
    return list(dict.fromkeys([settings["metric"], *settings["table_metrics"]]))


def per_class_metrics(results: Results) -> list[str]:
    """recall/<class> (sensitivity) and specificity/<class> of every class of the runs."""
    classes = dict.fromkeys(c for listed in results.runs["classes"].dropna() for c in listed)
    return [f"{kind}/{c}" for kind in ("recall", "specificity") for c in classes]


def per_round_metrics(results: Results, settings: dict) -> list[str]:
    """Every per-round metric the statistics report: what a personalised run's clients are read for."""
    return list(dict.fromkeys([*(base_metric(m) for m in summary_metrics(settings)), *CLINICAL, *per_class_metrics(results)]))


def summarized_metrics(finals: pd.DataFrame, settings: dict) -> list[str]:
    """The summary's metrics: the headline and table metrics, the clinical ones and the derived
    scores (fairness across clients, unseen centres) the finals hold."""
    derived = [m for m in finals["metric"].astype(str).unique() if base_metric(m) != m]
    return list(dict.fromkeys([*summary_metrics(settings), *CLINICAL, *derived]))


def summarize(results: Results, finals: pd.DataFrame, settings: dict) -> pd.DataFrame:
    """One row per study, setting, method and metric: n, mean, sd, 95% CI, and run counts."""
    runs = results.runs[results.runs["status"] == STATS_STATUS]
    wanted = finals[finals["metric"].isin(summarized_metrics(finals, settings))]
    scored = runs[[*GROUP, "run_id"]].merge(wanted, on="run_id")
    table = grouped_mean_ci(scored, [*GROUP, "metric"], "value", **bootstrap_args(settings))
    counts = run_counts(results)
    order = results.runs.drop_duplicates(GROUP)[[*GROUP, "setting_order", "method_order", "label", *results.setting_columns]]
    out = counts.merge(order, on=GROUP).merge(table, on=GROUP, how="left")
    return out.sort_values(["setting_order", "method_order", "method", "metric"], ignore_index=True)


def curve_bands(results: Results, curves: pd.DataFrame, metric: str, settings: dict) -> pd.DataFrame:
    """Per study, setting, method and evaluated round: mean and CI over completed seeds."""
    runs = results.runs[results.runs["status"] == STATS_STATUS]
    points = runs[[*GROUP, "run_id"]].merge(curves[curves["metric"] == metric], on="run_id")
    return grouped_mean_ci(points, [*GROUP, "round"], "value", **bootstrap_args(settings))
