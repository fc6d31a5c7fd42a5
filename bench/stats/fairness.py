"""Fairness across clients, and the unseen-centre scores of leave-one-centre-out runs.

A run's per-client scores are the `local` scope: each client's model on its own local test
split (for global-model methods the global model, for personalised methods each client's own),
at the selected round(s). Over its clients a run gets their mean, standard deviation (n - 1),
worst client, 10th percentile (numpy's linear interpolation) and gap best - worst; "worst" and
the percentile are taken in the metric's own direction (the largest ECE is the worst). These are
run scores like any other (`worst_client_balanced_accuracy`, ...), so seeds give them CIs and
they can head the ranking (`stats.metric`).

A run with a held-out centre (`partition.holdout`) gets `heldout_<metric>`: the new centre's
model on that centre's test split at the run's selected round: the global model (scope
`heldout`), or for runs judged by their clients' own models the new-client rule's model (scope
`heldout_tuned`) where the run has it; and `in_federation_<metric>`, the mean over its clients.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from bench.stats.collect import Results, as_text, read_client_metrics
from bench.stats.scores import base_metric, lower_is_better, per_run
from bench.stats.selection import RUN_LEVEL, at_selection

SPREAD = {"client_mean": "mean", "client_sd": "SD", "worst_client": "worst client", "client_p10": "10th percentile", "client_gap": "best - worst"}


def fairness_metric(settings: dict) -> str:
    return settings["fairness_metric"] or base_metric(settings["metric"])


def spread(values: pd.DataFrame, metric: str, settings: dict, keys: list[str]) -> pd.DataFrame:
    """Per `keys` group of per-client `value`s: the SPREAD statistics as metrics `<stat>_<metric>`."""
    lower = lower_is_better(metric, settings)
    groups = values.groupby(keys, observed=True)["value"]
    stats = {
        "client_mean": groups.mean(),
        "client_sd": groups.std(ddof=1),
        "worst_client": groups.max() if lower else groups.min(),
        "client_p10": groups.quantile(0.9 if lower else 0.1),
        "client_gap": groups.max() - groups.min(),
    }
    table = pd.DataFrame(stats).reset_index().melt(id_vars=keys, var_name="stat", value_name="value")
    return table.assign(metric=table["stat"] + "_" + metric).drop(columns="stat")


def client_scores(results: Results, selection: pd.DataFrame, metric: str) -> pd.DataFrame:
    """run_id, client, value: every client's local test score at its selected round(s)."""
    rows = read_client_metrics(results, "local", [metric])
    return at_selection(rows, selection, per_client=True).drop(columns="metric")


def fairness_scores(clients: pd.DataFrame, metric: str, settings: dict) -> pd.DataFrame:
    """run_id, metric, value: the spread of each run's client scores."""
    if clients.empty:
        return pd.DataFrame(columns=["run_id", "metric", "value"])
    return spread(clients, metric, settings, ["run_id"])[["run_id", "metric", "value"]]


def fairness_curves(results: Results, metric: str, settings: dict) -> pd.DataFrame:
    """run_id, round, metric, value: the spread over clients per evaluated round (the
    convergence of the worst client, ...)."""
    rows = read_client_metrics(results, "local", [metric])
    if rows.empty:
        return pd.DataFrame(columns=["run_id", "round", "metric", "value"])
    return spread(rows, metric, settings, ["run_id", "round"])[["run_id", "round", "metric", "value"]]


def unseen_centre_scores(results: Results, selection: pd.DataFrame, metric: str, fairness: pd.DataFrame) -> pd.DataFrame:
    """run_id, metric, value: heldout_<metric> and in_federation_<metric> of runs with a
    held-out centre (see the module doc)."""
    runs = per_run(results)
    if "partition.holdout" not in runs:
        return pd.DataFrame(columns=["run_id", "metric", "value"])
    held = runs[runs["partition.holdout"].notna()].set_index("run_id")["headline_scope"]
    rows = results.metrics[(results.metrics["metric"] == metric) & results.metrics["scope"].isin(["heldout", "heldout_tuned"])]
    rows = rows.assign(run_id=as_text(rows["run_id"]), scope=rows["scope"].astype(str))
    rows = rows[rows["run_id"].isin(held.index)]
    tuned = set(rows.loc[rows["scope"] == "heldout_tuned", "run_id"])
    wanted = np.where(held.reindex(rows["run_id"]).eq("personal").to_numpy() & rows["run_id"].isin(tuned).to_numpy(), "heldout_tuned", "heldout")
    chosen = rows[rows["scope"].to_numpy() == wanted]
    unseen = at_selection(chosen[["run_id", "round", "metric", "value"]], selection[selection["client"] == RUN_LEVEL], per_client=False)
    inside = fairness[(fairness["metric"] == f"client_mean_{metric}") & fairness["run_id"].isin(held.index)]
    return pd.concat([unseen.assign(metric=f"heldout_{metric}"), inside.assign(metric=f"in_federation_{metric}")], ignore_index=True)[["run_id", "metric", "value"]]
