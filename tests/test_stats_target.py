"""Rounds to target with censoring, on hand-made curves in the engine's run format."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from statsmodels.duration.survfunc import SurvfuncRight

from bench.stats.collect import load_results
from bench.stats.scores import headline_curves
from bench.stats.settings import resolve_stats
from bench.stats.synthetic import grid_configs, record_metrics_sha256, write_run
from bench.stats.target import censored_median, rounds_to_target, run_targets


def test_censored_median_hand_worked():
    assert censored_median([4, 6, 8], [1, 1, 1]) == 6
    assert censored_median([4, 5, 6, 20], [1, 1, 1, 0]) == 5.5  # the censored run is the latest
    assert np.isnan(censored_median([3, 5, 20, 20], [1, 1, 0, 0]))  # the middle is censored: not reached
    assert np.isnan(censored_median([3, 20, 20], [1, 0, 0]))
    assert censored_median([7, 20, 4], [1, 0, 1]) == 7


@pytest.mark.parametrize("times, reached", [([3, 5, 7, 9, 10], [1, 1, 0, 1, 0]), ([2, 4, 10], [1, 1, 0]), ([6, 2, 9, 10, 10, 10, 10], [1, 1, 1, 0, 0, 0, 0])])
def test_censored_median_is_the_kaplan_meier_median_for_an_odd_number_of_seeds(times, reached):
    # With an odd number of runs censored at the budget no median falls on a step edge, so the
    # conventions agree and statsmodels' Kaplan-Meier estimate is an independent check.
    budget = 10.0
    times = np.where(np.array(reached, bool), times, budget)
    expected = SurvfuncRight(times.astype(float), np.array(reached)).quantile(0.5)
    assert censored_median(times, reached) == pytest.approx(expected, nan_ok=True)


def curve_runs(tmp_path, accuracies: dict[tuple[str, int], list[float]], status: dict | None = None):
    """Runs whose global accuracy per round is given exactly (method, seed) -> curve."""
    paths = []
    for (method, seed), curve in accuracies.items():
        cfg = grid_configs({"data.name": ["ham10000"], "train.rounds": [len(curve)], "method": [method], "seed": [seed]})[0]
        state = (status or {}).get((method, seed), "completed")
        path = write_run(tmp_path, cfg, state, len(curve) if state == "completed" else len(curve) // 2 + 1)
        metrics = pd.read_parquet(path.parent / "metrics.parquet")
        hit = (metrics["scope"] == "global") & (metrics["metric"] == "accuracy")
        metrics.loc[hit, "value"] = np.array(curve)[metrics.loc[hit, "round"].to_numpy() - 1]
        metrics.to_parquet(path.parent / "metrics.parquet", index=False)
        record_metrics_sha256(path)
        paths.append(path)
    return paths


def test_rounds_to_target_counts_censored_runs_and_reduction(tmp_path):
    ramp = lambda reach: [0.5] * (reach - 1) + [0.95] * (11 - reach)  # noqa: E731 - first reaches 0.9 at `reach`
    never = [0.5] * 10
    curve_runs(tmp_path, {("fedavg", 0): ramp(8), ("fedavg", 1): ramp(6), ("fedavg", 2): never,
                          ("fedprox", 0): ramp(4), ("fedprox", 1): ramp(2), ("fedprox", 2): ramp(9),
                          ("fedavg_fc", 0): never, ("fedavg_fc", 1): ramp(3), ("fedavg_fc", 2): never})
    settings = resolve_stats({})
    results = load_results(tmp_path, settings, progress=False)
    targets = run_targets(results, headline_curves(results), settings).set_index("run_id")
    table = rounds_to_target(results, targets.reset_index(), ["FedAvg"]).set_index("method")
    assert table.loc["FedAvg", "median_rounds"] == 8  # 6, 8, censored -> 8
    assert table.loc["FedAvg", "reached"] == 2 and table.loc["FedAvg", "runs"] == 3 and table.loc["FedAvg", "success_rate"] == pytest.approx(2 / 3)
    assert table.loc["FedProx", "median_rounds"] == 4
    assert table.loc["FedProx", "reduction_pct"] == pytest.approx(50.0)  # 4 vs 8 rounds
    assert np.isnan(table.loc["FedAvg-FC", "median_rounds"]) and np.isnan(table.loc["FedAvg-FC", "reduction_pct"])
    sent = results.runs.set_index("method").loc["FedAvg", "full_state_mb_per_round"].iloc[0]
    assert table.loc["FedAvg", "mb_per_round"] == pytest.approx(sent)
    assert table.loc["FedAvg", "median_mb_to_target"] == pytest.approx(8 * sent)
    censored = targets[~targets["reached"]]
    assert (censored["round"] == 10).all()
    np.testing.assert_allclose(censored["mb_to_target"], 10 * censored["mb_per_round"])


def test_diverged_runs_are_censored_and_failed_runs_left_out(tmp_path):
    reach_early = [0.5, 0.95] + [0.95] * 8
    curve_runs(tmp_path, {("fedavg", 0): reach_early, ("fedavg", 1): reach_early, ("fedavg", 2): [0.5] * 10},
               status={("fedavg", 1): "failed", ("fedavg", 2): "diverged"})
    settings = resolve_stats({})
    results = load_results(tmp_path, settings, progress=False)
    targets = run_targets(results, headline_curves(results), settings)
    assert len(targets) == 2  # the failed run is not an outcome of the method
    diverged = targets.merge(results.runs[["run_id", "status"]]).set_index("status").loc["diverged"]
    assert not diverged["reached"] and diverged["round"] == 10  # at risk to the end of the budget
    assert diverged["mb_to_target"] == pytest.approx(10 * results.runs["full_state_mb_per_round"].iloc[0])


def test_lower_is_better_targets(tmp_path):
    curve_runs(tmp_path, {("fedavg", 0): [0.5] * 10})
    results_dir = tmp_path
    metrics_path = next(results_dir.glob("*/metrics.parquet"))
    metrics = pd.read_parquet(metrics_path)
    loss = (metrics["scope"] == "global") & (metrics["metric"] == "loss")
    metrics.loc[loss, "value"] = 2.0 / metrics.loc[loss, "round"]  # 2, 1, 0.67, 0.5, ...
    metrics.to_parquet(metrics_path, index=False)
    record_metrics_sha256(metrics_path.parent / "run.json")
    settings = resolve_stats({"targets": {"ham10000": {"metric": "loss", "value": 0.5}}})
    results = load_results(tmp_path, settings, progress=False)
    assert run_targets(results, headline_curves(results), settings)["round"].item() == 4


def test_communication_table_shows_the_signed_change_in_rounds(tmp_path):
    """More rounds than the baseline read as "+": FedAvg needs 8 median rounds, FedProx 4 (-50%)."""
    from bench.stats.analysis import analyse
    from bench.stats.tables import communication_table

    ramp = lambda reach: [0.5] * (reach - 1) + [0.95] * (11 - reach)  # noqa: E731
    curve_runs(tmp_path, {("fedavg", s): ramp(8) for s in range(3)} | {("fedprox", s): ramp(4) for s in range(3)})
    settings = resolve_stats({"references": ["fedprox"]})
    table = communication_table(analyse(load_results(tmp_path, settings, progress=False), settings))[0]
    shown = table.display.set_index("method")["rounds vs FedProx"]
    assert shown["FedAvg"] == "+100.0%" and shown["FedProx"] == "+0.0%"
