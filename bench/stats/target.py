"""Rounds (and megabytes) until a run first reaches its dataset's target, with censoring.

A run that never reaches the target within its round budget is censored at the budget, never
dropped: all we know is that it needs more rounds than the budget (a diverged run did not reach
the target within the budget either). The median over seeds counts a censored run as later than
any observed round; it is 'not reached' when the middle of the seeds is censored. As every run
of a setting has the same budget, this is the Kaplan-Meier median with the usual midpoint rule.
Only evaluated rounds are observed: with `eval.every` > 1 the round is the first *evaluated*
round at the target.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from bench.io import MB
from bench.stats.collect import Results, as_text
from bench.stats.scores import lower_is_better, matches_run, per_run

REACH_STATUSES = ("completed", "diverged")  # a failed run crashed: not an outcome of the method


def censored_median(times, reached) -> float:
    """Median of `times` with the runs that did not reach the target counted as infinitely
    late; NaN ('not reached') when the median falls on a censored run."""
    median = np.median(np.where(np.asarray(reached, dtype=bool), np.asarray(times, dtype=float), np.inf))
    return float(median) if np.isfinite(median) else float("nan")


def communication(results: Results) -> pd.DataFrame:
    """run_id, round, cumulative MB sent up to and including that round."""
    comm = results.metrics[(results.metrics["scope"] == "comm") & (results.metrics["metric"] == "bytes")]
    comm = comm[["run_id", "round", "value"]].sort_values(["run_id", "round"])
    comm = comm.assign(mb=comm["value"] / MB, cum_mb=comm.groupby("run_id", observed=True)["value"].cumsum() / MB).drop(columns="value")
    return comm.assign(run_id=as_text(comm["run_id"]))


def run_targets(results: Results, curves: pd.DataFrame, settings: dict, comm: pd.DataFrame | None = None) -> pd.DataFrame:
    """Per run with a dataset target: reached?, round and cumulative MB at reach or censoring.
    `comm`: `communication(results)` when the caller already has it."""
    runs = per_run(results)
    runs = runs[runs["status"].isin(REACH_STATUSES) & runs["data.name"].isin(settings["targets"])]
    if runs.empty:
        return pd.DataFrame(columns=["run_id", "target_metric", "target", "reached", "round", "mb_to_target", "mb_per_round"])
    goals = pd.DataFrame([{"data.name": name, "target_metric": goal["metric"], "target": goal["value"]} for name, goal in settings["targets"].items()])
    runs = runs[["run_id", "data.name", "train.rounds"]].merge(goals, on="data.name").set_index("run_id")
    points = curves[matches_run(curves, "metric", runs["target_metric"])]
    target = runs["target"].reindex(as_text(points["run_id"])).to_numpy()
    lower = runs["target_metric"].map(lambda m: lower_is_better(m, settings)).reindex(as_text(points["run_id"])).to_numpy()
    hit = points[np.where(lower, points["value"].to_numpy() <= target, points["value"].to_numpy() >= target)]
    first = hit.groupby("run_id", observed=True)["round"].min().rename("reach_round")
    first.index = first.index.astype(str)
    out = runs.join(first).reset_index()
    out["reached"] = out["reach_round"].notna()
    out["round"] = out["reach_round"].fillna(out["train.rounds"].astype(float)).astype(int)
    comm = communication(results) if comm is None else comm
    sent = comm.groupby("run_id", observed=True).agg(played=("round", "max"), total_mb=("cum_mb", "last"), last_mb=("mb", "last"), mb_per_round=("mb", "mean"))
    out = out.merge(sent, left_on="run_id", right_index=True, how="left").merge(comm[["run_id", "round", "cum_mb"]], on=["run_id", "round"], how="left")
    unplayed = (out["train.rounds"] - out["played"]).clip(lower=0) * out["last_mb"]
    out["mb_to_target"] = out["cum_mb"].where(out["reached"], out["total_mb"] + unplayed)
    return out[["run_id", "target_metric", "target", "reached", "round", "mb_to_target", "mb_per_round"]]


def rounds_to_target(results: Results, targets: pd.DataFrame, references: list[str]) -> pd.DataFrame:
    """Per study, setting and method: runs, reached, success rate, median rounds and MB to
    target, MB per round, and the reduction in median rounds versus the first reference."""
    keys = ["study", "setting", "method"]
    runs = results.runs[[*keys, "setting_order", "method_order", "run_id"]].merge(targets, on="run_id")
    if runs.empty:
        return pd.DataFrame(columns=[*keys, "target_metric", "target", "runs", "reached", "success_rate", "median_rounds", "median_mb_to_target", "mb_per_round", "reduction_pct"])
    rows = []
    for key, group in runs.groupby([*keys, "setting_order", "method_order", "target_metric", "target"], sort=False):
        rows.append(dict(zip([*keys, "setting_order", "method_order", "target_metric", "target"], key),
                         runs=len(group), reached=int(group["reached"].sum()), success_rate=group["reached"].mean(),
                         median_rounds=censored_median(group["round"], group["reached"]),
                         median_mb_to_target=censored_median(group["mb_to_target"], group["reached"]),
                         mb_per_round=group["mb_per_round"].mean()))
    table = pd.DataFrame(rows)
    baseline = next((r for r in references if r in set(table["method"])), None)
    table["reduction_vs"] = baseline
    if baseline is not None:
        base = table[table["method"] == baseline].set_index(["study", "setting"])["median_rounds"]
        ref = base.reindex(pd.MultiIndex.from_frame(table[["study", "setting"]])).to_numpy()
        table["reduction_pct"] = 100 * (ref - table["median_rounds"]) / ref
    else:
        table["reduction_pct"] = np.nan
    return table.sort_values(["setting_order", "method_order", "method"], ignore_index=True)
