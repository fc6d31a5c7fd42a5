"""The evaluation protocols' tables: model selection, fairness across clients, clinical metrics,
unseen centres (leave-one-centre-out), communication frequency and aggregate scores.

Each builder returns `Table`s or nothing when the results hold no data for it (a log line says
so); every table notes the rule that chose the rounds it scores (`tables.noted`).
"""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd
from scipy import stats

from bench.errors import UserError
from bench.stats.aggregate import aggregate_scores
from bench.stats.analysis import Analysis
from bench.stats.bootstrap import grouped_mean_ci
from bench.stats.captions import interval_phrase
from bench.stats.collect import as_text, format_value, sort_key
from bench.stats.fairness import SPREAD, fairness_metric
from bench.stats.render import Table, fmt, fmt_ci, fmt_p
from bench.stats.scores import STATS_STATUS, base_metric
from bench.stats.selection import RUN_LEVEL, rule_text, select_rounds, selected_scores
from bench.stats.summaries import CLINICAL, bootstrap_args, per_class_metrics, per_round_metrics
from bench.stats.tables import heading, is_percent, main_comparison, median_text, pivot_table

log = logging.getLogger(__name__)


def completed(analysis: Analysis) -> pd.DataFrame:
    runs = analysis.results.runs
    return runs[runs["status"] == STATS_STATUS]


# ---- model selection ----------------------------------------------------------------------------
def rule_scores(analysis: Analysis, rule: str) -> pd.DataFrame | None:
    """run_id, metric, value under `rule`; None when the runs cannot be scored by it (no
    validation split)."""
    if rule == analysis.settings["selection"]:
        return analysis.finals
    if rule == "last":
        return analysis.last_round_scores
    try:
        selection = select_rounds(analysis.results, analysis.curves, analysis.settings, rule)
    except UserError as exc:
        log.info("skipping tables/model_selection: %s", exc)
        return None
    return selected_scores(analysis.results, analysis.curves, selection, rule, analysis.settings, per_round_metrics(analysis.results, analysis.settings))


def selected_round(analysis: Analysis) -> pd.Series:
    """Per run, the round best_val chose (clients' own rounds averaged for personalised runs)."""
    selection = analysis.selection if analysis.settings["selection"] == "best_val" else select_rounds(analysis.results, analysis.curves, analysis.settings, "best_val")
    own = selection[selection["client"] != RUN_LEVEL].groupby("run_id")["round"].mean()
    whole = selection[selection["client"] == RUN_LEVEL].set_index("run_id")["round"]
    return own.combine_first(whole.astype(float))


def model_selection_table(analysis: Analysis) -> list[Table]:
    """Per setting and method: the headline score at the last round, at the best-validation
    round, their paired difference, and the mean round chosen."""
    metric = analysis.settings["metric"]
    last, best = rule_scores(analysis, "last"), rule_scores(analysis, "best_val")
    if best is None or not (best["metric"] == metric).any():
        return []
    keys = ["study", "setting", "setting_order", "method", "method_order"]
    runs = completed(analysis)[[*keys, "run_id"]]
    values = {name: scores.loc[scores["metric"] == metric, ["run_id", "value"]].astype({"run_id": str, "value": float}).set_index("run_id")["value"]
              for name, scores in (("last", last), ("best_val", best))}
    per_run = runs.assign(last=runs["run_id"].map(values["last"]), best_val=runs["run_id"].map(values["best_val"]),
                          round=runs["run_id"].map(selected_round(analysis)))
    per_run["difference"] = per_run["best_val"] - per_run["last"]
    long = per_run.melt(id_vars=[*keys, "run_id"], value_vars=["last", "best_val", "difference", "round"], var_name="score")
    table = grouped_mean_ci(long, [*keys, "score"], "value", **bootstrap_args(analysis.settings))
    wide = table.pivot_table(index=keys, columns="score", values=["mean", "ci_low", "ci_high", "n"], observed=True)
    wide.columns = [f"{score}_{stat}" for stat, score in wide.columns]
    wide = wide.reindex(columns=[f"{score}_{stat}" for score in ("last", "best_val", "difference", "round") for stat in ("mean", "ci_low", "ci_high", "n")])  # no CI with one seed
    data = wide.reset_index().sort_values(["setting_order", "method_order", "method"], ignore_index=True)
    percent = is_percent(metric)
    display = pd.DataFrame({"setting": [heading(s, t) for s, t in zip(data["study"], data["setting"])], "method": data["method"]})
    for score, title in (("last", "last round"), ("best_val", "best validation"), ("difference", "best validation - last")):
        display[title] = [fmt_ci(m, lo, hi, percent) for m, lo, hi in zip(data[f"{score}_mean"], data[f"{score}_ci_low"], data[f"{score}_ci_high"])]
    display["round chosen (mean)"] = [fmt(v, 1) for v in data["round_mean"]]
    notes = [f"{metric} on the test sets at the last evaluated round and at {rule_text(analysis.settings, 'best_val')}; "
             f"mean over completed seeds [{interval_phrase(table['ci_method'], analysis.settings['confidence'])}]; the difference is paired by run."]
    return [Table("model_selection", f"Model selection: last round against best validation ({metric})", data.drop(columns=["setting_order", "method_order"]),
                  display, "setting", None, notes)]


# ---- fairness and clinical metrics --------------------------------------------------------------
def metric_table(analysis: Analysis, metrics: list[str], name: str, title: str, what: str) -> list[Table]:
    """The main comparison of `metrics` as table `name`, if the results hold any of them."""
    if not analysis.summary["metric"].isin(metrics).any():
        log.info("none of %s in the results: skipping tables/%s", ", ".join(metrics), name)
        return []
    return main_comparison(analysis, metrics, name, title, what)


def fairness_table(analysis: Analysis) -> list[Table]:
    metric = fairness_metric(analysis.settings)
    names = [f"{stat}_{metric}" for stat in SPREAD]
    tables = metric_table(analysis, names, "fairness", f"Fairness across clients ({metric})",
                             f"{metric} of every client's model on its own local test split (global-model methods: the global model), over the clients: "
                             f"{', '.join(SPREAD.values())} (SD with n - 1; 10th percentile interpolated). ")
    for table in tables:
        table.display = table.display.rename(columns={name: SPREAD[name[: -len(metric) - 1]] for name in names})
        if table.bold is not None:
            table.bold = table.bold.rename(columns={name: SPREAD[name[: -len(metric) - 1]] for name in names})
    return tables


def clinical_table(analysis: Analysis) -> list[Table]:
    return metric_table(analysis, CLINICAL, "clinical", "Clinical metrics",
                           "Macro one-vs-rest AUROC, expected calibration error (15 equal-width confidence bins; lower is better) and melanoma "
                           "sensitivity (the recall of class mel/MEL, where the dataset has it). ")


def per_class_table(analysis: Analysis) -> list[Table]:
    """Sensitivity / specificity of every class, mean over completed seeds."""
    classes = [m.split("/", 1)[1] for m in per_class_metrics(analysis.results) if m.startswith("recall/")]
    finals = analysis.finals[analysis.finals["metric"].astype(str).str.contains("/", regex=False)]
    if not classes or finals.empty:
        return []
    keys = ["study", "setting", "setting_order", "method", "method_order"]
    means = completed(analysis)[[*keys, "run_id"]].merge(finals.assign(run_id=as_text(finals["run_id"])), on="run_id")
    wide = means.pivot_table(index=keys, columns="metric", values="value", aggfunc="mean", observed=True).reset_index()
    data = wide.sort_values(["setting_order", "method_order", "method"], ignore_index=True)
    display = pd.DataFrame({"setting": [heading(s, t) for s, t in zip(data["study"], data["setting"])], "method": data["method"]})
    missing = pd.Series(np.nan, index=data.index)  # runs made before a metric existed lack its column
    for c in classes:
        display[c] = [f"{fmt(sens, 1, True)} / {fmt(spec, 1, True)}" for sens, spec in zip(data.get(f"recall/{c}", missing), data.get(f"specificity/{c}", missing))]
    notes = ["Per class: sensitivity (recall) / specificity in %, mean over completed seeds; '–': the class is absent from the evaluated set."]
    return [Table("per_class", "Per-class sensitivity / specificity", data.drop(columns=["setting_order", "method_order"]), display, "setting", None, notes)]


# ---- unseen centres -------------------------------------------------------------------------------
def unseen_rows(analysis: Analysis, prefix: str) -> pd.DataFrame:
    """Summary rows of `<prefix>_<metric>` per held-out centre, with `context` and `value`."""
    from bench.stats.sweeps import setting_sweep

    return setting_sweep(analysis.results, analysis.summary, "partition.holdout", f"{prefix}_{fairness_metric(analysis.settings)}", null_is_value=False)


def centre_mean(analysis: Analysis, rows: pd.DataFrame, name: str) -> pd.DataFrame:
    """Per context and method: the mean over held-out centres, with a CI over seeds (the
    per-seed mean over centres)."""
    finals = analysis.finals[analysis.finals["metric"] == name].assign(run_id=lambda f: as_text(f["run_id"]))
    settings = rows[["study", "setting", "context"]].drop_duplicates()
    runs = completed(analysis)[["study", "setting", "method", "method_order", "seed", "run_id"]].merge(settings, on=["study", "setting"]).merge(finals, on="run_id")
    per_seed = runs.groupby(["study", "context", "method", "method_order", "seed"], as_index=False)["value"].mean()
    return grouped_mean_ci(per_seed, ["study", "context", "method", "method_order"], "value", **bootstrap_args(analysis.settings))


def loco_table(analysis: Analysis) -> list[Table]:
    """Method x held-out centre of the new centre's score, plus the mean over centres."""
    metric = fairness_metric(analysis.settings)
    rows = unseen_rows(analysis, "heldout")
    if rows.empty:
        log.info("no leave-one-centre-out runs (partition.holdout) in the results: skipping tables/leave_one_centre_out")
        return []
    table = pivot_table("leave_one_centre_out", f"Unseen centres: leave-one-centre-out ({metric})", rows, "method", "held out", f"heldout_{metric}", analysis,
                        "One row per method (in sections by context); one column per centre held out of the federation, and the mean over centres.")
    means = centre_mean(analysis, rows, f"heldout_{metric}")
    cells = {(c, m): fmt_ci(v, lo, hi, is_percent(metric)) for c, m, v, lo, hi in means[["context", "method", "mean", "ci_low", "ci_high"]].itertuples(index=False)}
    table.display["mean over centres"] = [cells.get((c, m), "–") for c, m in zip(table.display["context"], table.display["method"])]
    table.data = pd.concat([table.data, means.assign(value="mean over centres")], ignore_index=True)
    table.notes = [f"{metric} on the held-out centre's test split of the model a new centre gets: the selected global model; for personalised methods the "
                   "global model fine-tuned for eval.new_client_steps local steps on the centre's training split (0: the global model as is); local-only has none. "
                   "The held-out centre trains nothing and is in no validation set. " + table.notes[0] + " Mean over centres: CI over seeds of the per-seed mean."]
    return [table]


def loco_correlation_table(analysis: Analysis) -> list[Table]:
    """Per leave-one-centre-out context: Pearson and Spearman correlation over (method, centre)
    cells of the in-federation score (mean over the clients' local test splits) and the held-out
    centre's score (FL-MedSegBench's finding (v))."""
    metric = fairness_metric(analysis.settings)
    unseen, inside = unseen_rows(analysis, "heldout"), unseen_rows(analysis, "in_federation")
    if unseen.empty or inside.empty:
        return []
    cells = unseen.merge(inside, on=["study", "context", "value", "method"], suffixes=("_heldout", "_inside"))[["study", "context", "value", "method", "mean_heldout", "mean_inside"]].dropna()
    rows = []
    for (study, context), group in cells.groupby(["study", "context"], sort=False):
        row = {"study": study, "context": context, "cells": len(group)}
        if len(group) >= 3:
            row["pearson_r"], row["pearson_p"] = stats.pearsonr(group["mean_inside"], group["mean_heldout"])
            row["spearman_rho"], row["spearman_p"] = stats.spearmanr(group["mean_inside"], group["mean_heldout"])
        rows.append(row)
    data = pd.DataFrame(rows).reindex(columns=["study", "context", "cells", "pearson_r", "pearson_p", "spearman_rho", "spearman_p"])
    display = pd.DataFrame({"context": data["context"], "cells (method x centre)": data["cells"],
                            "Pearson r": [fmt(v, 2) for v in data["pearson_r"]], "p (Pearson)": [fmt_p(p) for p in data["pearson_p"]],
                            "Spearman rho": [fmt(v, 2) for v in data["spearman_rho"]], "p (Spearman)": [fmt_p(p) for p in data["spearman_p"]]})
    notes = [f"Correlation over (method, held-out centre) cells of the mean over seeds of the in-federation {metric} (each client's model on its own local test "
             f"split, mean over the training centres) and of the held-out centre's {metric}; fewer than 3 cells: no correlation."]
    return [Table("loco_correlation", f"In-federation against held-out scores ({metric})", data, display, None, None, notes)]


# ---- communication frequency ------------------------------------------------------------------------
def frequency_tables(analysis: Analysis) -> list[Table]:
    """Method x local epochs E at a fixed budget: the headline score, and the median MB sent
    until the dataset's target."""
    metric, rows = analysis.settings["metric"], analysis.frequency_rows
    if rows.empty:
        log.info("no communication-frequency sweep (settings differing only in local epochs and rounds at one budget): skipping tables/communication_frequency")
        return []
    tables = [pivot_table("communication_frequency", f"Communication frequency at a fixed budget ({metric})", rows, "method", "E", metric, analysis,
                          "One row per method (in sections by context); one column per local-epoch count E, with rounds = budget / E.")]
    tables[0].notes.insert(0, "E local epochs per round for budget / E rounds: every run trains the same number of local epochs.")
    reach = analysis.rounds_to_target
    if reach.empty:
        return tables
    mb = rows.drop(columns=["mean", "ci_low", "ci_high", "n", "sd"], errors="ignore").merge(reach, on=["study", "setting", "method"], suffixes=("", "_target"))
    if mb.empty:
        return tables
    values = sorted(mb["value"].drop_duplicates(), key=sort_key)
    mb["cell"] = [f"{fmt(v, 1)} MB" if pd.notna(v) else median_text(np.nan, r, n) for v, r, n in zip(mb["median_mb_to_target"], mb["reached"], mb["runs"])]
    shown = mb.pivot_table(index=["context", "method"], columns="value", values="cell", aggfunc="first", sort=False).reindex(columns=values)
    shown.columns = [f"E={format_value(v)}" for v in shown.columns]
    target = mb[["target_metric", "target"]].iloc[0]
    notes = [f"Median over seeds of the MB (2^20 bytes) actually sent until {target['target_metric']} >= {target['target']:g} on the test set at an evaluated round "
             "(censored at the budget: 'not reached' when the middle seed never reaches it)."]
    tables.append(Table("communication_frequency_mb", "Communication frequency: MB to target", mb.drop(columns="cell"), shown.fillna("–").reset_index(), "context", None, notes))
    return tables


# ---- aggregate scores ---------------------------------------------------------------------------------
def aggregate_table(analysis: Analysis) -> list[Table]:
    """IQM and probability of improvement over the Friedman design's settings x seeds, next to
    the average rank."""
    design = analysis.ranking.design
    if design.empty:
        return []
    blocks = list(dict.fromkeys(design.index.get_level_values("block")))
    scored = analysis.scored[analysis.scored["method"].isin(design.columns)]
    data = aggregate_scores(scored, analysis.references, analysis.settings, blocks)
    if data.empty:
        return []
    board = analysis.ranking.leaderboard.set_index("method")
    data.insert(1, "average_rank", data["method"].map(board["average_rank"]))
    data = data.sort_values("average_rank", ignore_index=True)
    metric, percent = analysis.settings["metric"], is_percent(analysis.settings["metric"])
    display = pd.DataFrame({"method": data["method"], "average rank": [fmt(v, 2) for v in data["average_rank"]], "settings": data["settings"], "runs": data["runs"],
                            f"IQM {metric}": [fmt_ci(m, lo, hi, percent) for m, lo, hi in zip(data["iqm"], data["iqm_ci_low"], data["iqm_ci_high"])]})
    for ref in analysis.references:
        if f"poi_vs_{ref}" in data:
            display[f"P(better than {ref})"] = [fmt_ci(m, lo, hi, False) for m, lo, hi in zip(data[f"poi_vs_{ref}"], data[f"poi_vs_{ref}_ci_low"], data[f"poi_vs_{ref}_ci_high"])]
    notes = [f"Over the {len(blocks)} settings of the Friedman design x their seeds: interquartile mean (25% trimmed) and probability of improvement "
             "(per setting P(X > Y) + P(X = Y)/2 over seed pairs, averaged over the settings both have), "
             f"{analysis.settings['confidence']:.0%} stratified percentile bootstrap (seeds resampled within settings, {analysis.settings['bootstrap']['resamples']} draws); "
             "numpy/scipy, rliable's definitions. Average rank: the leaderboard's."]
    return [Table("aggregate", f"Aggregate scores across settings ({metric})", data, display, None, None, notes)]


PROTOCOL_BUILDERS = (model_selection_table, fairness_table, clinical_table, per_class_table, loco_table, loco_correlation_table, frequency_tables, aggregate_table)
