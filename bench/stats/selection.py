"""Which round scores a run (`selection`), and its scores there; the test set never chooses.

`last`: the last evaluated round (the mean of the last `last_k`). `best_val`: among the evaluated
rounds r >= `selection_after` x the round budget, the one with the best validation score (the
earliest of equals): the global model's score on the global validation set (scope `val`, the
union of the clients' validation splits) for the run as a whole, and for runs judged by their
clients' own models (headline scope `personal`) each client's own round on its own validation
split (scope `local_val`). A personalised run's score is then the mean over its clients of each
client's test score at its own round.

A selection is a table `run_id, client, round, weight`: client -1 is the run as a whole (the
global model, held-out centre, means over clients), other clients their own rounds; the weights
of a run's (or client's) rows sum to 1 (1/k each for the last k rounds).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from bench.errors import UserError
from bench.stats.collect import Results, as_text, read_client_metrics
from bench.stats.scores import base_metric, final_scores, orient, per_run

RUN_LEVEL = -1


def selection_metric(settings: dict) -> str:
    return settings["selection_metric"] or base_metric(settings["metric"])


def rule_text(settings: dict, rule: str | None = None) -> str:
    """The selection rule in words, for table notes and captions."""
    rule = rule or settings["selection"]
    if rule == "last":
        return "the last evaluated round" if settings["last_k"] == 1 else f"the mean of the last {settings['last_k']} evaluated rounds"
    return (f"the round with the best validation {selection_metric(settings)} from {settings['selection_after']:g} x the round budget on "
            "(global models: the global validation set; personalised methods and local-only: each client's own round on its own validation split; "
            "the test sets choose nothing)")


def last_rounds(curves: pd.DataFrame, last_k: int) -> pd.DataFrame:
    """Run-level selection of each run's last `last_k` evaluated rounds."""
    rounds = curves[["run_id", "round"]].drop_duplicates().sort_values(["run_id", "round"], ascending=[True, False])
    kept = rounds[rounds.groupby("run_id", observed=True).cumcount() < last_k].copy()
    kept["weight"] = 1.0 / kept.groupby("run_id", observed=True)["round"].transform("size")
    return kept.assign(client=RUN_LEVEL, run_id=as_text(kept["run_id"]))[["run_id", "client", "round", "weight"]]


def best_rounds(values: pd.DataFrame, keys: list[str], budget: pd.Series, metric: str, settings: dict) -> pd.DataFrame:
    """Per `keys` group, the candidate round with the best (oriented) value; the earliest of
    equals. `budget` is each run's round budget (by run_id)."""
    values = values.assign(run_id=as_text(values["run_id"]))
    first = np.ceil(settings["selection_after"] * budget.reindex(values["run_id"]).to_numpy())
    candidates = values[values["round"].to_numpy() >= np.minimum(first, values.groupby("run_id")["round"].transform("max").to_numpy())]
    ordered = candidates.assign(score=orient(candidates["value"].to_numpy(), metric, settings)).sort_values([*keys, "score", "round"], ascending=[True] * len(keys) + [False, True])
    return ordered.drop_duplicates(keys)[[*keys, "round"]].assign(weight=1.0)


def run_ids(rows: pd.DataFrame) -> set[str]:
    """The distinct run ids of `rows` (a set of a million-row column, element by element, took seconds)."""
    return set(map(str, rows["run_id"].unique()))


def validation_rounds(results: Results, curves: pd.DataFrame, settings: dict) -> pd.DataFrame:
    """The best_val selection of every run with an evaluated round (see the module doc)."""
    metric = selection_metric(settings)
    runs = per_run(results).set_index("run_id")
    budget = runs["train.rounds"]
    rows = results.metrics[results.metrics["metric"] == metric]
    scored = run_ids(curves)
    by_scope = {scope: rows[rows["scope"] == scope].assign(run_id=lambda f: as_text(f["run_id"])) for scope in ("val", "local_val")}
    global_val = by_scope["val"][by_scope["val"]["run_id"].isin(scored)]
    client_val = by_scope["local_val"][by_scope["local_val"]["run_id"].isin(scored - run_ids(global_val))]
    lacking = sorted(scored - run_ids(global_val) - run_ids(client_val))
    if lacking:
        raise UserError(f"stats.selection=best_val: {len(lacking)} run(s) have no validation {metric} (e.g. {lacking[0]}): run them with "
                        "partition.val_fraction > 0, or choose stats.selection=last")
    whole = best_rounds(pd.concat([global_val, client_val]), ["run_id"], budget, metric, settings).assign(client=RUN_LEVEL)
    personal = runs.index[runs["headline_scope"] == "personal"].intersection(list(scored))
    own = read_client_metrics(results, "local_val", [metric], list(personal))
    clients = best_rounds(own, ["run_id", "client"], budget, metric, settings) if len(own) else own.iloc[:0][["run_id", "client", "round"]].assign(weight=1.0)
    return pd.concat([whole, clients], ignore_index=True)[["run_id", "client", "round", "weight"]]


def select_rounds(results: Results, curves: pd.DataFrame, settings: dict, rule: str | None = None) -> pd.DataFrame:
    """The selection of every run under `rule` (default: `stats.selection`)."""
    if (rule or settings["selection"]) == "last":
        return last_rounds(curves, settings["last_k"])
    return validation_rounds(results, curves, settings)


def client_rounds(selection: pd.DataFrame, clients: pd.DataFrame) -> pd.DataFrame:
    """Per run and client of `clients` (run_id, client), its selected rounds: its own where the
    selection has them, else its run's."""
    own = selection[selection["client"] != RUN_LEVEL]
    whole = selection[selection["client"] == RUN_LEVEL].drop(columns="client")
    pairs = clients[["run_id", "client"]].drop_duplicates()
    mine = pairs.merge(own, on=["run_id", "client"])
    rest = pairs.merge(own[["run_id"]].drop_duplicates(), on="run_id", how="left", indicator=True)
    rest = rest[rest["_merge"] == "left_only"].drop(columns="_merge").merge(whole, on="run_id")
    return pd.concat([mine, rest], ignore_index=True)


def at_selection(rows: pd.DataFrame, selection: pd.DataFrame, per_client: bool) -> pd.DataFrame:
    """Weighted values of `rows` (run_id, round, [client,] metric, value) at the selected rounds:
    run_id, [client,] metric, value."""
    rows = rows.assign(run_id=as_text(rows["run_id"]))
    keys = ["run_id", "client"] if per_client else ["run_id"]
    rounds = client_rounds(selection, rows) if per_client else selection[selection["client"] == RUN_LEVEL].drop(columns="client")
    picked = rows.merge(rounds, on=[*keys, "round"])
    picked["value"] = picked["value"] * picked["weight"]
    return picked.groupby([*keys, "metric"], observed=True, as_index=False)["value"].sum()


def selected_scores(results: Results, curves: pd.DataFrame, selection: pd.DataFrame, rule: str, settings: dict, metrics: list[str]) -> pd.DataFrame:
    """run_id, metric, value: each run's headline scores under the selection made by `rule`.
    With per-client rounds (personalised runs under best_val) a score is the mean over the
    clients of each one's `personal` score at its own round, for `metrics`."""
    if rule == "last":
        return final_scores(curves, settings["last_k"])
    own = selection.loc[selection["client"] != RUN_LEVEL, "run_id"].unique()
    whole = at_selection(curves[~as_text(curves["run_id"]).isin(own)], selection, per_client=False)
    clients = read_client_metrics(results, "personal", metrics, list(own))
    mean = at_selection(clients, selection, per_client=True).groupby(["run_id", "metric"], as_index=False)["value"].mean()
    return pd.concat([whole, mean], ignore_index=True)


def validation_scores(records: list, settings: dict) -> dict[str, float]:
    """run_id -> its validation score under best_val (what tuning compares): the global
    validation score at the run's selected round, or for runs judged by their clients' own models
    the mean over clients of each one's validation score at its own round. Reads no test score."""
    from bench.stats.collect import load_results
    from bench.stats.scores import headline_curves

    results = load_results(records, settings, progress=False)
    selection = validation_rounds(results, headline_curves(results), settings)
    metric = selection_metric(settings)
    rows = results.metrics[results.metrics["metric"] == metric].assign(run_id=lambda f: as_text(f["run_id"]))
    has_global = set(rows.loc[rows["scope"] == "val", "run_id"])
    whole = rows[((rows["scope"] == "val") & rows["run_id"].isin(has_global)) | ((rows["scope"] == "local_val") & ~rows["run_id"].isin(has_global))]
    scores = at_selection(whole[["run_id", "round", "metric", "value"]], selection, per_client=False).set_index("run_id")["value"].to_dict()
    runs = per_run(results)
    personal = list(runs.loc[runs["headline_scope"] == "personal", "run_id"].astype(str))
    own = read_client_metrics(results, "local_val", [metric], personal)
    if len(own):
        scores.update(at_selection(own, selection, per_client=True).groupby("run_id")["value"].mean().to_dict())
    return {str(k): float(v) for k, v in scores.items()}
