"""Every statistic of a results set, computed once and shared by tables, figures and report."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from functools import cached_property

import pandas as pd

from bench.errors import UserError
from bench.stats.collect import Results
from bench.stats.paired import paired_comparisons, resolve_references
from bench.stats.ranking import Ranking, rank_methods
from bench.stats.scores import final_scores, headline_curves, scored_runs
from bench.stats.summaries import curve_bands, summarize
from bench.stats.sweeps import hparam_sweeps, setting_sweep
from bench.stats.target import communication, rounds_to_target, run_targets

log = logging.getLogger(__name__)


@dataclass
class Analysis:
    results: Results
    settings: dict
    references: list[str]
    curves: pd.DataFrame  # run_id, round, metric, value in the headline scope
    finals: pd.DataFrame  # run_id, metric, final value
    scored: pd.DataFrame  # completed run memberships with their final headline metric
    summary: pd.DataFrame  # study x setting x method x metric: mean, CI, run counts
    paired: pd.DataFrame  # method vs reference per setting
    targets: pd.DataFrame  # per run: reached?, rounds and MB to target
    rounds_to_target: pd.DataFrame  # per setting and method
    mb_per_round: pd.DataFrame  # per setting and method: mean MB sent per round
    ranking: Ranking
    notes: list[str] = field(default_factory=list)  # what a reader must know (missing metrics, ...)
    timings: dict[str, float] = field(default_factory=dict)

    @cached_property
    def bands(self) -> pd.DataFrame:
        """Per study, setting, method and round: mean and CI of the headline metric over seeds
        (for the convergence figures; computed when first drawn)."""
        return curve_bands(self.results, self.curves, self.settings["metric"], self.settings)

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
    """The headline metric must exist in the runs; other named metrics may be missing. Returns
    the notes a reader should see."""
    present = set(curves["metric"].astype(str).unique())
    if not present:
        return ["no run has an evaluated round (all failed or diverged before one): the report holds run counts only"]
    if settings["metric"] not in present:
        raise UserError(f"stats.metric '{settings['metric']}' is not in the runs' metrics; choose one of: {', '.join(sorted(present))}")
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
    curves = step("headline curves", headline_curves, results)
    notes = check_metrics(curves, settings)
    for note in notes:
        log.warning(note)
    finals = step("final scores", final_scores, curves, settings["last_k"])
    scored = scored_runs(results, finals, settings["metric"])
    summary = step("summaries", summarize, results, finals, settings)
    paired = step("paired tests", paired_comparisons, scored, references, settings)
    comm = communication(results)
    targets = step("rounds to target", run_targets, results, curves, settings, comm)
    rtt = rounds_to_target(results, targets, references)
    mb = step("communication", mb_per_round, results, comm)
    ranking = step("ranking", rank_methods, scored, references, settings)
    return Analysis(results, settings, references, curves, finals, scored, summary, paired, targets, rtt, mb, ranking, notes, timings)
