"""What tuning did: the selected values, tuning curves, sensitivity, and the tuned against the
untuned leaderboard (Kendall's tau between the rankings, each method's tuning gain with a CI).

Read from a plan (`bench.workflow`) with its selections on disk: a pair's trials and selection
(`reports/tuning/selections`), its tuned test runs and, with `tune.untuned`, the untuned runs of
the same block and seeds (study <name>-untuned). Test scores are each run's headline score under
`stats.selection` (the same as the statistics stage); the validation scores are the selection's.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats as sps

from bench.tuning import read_selection
from bench.workflow import UNTUNED


@dataclass
class TuningReport:
    selected: pd.DataFrame  # a row per pair: its selection
    trials: pd.DataFrame  # a row per trial: its validation score and values
    paired: pd.DataFrame  # a row per (pair, seed): tuned and untuned test scores
    comparison: pd.DataFrame  # a row per (study, method): both leaderboards and the tuning gain
    tau: pd.DataFrame  # a row per study: Kendall's tau between the tuned and untuned rankings
    metric: str


# ---- selections ---------------------------------------------------------------------------------
def read_selections(plan) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(one row per pair, one row per trial) from the selection files that exist."""
    pairs, trials = [], []
    for key, pair in plan.pairs.items():
        path = Path(plan.selection_file(key))
        if not path.is_file():
            continue
        selection = read_selection(path)
        where = {"study": pair.study, "dataset": pair.dataset, "setting": pair.setting, "method": pair.label}
        chosen = selection["selected"]
        pairs.append({**where, "trials": len(selection["trials"]), "failed": sum(t["score"] is None for t in selection["trials"]),
                      "selected_trial": chosen["trial"], "validation": chosen["score"], "all_failed": selection["all_failed"],
                      "values": json.dumps(chosen["values"], sort_keys=True), "metric": selection["metric"]})
        for trial in selection["trials"]:
            trials.append({**where, "trial": trial["trial"], "validation": trial["score"], "status": trial["status"],
                           **{f"value:{k}": v for k, v in trial["values"].items()}, "log": json.dumps({k: d["log"] for k, d in selection["dims"].items()})})
    return pd.DataFrame(pairs), pd.DataFrame(trials)


def best_so_far(trials: pd.DataFrame, lower_is_better: bool) -> pd.DataFrame:
    """Per pair and trials spent n: the best validation score among its first n trials (failures skipped)."""
    keys = ["study", "dataset", "setting", "method"]
    ordered = trials.sort_values([*keys, "trial"])
    score = ordered["validation"].astype(float)
    sign = -1.0 if lower_is_better else 1.0
    best = (sign * score).fillna(-np.inf).groupby([ordered[k] for k in keys]).cummax() * sign
    return ordered.assign(spent=ordered["trial"] + 1, best=best.replace([np.inf, -np.inf], np.nan))


# ---- test scores: tuned against untuned ---------------------------------------------------------
def seed_pairs(plan) -> pd.DataFrame:
    """(pair, seed) -> the tuned test run and the untuned run of the same block and seed."""
    rows = []
    for key, pair in plan.pairs.items():
        group = plan.groups[f"{pair.study}/{pair.dataset}/{pair.setting}"]
        untuned = plan.groups.get(f"{pair.study}{UNTUNED}/{pair.dataset}/{pair.setting}")
        tuned = {plan.runs[r].resolved["seed"]: r for r, label in group.runs.items() if label == pair.label}
        plain = {plan.runs[r].resolved["seed"]: r for r, label in (untuned.runs.items() if untuned else ()) if label == pair.label}
        for seed in pair.test_seeds:
            rows.append({"study": pair.study, "dataset": pair.dataset, "setting": pair.setting, "method": pair.label, "seed": seed,
                         "tuned_run": tuned.get(seed), "untuned_run": plain.get(seed)})
    return pd.DataFrame(rows)


def test_scores(records: list[Path], settings: dict) -> pd.Series:
    """run_id -> headline test score under stats.selection, for the completed runs among `records`."""
    from bench.stats.collect import load_results
    from bench.stats.scores import STATS_STATUS, headline_curves
    from bench.stats.selection import select_rounds, selected_scores

    results = load_results(records, settings, progress=False)
    curves = headline_curves(results)
    metric = settings["metric"]
    selection = select_rounds(results, curves, settings)
    scores = selected_scores(results, curves, selection, settings["selection"], settings, [metric])
    completed = set(results.runs.loc[results.runs["status"] == STATS_STATUS, "run_id"].astype(str))
    scores = scores[(scores["metric"] == metric) & scores["run_id"].astype(str).isin(completed)]
    return scores.set_index(scores["run_id"].astype(str))["value"]


def mean_ci(values: np.ndarray, confidence: float) -> tuple[float, float, float]:
    """Mean and Student-t interval over paired differences; undefined (NaN) below 2 values or
    with no spread (a constant difference has no interval worth printing)."""
    values = values[np.isfinite(values)]
    mean = float(values.mean()) if len(values) else math.nan
    if len(values) < 2 or np.ptp(values) <= 1e-12 * max(1.0, abs(mean)):
        return mean, math.nan, math.nan
    half = sps.t.ppf(0.5 + confidence / 2, len(values) - 1) * values.std(ddof=1) / math.sqrt(len(values))
    return mean, mean - half, mean + half


def average_ranks(block_means: pd.DataFrame, lower_is_better: bool) -> pd.Series:
    """Average rank (1 = best; ties share) over the blocks every method has."""
    wide = block_means.dropna()
    ranks = wide.rank(axis=1, ascending=lower_is_better, method="average")
    return ranks.mean()


def compare(paired: pd.DataFrame, confidence: float, lower_is_better: bool) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Per study and method: tuned and untuned mean and average rank over blocks, and the tuning
    gain (tuned - untuned, paired by block and seed) with a t-interval; per study Kendall's tau-b
    between the two average-rank rankings."""
    rows, taus = [], []
    complete = paired.dropna(subset=["tuned", "untuned"])
    for study, runs in complete.groupby("study", sort=False):
        blocks = runs.groupby(["dataset", "setting", "method"])[["tuned", "untuned"]].mean().unstack("method")
        tuned_rank, untuned_rank = average_ranks(blocks["tuned"], lower_is_better), average_ranks(blocks["untuned"], lower_is_better)
        for method, own in runs.groupby("method", sort=False):
            gain, low, high = mean_ci((own["tuned"] - own["untuned"]).to_numpy(float), confidence)
            rows.append({"study": study, "method": method, "tuned": own["tuned"].mean(), "untuned": own["untuned"].mean(),
                         "tuned_rank": tuned_rank.get(method, math.nan), "untuned_rank": untuned_rank.get(method, math.nan),
                         "gain": gain, "gain_low": low, "gain_high": high, "pairs": len(own), "blocks": own[["dataset", "setting"]].drop_duplicates().shape[0]})
        common = tuned_rank.index.intersection(untuned_rank.index)
        tau, p = sps.kendalltau(tuned_rank[common], untuned_rank[common]) if len(common) >= 2 else (math.nan, math.nan)
        taus.append({"study": study, "methods": len(common), "blocks": blocks.shape[0], "kendall_tau": tau, "p": p})
    return pd.DataFrame(rows), pd.DataFrame(taus)


def build(plan, settings: dict, confidence: float = 0.95) -> TuningReport:
    from bench.stats.scores import lower_is_better

    selected, trials = read_selections(plan)
    paired = seed_pairs(plan)
    runs = [r for column in ("tuned_run", "untuned_run") for r in paired[column].dropna()] if len(paired) else []
    records = [Path(plan.record(r)) for r in dict.fromkeys(runs) if Path(plan.record(r)).is_file()]
    scores = test_scores(records, settings) if records else pd.Series(dtype=float)
    if len(paired):
        paired = paired.assign(tuned=paired["tuned_run"].map(scores), untuned=paired["untuned_run"].map(scores))
    comparison, tau = compare(paired, confidence, lower_is_better(settings["metric"], settings)) if len(paired) else (pd.DataFrame(), pd.DataFrame())
    return TuningReport(selected, trials, paired, comparison, tau, settings["metric"])


# ---- tables and the summary page ----------------------------------------------------------------
def comparison_table(report: TuningReport, percent: bool):
    from bench.stats.render import Table, fmt, fmt_ci, plural

    data = report.comparison
    display = pd.DataFrame({
        "study": data["study"], "method": data["method"],
        "tuned rank": data["tuned_rank"].map(lambda v: fmt(v)), "untuned rank": data["untuned_rank"].map(lambda v: fmt(v)),
        f"tuned {report.metric}": data["tuned"].map(lambda v: fmt(v, percent=percent)),
        f"untuned {report.metric}": data["untuned"].map(lambda v: fmt(v, percent=percent)),
        "tuning gain [CI]": [fmt_ci(m, lo, hi, percent) for m, lo, hi in data[["gain", "gain_low", "gain_high"]].itertuples(index=False)],
        "pairs": data["pairs"].astype(str),
    }).sort_values(["study", "tuned rank"], kind="stable")
    notes = [f"Kendall's tau-b between the tuned and untuned rankings of study {t.study}: {fmt(t.kendall_tau)} "
             f"({plural(t.methods, 'method')} over {plural(t.blocks, 'block')}; p = {fmt(t.p, 3)})" for t in report.tau.itertuples()]
    about = ("A row per method: its average rank over the study's blocks (1 = best) and mean test score tuned and untuned (the "
             "untuned configuration on the same blocks and seeds), and the tuning gain, tuned - untuned paired by block and seed, "
             "with a 95% Student t interval (none when the difference is constant or fewer than 2 pairs).")
    return Table("tuned_vs_untuned", "Tuned against untuned", data, display.loc[data.index], section="study", notes=notes, about=about)


def selected_table(report: TuningReport, percent: bool):
    from bench.stats.render import Table, fmt

    data = report.selected
    display = pd.DataFrame({
        "study": data["study"], "block": [r.dataset if r.setting == "all" else f"{r.dataset}, {r.setting}" for r in data.itertuples()],
        "method": data["method"], "selected": data["values"].map(lambda v: ", ".join(f"{k}={x}" for k, x in json.loads(v).items()) or "the defaults"),
        "trial": data["selected_trial"].astype(str), f"validation {report.metric}": data["validation"].map(lambda v: fmt(v, percent=percent)),
        "failed trials": [f"{f}/{t}" for f, t in data[["failed", "trials"]].itertuples(index=False)],
    })
    about = ("A row per tuned (block, method): the selected values (trial 0 is the untuned configuration), the mean validation score "
             "over the tuning seeds that selected it, and the trials that diverged or failed (they score as failures).")
    return Table("selected", "Selected configurations", data, display, section="study", about=about)


def write_report(report: TuningReport, out: Path, settings: dict) -> dict[Path, str]:
    """tables/, figures/ and summary.md under `out`."""
    from bench.io import write_text
    from bench.stats.figures.tuning import sensitivity, tuning_curves
    from bench.stats.render import is_percent, markdown, write_table
    from bench.stats.scores import lower_is_better

    percent = is_percent(report.metric)
    written: dict[Path, str] = {}
    tables = [selected_table(report, percent)] if len(report.selected) else []
    if len(report.comparison):
        tables.insert(0, comparison_table(report, percent))
    for table in tables:
        written.update(write_table(table, out / "tables"))
    if len(report.trials):
        written.update(tuning_curves(report, lower_is_better(report.metric, settings), out / "figures", settings))
        written.update(sensitivity(report, out / "figures", settings))
    figures = sorted(p for p in written if p.suffix == ".png")
    page = ["# Tuning", "", f"{len(report.selected)} tuned (block, method) pairs; headline metric {report.metric}.", ""]
    page += [markdown(table) for table in tables]
    page += [f"![{p.stem}](figures/{p.name})" for p in figures]
    summary = out / "summary.md"
    write_text(summary, "\n".join(page) + "\n")
    written[summary] = "What tuning selected, and the tuned against the untuned leaderboard"
    return written
