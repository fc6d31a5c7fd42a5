"""What each run scored: its headline curve and its final score per metric.

A method is judged in the scope its run names (`headline_scope`: the global model, or for
personalised methods and local-only the mean over clients of each client's own model on the
global test set). The final score is the last evaluated round, or the mean of the last k
evaluated rounds (`last_k`), so a late dip or spike does not decide a comparison.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from bench.stats.collect import Results

STATS_STATUS = "completed"  # only finished runs enter means, tests and ranks; the others are counted


def per_run(results: Results) -> pd.DataFrame:
    """One row per run (a run in two studies appears once)."""
    return results.runs.drop_duplicates("run_id")


def matches_run(frame: pd.DataFrame, column: str, wanted: pd.Series) -> np.ndarray:
    """Rows whose categorical `column` holds the value `wanted` (indexed by run_id) names for
    the row's run; by category codes, fast on tens of millions of rows."""
    per_run_value = wanted.reindex(frame["run_id"].cat.categories)
    code = {name: i for i, name in enumerate(frame[column].cat.categories)}
    wanted_code = np.array([code.get(name, -1) for name in per_run_value], dtype=np.int64)
    return frame[column].cat.codes.to_numpy() == wanted_code[frame["run_id"].cat.codes.to_numpy()]


def headline_curves(results: Results) -> pd.DataFrame:
    """run_id, round, metric, value in each run's headline scope."""
    scope = per_run(results).set_index("run_id")["headline_scope"]
    return results.metrics.loc[matches_run(results.metrics, "scope", scope), ["run_id", "round", "metric", "value"]]


def final_scores(curves: pd.DataFrame, last_k: int) -> pd.DataFrame:
    """run_id, metric, value: the mean of each run's last `last_k` evaluated rounds."""
    rounds = curves[["run_id", "round"]].drop_duplicates().sort_values(["run_id", "round"], ascending=[True, False])
    kept = rounds[rounds.groupby("run_id", observed=True).cumcount() < last_k]
    last = curves.merge(kept, on=["run_id", "round"])
    return last.groupby(["run_id", "metric"], observed=True, as_index=False)["value"].mean()


def scored_runs(results: Results, finals: pd.DataFrame, metric: str) -> pd.DataFrame:
    """Every study membership of every completed run with its final `metric`."""
    values = finals.loc[finals["metric"] == metric, ["run_id", "value"]]
    runs = results.runs[results.runs["status"] == STATS_STATUS]
    return runs[["study", "setting", "setting_order", "block", "method", "method_order", "label", "seed", "run_id"]].merge(values, on="run_id")


def run_counts(results: Results) -> pd.DataFrame:
    """Per study, setting and method: runs by status and the seeds that are missing (seeds that
    other methods of the setting have but this one lacks in any status)."""
    runs = results.runs
    keys = ["study", "setting", "method"]
    counts = pd.crosstab([runs[k] for k in keys], runs["status"]).reindex(columns=["completed", "diverged", "failed"], fill_value=0)
    expected = runs.groupby(["study", "setting"])["seed"].agg(set)
    have = runs.groupby(keys)["seed"].agg(set).rename("seeds").reset_index()
    have["missing_seeds"] = [seed_list(expected[(row.study, row.setting)] - row.seeds) for row in have.itertuples()]
    have["seed_list"] = have["seeds"].map(seed_list)
    have["seeds"] = have["seeds"].map(len)
    return counts.reset_index().merge(have, on=keys)


def seed_list(seeds: set) -> str:
    return " ".join(map(str, sorted(seeds)))


DERIVED_PREFIXES = ("worst_client_", "client_p10_", "client_sd_", "client_gap_", "client_mean_", "heldout_", "in_federation_")
SPREAD_PREFIXES = ("client_sd_", "client_gap_")  # spreads over clients: smaller is fairer, whatever the metric


def base_metric(metric: str) -> str:
    """The per-round metric a derived score is made of (worst_client_f1 -> f1)."""
    for prefix in DERIVED_PREFIXES:
        if metric.startswith(prefix):
            return metric[len(prefix):]
    return metric


def lower_is_better(metric: str, settings: dict) -> bool:
    """Listed in `lower_is_better` (a derived score: its metric is), or a spread over clients."""
    return metric.startswith(SPREAD_PREFIXES) or base_metric(metric) in settings["lower_is_better"]


def orient(values: np.ndarray | pd.Series, metric: str, settings: dict):
    """Values turned so that larger is better (negated for lower-is-better metrics)."""
    return -values if lower_is_better(metric, settings) else values
