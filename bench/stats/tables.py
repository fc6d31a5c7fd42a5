"""The paper's tables, and the benchmark's own, as queries over the analysis.

Each builder returns `Table`s (render.py writes them as CSV, Markdown and LaTeX) or nothing when
the results hold no data for it (a log line says what is skipped and why). Rows are methods in
table order (the configured paper names first, then every other method by label), so a new
method appears in every table without any edit here.
"""

from __future__ import annotations

import json
import logging

import numpy as np
import pandas as pd

from bench.stats.analysis import Analysis
from bench.stats.bayes import PRIOR, SAMPLES
from bench.stats.captions import family_name, final_phrase, friedman_phrase, headline_scopes, interval_phrase, listing, metric_name, scope_phrase
from bench.stats.collect import format_value, sort_key
from bench.stats.render import Table, fmt, fmt_ci, fmt_p, heading, is_percent
from bench.stats.control import REGIONS
from bench.stats.power import POWER
from bench.stats.scores import lower_is_better
from bench.stats.significance import pairs_needed

log = logging.getLogger(__name__)


def best_cells(data: pd.DataFrame, display: pd.DataFrame, groups: pd.Series, columns: dict[str, str], lower: set[str]) -> pd.DataFrame:
    """Bold mask: per group, the best mean of each display column (from its data column)."""
    bold = pd.DataFrame(False, index=display.index, columns=display.columns)
    for shown, source in columns.items():
        values = data[source] if source not in lower else -data[source]
        best = values.groupby(groups.to_numpy()).transform("max")
        bold[shown] = values.notna().to_numpy() & (values == best).to_numpy()
    return bold


def status_text(row: pd.Series) -> str:
    """'3 completed, 1 diverged; missing seeds 4' from a summary row."""
    parts = [f"{int(row[s])} {s}" for s in ("completed", "diverged", "failed") if row.get(s, 0)]
    missing = f"; missing seeds {row['missing_seeds']}" if row.get("missing_seeds") else ""
    return ", ".join(parts) + missing


def mean_note(analysis: Analysis, ci_methods) -> str:
    """'Mean over completed seeds of each run's score at its last evaluated round [95% BCa ...]'."""
    return (f"Mean over completed seeds of each run's score {final_phrase(analysis.settings)} "
            f"[{interval_phrase(ci_methods, analysis.settings['confidence'])}]")


# ---- the main comparison --------------------------------------------------------------------
def main_comparison(analysis: Analysis, metrics: list[str] | None = None, name: str = "main_comparison", title: str = "Main comparison",
                    what: str = "") -> list[Table]:
    """Mean [95% CI] of every table metric per setting and method (the paper's main table), or
    of `metrics` as table `name` (`what` opens its note)."""
    metrics = metrics or analysis.settings["table_metrics"]
    summary = analysis.summary[analysis.summary["metric"].isin(metrics) | analysis.summary["metric"].isna()]
    keys = ["study", "setting", "setting_order", "method", "method_order", "label"]
    wide = summary.pivot_table(index=keys, columns="metric", values=["mean", "ci_low", "ci_high", "n"], observed=True)
    wide.columns = [metric if stat == "mean" else f"{metric}_{stat}" for stat, metric in wide.columns]
    ordered = [c for m in metrics if m in wide.columns for c in (m, f"{m}_ci_low", f"{m}_ci_high", f"{m}_n")]  # CIs are all-NaN with one seed
    wide = wide.reindex(columns=ordered)
    counts = summary.drop_duplicates(["study", "setting", "method"]).set_index(keys)[[*analysis.results.setting_columns, "seeds", "completed", "diverged", "failed", "missing_seeds"]]
    data = counts.join(wide).reset_index().sort_values(["setting_order", "method_order", "method"], ignore_index=True)
    scope = analysis.results.runs.drop_duplicates("method").set_index("method")["headline_scope"]
    data.insert(data.columns.get_loc("label") + 1, "scope", data["method"].map(scope))
    present = [m for m in metrics if m in data]
    display = pd.DataFrame({"setting": [heading(s, t) for s, t in zip(data["study"], data["setting"])], "method": data["method"]})
    for metric in present:
        display[metric] = [fmt_ci(m, lo, hi, is_percent(metric)) for m, lo, hi in data[[metric, f"{metric}_ci_low", f"{metric}_ci_high"]].itertuples(index=False)]
    data.insert(data.columns.get_loc("missing_seeds") + 1, "statuses", data.apply(status_text, axis=1))
    display["runs"] = data["statuses"]
    bold = best_cells(data, display, display["setting"], {m: m for m in present}, {m for m in present if lower_is_better(m, analysis.settings)})
    shown = summary[summary["metric"].isin(present)]
    notes = [f"{what}{mean_note(analysis, shown['ci_method'].dropna())}, in % for scores; {scope_phrase(analysis.results, data['method'])} "
             "(column scope in the CSV); best mean per setting in bold; runs: every run by status, and seeds other methods have but this one lacks."]
    about = f"One row per setting (section) and method; columns: {listing(metric_name(m) for m in present)}."
    return [Table(name, title, data.drop(columns=["setting_order", "method_order"]), display, "setting", bold, notes, about)]


# ---- communication --------------------------------------------------------------------------
def communication_table(analysis: Analysis) -> list[Table]:
    """MB per round for every method; with a dataset target: rounds and MB to reach it."""
    mb = analysis.mb_per_round
    if mb.empty:
        log.info("no communication rows in the results: skipping tables/communication")
        return []
    order = analysis.summary.drop_duplicates(["study", "setting", "method"])[["study", "setting", "method", "setting_order", "method_order"]]
    data = order.merge(mb, on=["study", "setting", "method"], how="left")
    rtt = analysis.rounds_to_target.drop(columns=["setting_order", "method_order", "mb_per_round"], errors="ignore")
    data = data.merge(rtt, on=["study", "setting", "method"], how="left").sort_values(["setting_order", "method_order", "method"], ignore_index=True)
    for column in ("target_metric", "target", "runs", "reached", "success_rate", "median_rounds", "median_mb_to_target", "reduction_pct", "reduction_vs"):
        if column not in data:
            data[column] = np.nan
    display = pd.DataFrame({"setting": [heading(s, t) for s, t in zip(data["study"], data["setting"])], "method": data["method"],
                            "MB/round": [fmt(v, 2) for v in data["mb_per_round"]]})
    display["target"] = [target_text(m, v, analysis.settings) for m, v in zip(data["target_metric"], data["target"])]
    display["rounds to target (median)"] = [median_text(m, r, n) for m, r, n in zip(data["median_rounds"], data["reached"], data["runs"])]
    display["reached"] = [f"{int(r)}/{int(n)}" if pd.notna(n) else "–" for r, n in zip(data["reached"], data["runs"])]
    baseline = data["reduction_vs"].dropna().iloc[0] if data["reduction_vs"].notna().any() else "reference"
    # reduction_pct > 0 is fewer rounds; shown as the signed change in rounds, so more rounds read "+".
    display[f"rounds vs {baseline}"] = [f"{-v + 0.0:+.1f}%" if pd.notna(v) else "–" for v in data["reduction_pct"]]
    display["MB to target (median)"] = [fmt(v, 1) for v in data["median_mb_to_target"]]
    notes = ["MB = 2^20 bytes actually sent per round (upload + download; personal layers are not sent), mean over the runs whatever their status. "
             f"Rounds to target: the first evaluated round at the dataset's target ({scope_phrase(analysis.results, data['method'])}), "
             "over completed and diverged runs; runs that never reach it are censored at the round budget, and the median over seeds counts them as "
             f"later than any round ('not reached' when the middle seed never reaches it); rounds vs {baseline}: the change in median rounds relative to {baseline} (+100% = twice as many rounds); "
             "MB to target: the median over seeds of the MB sent until the round at target."]
    about = "One row per setting (section) and method."
    return [Table("communication", "Communication efficiency", data.drop(columns=["setting_order", "method_order"]), display, "setting", None, notes, about)]


def target_text(metric, value, settings: dict) -> str:
    """'accuracy ≥ 90%' / 'loss ≤ 0.3'; '–' without a target."""
    if pd.isna(value):
        return "–"
    shown = f"{100 * value:g}%" if is_percent(metric) else f"{value:g}"
    return f"{metric} {'≤' if lower_is_better(metric, settings) else '≥'} {shown}"


def median_text(median, reached, runs) -> str:
    if pd.isna(runs):
        return "–"
    return f"{median:.0f}" if pd.notna(median) else f"not reached ({int(reached)}/{int(runs)})"


# ---- significance ---------------------------------------------------------------------------
def significance_table(analysis: Analysis) -> list[Table]:
    """Difference to each reference with its CI and p-values (raw and Holm-adjusted)."""
    data = analysis.paired
    if data.empty:
        log.info("no reference method (%s) in the results: skipping tables/significance", ", ".join(analysis.settings["references"]))
        return []
    percent = is_percent(analysis.settings["metric"])
    scale = "pp" if percent else ""
    display = pd.DataFrame({
        "setting": [heading(s, t) for s, t in zip(data["study"], data["setting"])],
        "comparison": [f"{m} vs {r}" for m, r in zip(data["method"], data["reference"])],
        f"difference{' (' + scale + ')' if scale else ''}": [fmt_ci(d, lo, hi, percent) for d, lo, hi in zip(data["diff"], data["ci_low"], data["ci_high"])],
        "seeds": data["n"].astype(int),
        "p (t)": [fmt_p(p) for p in data["p_t"]],
        "p (Wilcoxon)": [fmt_p(p) for p in data["p_wilcoxon"]],
        "p Holm (t)": [fmt_p(p) for p in data["p_t_holm"]],
        "p Holm (Wilcoxon)": [fmt_p(p) for p in data["p_wilcoxon_holm"]],
        "d_z": [fmt(v, 2) for v in data["effect_dz"]],
        "note": data["note"],
    })
    alpha = analysis.settings["alpha"]
    notes = [f"{metric_name(analysis.settings['metric'])}: method minus reference, each run scored {final_phrase(analysis.settings)}, paired by seed; "
             f"[{interval_phrase(data['ci_method'], analysis.settings['confidence'], 'paired seeds')}]; paired t-test and "
             f"exact Wilcoxon signed-rank test, Holm-corrected over all comparisons of a setting; d_z = mean difference / SD of differences; alpha = {alpha:g}."]
    about = "One row per setting (section) and comparison of a method with a reference method."
    return [Table("significance", "Significance against the reference methods", data.drop(columns=["setting_order", "method_order"]), display, "setting", None, notes, about)]


# ---- ablations ------------------------------------------------------------------------------
def ablation_tables(analysis: Analysis) -> list[Table]:
    """Method x value of the headline metric, for every configured setting sweep present."""
    metric, tables = analysis.settings["metric"], []
    for sweep in analysis.settings["sweeps"]:
        rows = analysis.setting_sweep_rows[sweep["name"]]
        if rows.empty:
            log.info("no settings differ only in %s: skipping tables/ablation_%s", sweep["key"], sweep["name"])
            continue
        tables.append(pivot_table(f"ablation_{sweep['name']}", f"Ablation over {sweep['title']} ({metric_name(metric)})", rows, "method", sweep["title"], metric, analysis,
                                  f"One row per method, one section per group of settings that differ only in {sweep['key']}, one column per value of it."))
    return tables


def sensitivity_tables(analysis: Analysis) -> list[Table]:
    """Setting x hyper-parameter value, for every method hyper-parameter swept (FedLSC's tau
    and per in the paper), plus the reference methods' scores for scale."""
    metric, tables = analysis.settings["metric"], []
    sweeps = analysis.hparam_sweep_rows
    if not sweeps:
        log.info("no method hyper-parameter is swept within a setting: skipping tables/sensitivity_*")
    for (name, hparam), rows in sweeps.items():
        rows = rows.assign(context=[f"{heading(s, t)}" + (f" ({f})" if f else "") for s, t, f in zip(rows["study"], rows["setting"], rows["fixed"])])
        family = family_name(name, analysis.settings["paper_names"])
        tables.append(pivot_table(f"sensitivity_{name}_{hparam}", f"Sensitivity of {family} to {hparam} ({metric_name(metric)})", rows, "context", hparam, metric, analysis,
                                  f"One row per setting (with {family}'s other hyper-parameters in brackets), one column per value of {hparam}."))
    return tables


def pivot_table(name: str, title: str, rows: pd.DataFrame, row_key: str, column_title: str, metric: str, analysis: Analysis, about: str) -> Table:
    """A sweep as a table: one row per `row_key` (within its context), one column per value."""
    percent = is_percent(metric)
    rows = rows.sort_values(["setting_order", "method_order", "value"] if row_key == "method" else ["setting_order", "value"], key=sort_values_key)
    values = sorted(rows["value"].drop_duplicates(), key=sort_key)
    cells = rows.assign(cell=[fmt_ci(m, lo, hi, percent) for m, lo, hi in zip(rows["mean"], rows["ci_low"], rows["ci_high"])])
    section = "context" if row_key == "method" else None
    index = ["context", row_key] if section else [row_key]
    shown = cells.pivot_table(index=index, columns="value", values="cell", aggfunc="first", sort=False).reindex(columns=values)
    shown.columns = [f"{column_title}={format_value(v)}" if column_title != "dataset" else str(v) for v in shown.columns]
    display = shown.fillna("–").reset_index()
    keep = ["study", "context", "setting", "method", "label", "fixed", "value", "mean", "ci_low", "ci_high", "n", "sd"]
    data = rows[[c for c in keep if c in rows]].reset_index(drop=True)
    notes = [f"{mean_note(analysis, rows['ci_method'].dropna())}; {scope_phrase(analysis.results, rows['method'])}; '–': not run."]
    return Table(name, title, data, display, section, None, notes, about)


def sort_values_key(column: pd.Series) -> pd.Series:
    return column.map(sort_key) if column.name == "value" else column


# ---- ranking --------------------------------------------------------------------------------
def leaderboard_table(analysis: Analysis) -> list[Table]:
    """The leaderboard, with the Friedman test, the Nemenyi CD and the control comparisons in its
    notes."""
    ranking, metric = analysis.ranking, analysis.settings["metric"]
    data = ranking.leaderboard
    if data.empty:
        log.info("nothing to rank: skipping tables/leaderboard")
        return []
    percent = is_percent(metric)
    display = data[["rank", "method"]].copy()
    display["rank"] = [f"{r}=" if tied else str(r) for r, tied in zip(data["rank"], data["rank"].duplicated(keep=False))]
    display["average rank"] = [fmt(v, 2) for v in data["average_rank"]]
    display["blocks"] = data["blocks"]
    display[f"mean {metric}"] = [fmt_ci(m, lo, hi, percent) for m, lo, hi in zip(data["mean"], data["ci_low"], data["ci_high"])]
    for column in [c for c in data.columns if c.startswith("vs ")]:
        display[f"{column} (W/T/L)"] = data[column].fillna("–")
    if "decision" in data:
        min_blocks = pairs_needed(analysis.settings["alpha"], 1)
        display[f"verdict vs {analysis.control}"] = [verdict_text(row, min_blocks) for _, row in data.iterrows()]
        display[f"p Holm vs {analysis.control}"] = [fmt_p(p) for p in data["p_control_holm"]]
    display["ranked on"] = data["ranked_on"]
    display["scored model"] = data["method"].map(scored_model(analysis.results))
    for column, values in privacy_columns(analysis.results, data["method"]).items():
        display[column] = values
    about = (f"One row per method, best first, ranked on {metric_name(metric)} ({scope_phrase(analysis.results, data['method'])}, "
             f"each run scored {final_phrase(analysis.settings)}). DP-compatible (client-level DP-FedAvg, record-level DP-SGD) and "
             "SecAgg-compatible: whether the method runs under that privacy mode, derived by running it on synthetic (bench/engine/privacy.py).")
    return [Table("leaderboard", f"Leaderboard ({metric_name(metric)})", data, display, None, None, ranking_notes(analysis), about)]


def scored_model(results) -> dict[str, str]:
    """Per method, the model its headline score is of: rows of both kinds share a leaderboard."""
    return {method: SCORED_MODEL.get(scope, scope) for method, scope in headline_scopes(results).items()}


SCORED_MODEL = {"global": "global", "personal": "personal (mean over clients)"}
def privacy_columns(results, treatments: pd.Series) -> dict[str, list[str]]:
    """The DP-compatible and SecAgg-compatible columns of the treatments' methods (none for results
    that do not name their methods' configs, e.g. made-up scores)."""
    from bench.compatibility import compatibility, compatibility_columns

    if "method_config" not in results.runs:
        return {}
    table = compatibility()
    names = results.runs.drop_duplicates("method").set_index("method")["method_config"].map(lambda text: json.loads(text)["name"])
    rows = [compatibility_columns(names.get(t, ""), table) for t in treatments]
    return {column: [row[column] for row in rows] for column in ("DP-compatible", "SecAgg-compatible")}


def privacy_runs(results) -> bool:
    """Whether any run had a privacy mode on (a DP clip set, or secure aggregation)."""
    runs = results.runs
    dp = [runs[c].notna() for c in ("privacy.client_dp.clip", "privacy.sample_dp.clip") if c in runs]
    secagg = runs["privacy.secure_aggregation"].fillna(False).astype(bool) if "privacy.secure_aggregation" in runs else pd.Series(False, index=runs.index)
    return bool(any(on.any() for on in dp) or secagg.any())


def privacy_compatibility_table(analysis: Analysis) -> list[Table]:
    """Every registered method under each privacy mode: 'runs', or the one-line reason it is refused
    (its declaration), from the table derived by running each method on synthetic
    (bench/methods/privacy_compatibility.json); only in reports of studies with a privacy mode."""
    if not privacy_runs(analysis.results):
        log.info("no run has a privacy mode: skipping tables/privacy_compatibility")
        return []
    from bench.compatibility import MODES, compatibility
    from bench.methods import registry  # imports torch: only for a report that shows the table

    derived, methods = compatibility(), registry()
    data = pd.DataFrame([{"method": name, **{mode: cell(derived.get(name), mode, cls) for mode in MODES}} for name, cls in sorted(methods.items())])
    display = data.rename(columns=PRIVACY_MODE_TITLES)
    about = ("One row per registered method (every one, not only this study's), one column per privacy mode: 'runs' where one round of it under "
             "the mode on synthetic reads nothing the mode hides and the method declares nothing against it (python -m bench.engine.privacy "
             "derives the table; a test keeps it current), else the one line it stops with. Client-level DP needs a server that uses only the "
             "mean of the clients' updates; record-level DP-SGD needs every read of a client's records to go through the shared trainer's fits; "
             "secure aggregation, a server that needs only their sum.")
    return [Table("privacy_compatibility", "Privacy compatibility of every method", data, display, None, None, [], about)]


PRIVACY_MODE_TITLES = {"client_dp": "client-level DP (DP-FedAvg)", "sample_dp": "record-level DP (DP-SGD)", "secure_aggregation": "secure aggregation"}


def cell(row: dict | None, mode: str, cls) -> str:
    """'runs', the method's declared reason for refusing `mode`, or why there is none."""
    from bench.engine.privacy import refusal

    if row is None:
        return "not derived (run python -m bench.engine.privacy)"
    if row[mode]:
        return "runs"
    return refusal(cls, mode) or "stops when run under it on synthetic (reads what the mode hides)"


def verdict_text(row: pd.Series, min_blocks: int) -> str:
    """'better (0.970)', 'undecided (better 0.810)', 'undecided (3 blocks)', 'control', or '–'
    without a block shared with the control."""
    if row["decision"] == "control" or pd.isna(row["p_better"]):
        return "control" if row["decision"] == "control" else "–"
    probs = {region: row[f"p_{region}"] for region in REGIONS}
    likely = max(probs, key=probs.get)
    if row["decision"] != "undecided":
        return f"{row['decision']} ({probs[likely]:.3f})"
    if row["blocks_with_control"] < min_blocks:
        return f"undecided ({int(row['blocks_with_control'])} blocks)"
    return f"undecided ({likely} {probs[likely]:.3f})"


def blocks_phrase(kind: str) -> str:
    return "settings (mean over seeds)" if kind == "setting" else "setting x seed pairs"


def control_phrase(analysis: Analysis) -> str:
    """How the leaderboard compares with the control, in words."""
    settings, control = analysis.settings, analysis.control
    unit = " pp" if is_percent(settings["metric"]) else ""
    return (f"Against the control {control}: Demšar's z = (R_i - R_{control}) / sqrt(k (k + 1) / (6 N)) of the average ranks, two-sided normal p, "
            f"Holm over the k - 1 comparisons (p Holm; undefined where the blocks are too few for any rank difference to reach alpha); and the "
            f"Bayesian signed-rank test (Benavoli et al. 2017) over the blocks each method shares with {control}, ROPE ±{settings['rope']:g}{unit}, "
            f"prior strength {PRIOR:g} at 0, {SAMPLES:,} posterior samples: better, equivalent or worse where that posterior probability is at least "
            f"{settings['bayes_threshold']:g} on at least {pairs_needed(settings['alpha'], 1)} blocks, else undecided (the most probable "
            "region and its probability in brackets).")


def ranking_notes(analysis: Analysis) -> list[str]:
    ranking, alpha = analysis.ranking, analysis.settings["alpha"]
    interval = interval_phrase(ranking.leaderboard["ci_method"].dropna(), analysis.settings["confidence"], "blocks")
    notes = [f"Blocks: {blocks_phrase(ranking.kind)}. Average rank over the complete design (1 = best; methods with equal average ranks share a rank, "
             f"marked '='); mean over blocks [{interval}]; W/T/L = blocks won/tied/lost against each reference."]
    f = ranking.friedman
    if f:
        notes.append(f"{friedman_phrase(f)}; Nemenyi CD = {f['cd']:.3f} (q = {f['q_alpha']:.3f}, alpha = {alpha:g}).")
    if not ranking.control.empty:
        notes.append(control_phrase(analysis))
    return notes + ranking.notes


def pairwise_table(analysis: Analysis) -> list[Table]:
    """Holm-corrected pairwise Wilcoxon tests over shared blocks: the primary pairwise evidence."""
    data = analysis.ranking.pairwise
    if data.empty:
        return []
    percent = is_percent(analysis.settings["metric"])
    display = pd.DataFrame({"method A": data["method_a"], "method B": data["method_b"], "blocks": data["blocks"],
                            "mean A - B": [fmt(v, 2, percent) for v in data["mean_diff"]], "p": [fmt_p(p) for p in data["p"]],
                            "p Holm": [fmt_p(p) for p in data["p_holm"]], "better": data["better"].replace("", "–")})
    notes = ["Wilcoxon signed-rank test over the blocks both methods have (exact up to 16 non-zero differences), Holm-corrected over all pairs; "
             "better: the method that wins where the Holm-adjusted p is at most alpha."]
    blocks = "settings (each method's mean over seeds)" if analysis.ranking.kind == "setting" else "setting x seed pairs"
    about = f"One row per pair of methods; mean A - B of {metric_name(analysis.settings['metric'])} over the {blocks} both have."
    return [Table("pairwise", "Pairwise comparisons over blocks", data, display, None, None, notes, about)]


def in_leaderboard_order(frame: pd.DataFrame, analysis: Analysis) -> pd.DataFrame:
    """The rows of a per-method frame, best-ranked method first."""
    order = {method: rank for rank, method in enumerate(analysis.ranking.leaderboard["method"])}
    return frame.sort_values("method", key=lambda methods: methods.map(order), ignore_index=True)


def control_table(analysis: Analysis) -> list[Table]:
    """Every method against the control: the rank z-test and the Bayesian signed-rank test."""
    if analysis.ranking.control.empty:
        log.info("control method '%s' not in the ranking: skipping tables/control", analysis.settings["control"])
        return []
    data = in_leaderboard_order(analysis.ranking.control, analysis)
    percent, min_blocks = is_percent(analysis.settings["metric"]), pairs_needed(analysis.settings["alpha"], 1)
    display = pd.DataFrame({"method": data["method"], "blocks": [fmt(b, 0) for b in data["blocks"]],
                            f"mean difference{' (pp)' if percent else ''}": [fmt(v, 2, percent) for v in data["mean_diff"]],
                            "z": [fmt(v, 2) for v in data["z"]], "p": [fmt_p(p) for p in data["p_control"]], "p Holm": [fmt_p(p) for p in data["p_control_holm"]]})
    for region in REGIONS:
        display[f"P({region})"] = [fmt(v, 3) for v in data[f"p_{region}"]]
    display["verdict"] = [verdict_text(row, min_blocks) for _, row in data.rename(columns={"blocks": "blocks_with_control"}).iterrows()]
    display["note"] = data["z_note"].fillna("")
    notes = [f"Mean difference: method minus {analysis.control} over the blocks both have ({blocks_phrase(analysis.ranking.kind)}), oriented so that "
             f"positive is better. {control_phrase(analysis)}"]
    about = f"One row per method; z < 0: a better average rank than {analysis.control}."
    return [Table("control", f"Against the control {analysis.control} ({metric_name(analysis.settings['metric'])})", data, display, None, None, notes, about)]


def power_table(analysis: Analysis) -> list[Table]:
    """Per method: the difference to the control this design detects, and the seeds the ROPE needs."""
    if analysis.power.empty:
        log.info("control method '%s' not in the results: skipping tables/power", analysis.settings["control"])
        return []
    data = in_leaderboard_order(analysis.power, analysis)
    settings = analysis.settings
    percent = is_percent(settings["metric"])
    unit = " pp" if percent else ""
    display = pd.DataFrame({"method": data["method"], "settings": data["settings"], "seeds": data["seeds"],
                            f"SD of differences{' (pp)' * percent}": [fmt(v, 2, percent) for v in data["sd"]],
                            f"detectable difference{' (pp)' * percent}": [fmt(v, 2, percent) for v in data["detectable"]],
                            f"seeds for {settings['rope']:g}{unit}": [fmt(v, 0) for v in data["seeds_needed"]], "note": data["note"]})
    notes = [f"SD: of the paired differences to {analysis.control} (same setting and seed), pooled over the settings (each around its own mean); "
             f"seeds: the median number of paired seeds per setting. Detectable difference: the smallest that one setting's paired t-test over that "
             f"many seeds finds with power {POWER:g} at alpha / (k - 1) = {data['alpha_holm'].iloc[0]:.3g} (Holm's first step over the "
             f"{len(data)} comparisons with the control; noncentral t); seeds for {settings['rope']:g}{unit}: the seeds per setting that detect "
             f"a difference of the ROPE ({settings['rope']:g}{unit}) with that power."]
    about = f"One row per method compared with {analysis.control}."
    return [Table("power", f"Power against the control {analysis.control} ({metric_name(settings['metric'])})", data, display, None, None, notes, about)]


def run_status_table(analysis: Analysis) -> list[Table]:
    """Every setting and method with its runs by status and missing seeds: nothing hidden."""
    summary = analysis.summary.drop_duplicates(["study", "setting", "method"])
    data = summary[["study", "setting", "method", "label", "seeds", "completed", "diverged", "failed", "missing_seeds", "seed_list"]].reset_index(drop=True)
    display = pd.DataFrame({"setting": [heading(s, t) for s, t in zip(data["study"], data["setting"])], "method": data["method"], "label": data["label"],
                            "completed": data["completed"], "diverged": data["diverged"], "failed": data["failed"],
                            "missing seeds": data["missing_seeds"].replace("", "–")})
    about = ("One row per setting (section) and method: its runs by status (completed runs enter the statistics; diverged and failed runs are "
             "counted, never dropped) and the seeds other methods of the setting have but it lacks.")
    return [Table("runs", "Runs by status", data, display, "setting", about=about)]


BUILDERS = (main_comparison, communication_table, significance_table, ablation_tables, sensitivity_tables, leaderboard_table, pairwise_table, control_table,
            power_table, run_status_table, privacy_compatibility_table)


UNSCORED = {"privacy_compatibility"}  # tables of no run's score: no model-selection note


def noted(tables: list[Table], settings: dict) -> list[Table]:
    """The tables, each noting the rule that chose the rounds it scores."""
    from bench.stats.selection import rule_text

    for table in [t for t in tables if t.name not in UNSCORED]:
        table.notes.append(f"Model selection (stats.selection={settings['selection']}): every score is taken at {rule_text(settings)}.")
    return tables


def all_tables(analysis: Analysis) -> list[Table]:
    from bench.stats.protocols import PROTOCOL_BUILDERS

    return noted([table for build in (*BUILDERS, *PROTOCOL_BUILDERS) for table in build(analysis)], analysis.settings)
