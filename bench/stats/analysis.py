"""Every statistic of a results set, computed once and shared by tables, figures and report."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from functools import cached_property

import pandas as pd

from bench.errors import UserError
from bench.stats.collect import Results
from bench.stats.fairness import client_scores, fairness_curves, fairness_metric, fairness_scores, unseen_centre_scores
from bench.stats.paired import paired_comparisons, resolve_references
from bench.stats.power import power_table
from bench.stats.ranking import Ranking, rank_methods
from bench.stats.scores import base_metric, headline_curves, scored_runs
from bench.stats.selection import select_rounds, selected_scores
from bench.stats.summaries import curve_bands, per_round_metrics, summarize
from bench.stats.sweeps import frequency_sweep, hparam_sweeps, setting_sweep
from bench.stats.target import communication, rounds_to_target, run_targets

log = logging.getLogger(__name__)


@dataclass
class Analysis:
    results: Results
    settings: dict
    references: list[str]
    control: str | None  # the method the leaderboard compares with (stats.control), if in the results
    curves: pd.DataFrame  # run_id, round, metric, value in the headline scope
    finals: pd.DataFrame  # run_id, metric, final value
    scored: pd.DataFrame  # completed run memberships with their final headline metric
    summary: pd.DataFrame  # study x setting x method x metric: mean, CI, run counts
    paired: pd.DataFrame  # method vs reference per setting
    targets: pd.DataFrame  # per run: reached?, rounds and MB to target
    rounds_to_target: pd.DataFrame  # per setting and method
    mb_per_round: pd.DataFrame  # per setting and method: mean MB sent per round
    ranking: Ranking
    power: pd.DataFrame  # per method: the difference to the control the design detects, the seeds the ROPE needs
    selection: pd.DataFrame  # run_id, client, round, weight: the rounds that score each run (stats.selection)
    clients: pd.DataFrame  # run_id, client, value: each client's local test score (fairness metric) at its selected round
    notes: list[str] = field(default_factory=list)  # what a reader must know (missing metrics, ...)
    timings: dict[str, float] = field(default_factory=dict)

    @cached_property
    def bands(self) -> pd.DataFrame:
        """Per study, setting, method and round: mean and CI of the headline metric over seeds
        (for the convergence figures; computed when first drawn); a fairness score per round
        from the clients' local test scores."""
        metric = self.settings["metric"]
        curves = self.curves if metric == base_metric(metric) else fairness_curves(self.results, fairness_metric(self.settings), self.settings)
        return curve_bands(self.results, curves, metric, self.settings)

    @cached_property
    def last_round_scores(self) -> pd.DataFrame:
        """run_id, metric, value at the last round(s), whatever `stats.selection` is: the other
        side of the model-selection table."""
        if self.settings["selection"] == "last":
            return self.finals
        return selected_scores(self.results, self.curves, select_rounds(self.results, self.curves, self.settings, "last"), "last",
                               self.settings, per_round_metrics(self.results, self.settings))

    @cached_property
    def frequency_rows(self) -> pd.DataFrame:
        """The headline metric per local-epoch count at a fixed budget (communication frequency)."""
        return frequency_sweep(self.results, self.summary, self.settings["metric"])

    @cached_property
    def setting_sweep_rows(self) -> dict[str, pd.DataFrame]:
        """Per configured sweep (by name): the headline metric per value of its key, for the
        ablation tables and heatmaps."""
        metric = self.settings["metric"]
        return {sweep["name"]: setting_sweep(self.results, self.summary, sweep["key"], metric) for sweep in self.settings["sweeps"]}

    @cached_property
    def hparam_sweep_rows(self) -> dict[tuple[str, str], pd.DataFrame]:
        """Per (method, hyper-parameter) swept within a setting: the headline metric per value,
        for the sensitivity tables and figures."""
        return hparam_sweeps(self.results, self.summary, self.settings["metric"])


def mb_per_round(results: Results, comm: pd.DataFrame) -> pd.DataFrame:
    """Mean MB sent per round over the runs of each study, setting and method (all statuses:
    communication does not depend on whether a run finished)."""
    per_run = comm.groupby("run_id")["mb"].mean().rename("mb_per_round")
    runs = results.runs[["study", "setting", "method", "run_id"]].merge(per_run, left_on="run_id", right_index=True)
    return runs.groupby(["study", "setting", "method"], as_index=False)["mb_per_round"].mean()


def check_metrics(curves: pd.DataFrame, settings: dict) -> list[str]:
    """The headline metric (or the per-client metric of a fairness score) must exist in the
    runs; other named metrics may be missing. Returns the notes a reader should see."""
    present = set(map(str, curves["metric"].unique()))  # distinct first: the column has millions of rows
    if not present:
        return ["no run has an evaluated round (all failed or diverged before one): the report holds run counts only"]
    if base_metric(settings["metric"]) not in present:
        raise UserError(f"stats.metric '{settings['metric']}' is not in the runs' metrics; choose one of: {', '.join(sorted(present))} "
                        "(or worst_client_, client_p10_, client_sd_, client_gap_ + one of them)")
    wanted = dict.fromkeys([*settings["table_metrics"], *(goal["metric"] for goal in settings["targets"].values())])
    return [f"metric '{metric}' (stats settings) is not in the runs' metrics: its columns stay empty" for metric in wanted if metric not in present]


def analyse(results: Results, settings: dict) -> Analysis:
    """Compute every statistic (timed step by step, for the log and the benchmark)."""
    timings: dict[str, float] = {}

    def step(name, fn, *args):
        tic = time.perf_counter()
        out = fn(*args)
        timings[name] = time.perf_counter() - tic
        log.debug("%s: %.2f s", name, timings[name])
        return out

    references = resolve_references(results, settings["references"])
    control = next(iter(resolve_references(results, [settings["control"]])), None)
    curves = step("headline curves", headline_curves, results)
    notes = check_metrics(curves, settings)
    for note in notes:
        log.warning(note)
    selection = step("model selection", select_rounds, results, curves, settings)
    finals = step("final scores", selected_scores, results, curves, selection, settings["selection"], settings, per_round_metrics(results, settings))
    metric = fairness_metric(settings)
    clients = step("client scores", client_scores, results, selection, metric)
    fairness = fairness_scores(clients, metric, settings)
    unseen = unseen_centre_scores(results, selection, metric, fairness)
    finals = pd.concat([finals, fairness, unseen], ignore_index=True).astype({"value": float})
    scored = scored_runs(results, finals, settings["metric"])
    summary = step("summaries", summarize, results, finals, settings)
    paired = step("paired tests", paired_comparisons, scored, references, settings)
    comm = communication(results)
    targets = step("rounds to target", run_targets, results, curves, settings, comm)
    rtt = rounds_to_target(results, targets, references)
    mb = step("communication", mb_per_round, results, comm)
    ranking = step("ranking", rank_methods, scored, references, settings, control)
    power = step("power", power_table, scored, control, settings) if control else pd.DataFrame()
    return Analysis(results, settings, references, control, curves, finals, scored, summary, paired, targets, rtt, mb, ranking, power, selection, clients,
                    notes, timings)
