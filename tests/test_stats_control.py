"""Comparisons with the control: Demšar's rank z-test with Holm, the Bayesian signed-rank test
against hand-worked values and baycomp, and the leaderboard's verdicts."""

from __future__ import annotations

import math
import warnings
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
from scipy import stats
from statsmodels.stats.multitest import multipletests

from bench.stats.bayes import signed_rank_probs
from bench.stats.control import REGIONS, against_control, decision, min_rank_p, rank_z_tests, rope_units
from bench.stats.ranking import rank_methods
from bench.stats.settings import resolve_stats
from bench.stats.significance import pairs_needed
from test_stats_ranking import scored_frame

MC = 0.01  # 50,000 posterior draws: the Monte-Carlo SE of a probability is at most 0.0023

# k = 3 methods in N = 6 blocks (control C, A, B); rank sums 15, 9, 12: average ranks 2.5, 1.5, 2
RANKS = pd.DataFrame([[3, 1, 2], [3, 1, 2], [2, 1, 3], [3, 2, 1], [1, 2, 3], [3, 2, 1]], columns=["C", "A", "B"], dtype=float)


def test_rank_z_test_hand_worked():
    # SE = sqrt(k (k + 1) / (6 N)) = sqrt(12 / 36) = 0.57735; z_A = (1.5 - 2.5) / SE = -1.7321,
    # z_B = -0.8660; p = 2 (1 - Phi(|z|)) = 0.08326, 0.38648; Holm: 2 x 0.08326 = 0.16652, then 0.38648.
    table = rank_z_tests(RANKS, "C", 0.05).set_index("method")
    assert table["z"].tolist() == pytest.approx([-math.sqrt(3), -math.sqrt(3) / 2])
    assert table["p_control"].tolist() == pytest.approx([0.083265, 0.386476], abs=1e-6)
    assert table["p_control_holm"].tolist() == pytest.approx([0.166530, 0.386476], abs=1e-6)
    assert (table["z_note"] == "").all()


def test_rank_z_test_holm_equals_statsmodels():
    rng = np.random.default_rng(1)
    ranks = pd.DataFrame(np.argsort(rng.normal(size=(20, 6)) + np.arange(6) * 0.4, axis=1) + 1.0, columns=list("CABDEF"))
    table = rank_z_tests(ranks, "C", 0.05)
    expected = multipletests(table["p_control"], method="holm")[1]
    np.testing.assert_allclose(table["p_control_holm"], expected, rtol=1e-12)
    assert len(table) == ranks.shape[1] - 1


def test_rank_z_test_from_too_few_blocks_is_underpowered_not_significant():
    # k = 2, N = 4, the method first in every block: z = 1 / sqrt(6 / 24) = 2, normal p = 0.0455,
    # but the exact sign-flip p is 2 / 2^4 = 0.125 > alpha: no p is given, the note says why.
    ranks = pd.DataFrame({"C": [2.0] * 4, "A": [1.0] * 4})
    assert min_rank_p(2, 4) == 0.125 and min_rank_p(3, 2) == pytest.approx(2 / 36)
    row = rank_z_tests(ranks, "C", 0.05).iloc[0]
    assert row["z"] == pytest.approx(-2.0) and 2 * stats.norm.sf(2.0) < 0.05
    assert np.isnan(row["p_control"]) and np.isnan(row["p_control_holm"]) and row["z_note"].startswith("underpowered: with N = 4 blocks")


@pytest.mark.parametrize("z, expected", [
    # One block: weights (w0, w1) ~ Dirichlet(0.5, 1), so w0 ~ Beta(0.5, 1), P(w0 < x) = sqrt(x).
    # z = 3r > 2r: theta_better = w1^2 + 2 w0 w1 = 1 - w0^2 against theta_equal = w0^2, so
    # P(better) = P(w0 < 1/sqrt 2) = 2^-1/4 = 0.8409.
    (0.03, (0.0, 1 - 2**-0.25, 2**-0.25)),
    # r < z = 1.5r <= 2r: only z + z leaves the ROPE: theta_better = w1^2, P(w1 > 1/sqrt 2) =
    # P(w0 < 1 - 1/sqrt 2) = 0.5412; negated, the same for worse.
    (0.015, (0.0, 1 - (1 - 2**-0.5) ** 0.5, (1 - 2**-0.5) ** 0.5)),
    (-0.015, ((1 - 2**-0.5) ** 0.5, 1 - (1 - 2**-0.5) ** 0.5, 0.0)),
])
def test_bayesian_signed_rank_hand_worked(z, expected):
    assert signed_rank_probs(np.array([z]), 0.01, seed=0) == pytest.approx(expected, abs=MC)


def test_bayesian_signed_rank_edge_cases():
    assert signed_rank_probs(np.zeros(6), 0.01, seed=0) == (0.0, 1.0, 0.0)  # every sum in the ROPE
    assert np.isnan(signed_rank_probs(np.array([]), 0.01, seed=0)).all()  # the prior alone is no evidence
    diffs = np.random.default_rng(0).normal(0.01, 0.01, 9)
    assert signed_rank_probs(diffs, 0.01, seed=3) == signed_rank_probs(diffs, 0.01, seed=3)  # seeded


@pytest.mark.parametrize("diffs, rope", [
    ([0.012, 0.004, -0.003, 0.02, 0.015, 0.009, 0.001, 0.011], 0.01),
    ([0.0, 0.0, 0.01, -0.01, 0.02, 0.005], 0.01),  # sums on the ROPE's bounds count half
    ([-0.5, 0.2, 1.4, 2.1, 0.9, 1.1, -0.3, 1.7, 0.8, 1.2, 0.6], 1.0),
])
def test_bayesian_signed_rank_equals_baycomp(diffs, rope):
    from baycomp import SignedRankTest

    diffs = np.array(diffs)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = SignedRankTest.probs(np.zeros(len(diffs)), diffs, rope, random_state=1)  # y - x = the differences
    assert signed_rank_probs(diffs, rope, seed=0) == pytest.approx(ref, abs=MC)


def test_decision_needs_the_threshold_and_enough_blocks():
    assert decision((0.0, 0.03, 0.97), 6, 0.95, 6) == "better"
    assert decision((0.0, 0.96, 0.04), 6, 0.95, 6) == "equivalent"
    assert decision((0.96, 0.04, 0.0), 6, 0.95, 6) == "worse"
    assert decision((0.0, 0.06, 0.94), 6, 0.95, 6) == "undecided"
    assert decision((0.0, 0.0, 1.0), 5, 0.95, 6) == "undecided"  # two identical blocks make the posterior certain of anything
    assert decision((np.nan,) * 3, 0, 0.95, 6) == "undecided"


def test_rope_is_in_percentage_points_for_percent_metrics():
    assert rope_units(resolve_stats({})) == pytest.approx(0.01)  # accuracy is stored as a fraction
    assert rope_units(resolve_stats({"metric": "loss", "rope": 0.05})) == pytest.approx(0.05)


def test_every_method_gets_a_verdict_against_the_control_in_the_leaderboard():
    from bench.stats.tables import control_table, leaderboard_table

    values = {"FedAvg": [0.70, 0.72, 0.71, 0.69, 0.70, 0.73, 0.68]}
    values["Same"] = [v + d for v, d in zip(values["FedAvg"], [0.001, -0.002, 0.0, 0.002, -0.001, 0.001, 0.0])]
    values["Better"] = [v + 0.05 for v in values["FedAvg"]]
    values["Worse"] = [v - 0.05 for v in values["FedAvg"]]
    values["Rare"] = [0.9, 0.9] + [np.nan] * 5  # two blocks: ranked on pairwise evidence, too few blocks to decide
    settings = resolve_stats({})
    ranking = rank_methods(scored_frame(values), ["FedAvg"], settings, "FedAvg")
    control = ranking.control.set_index("method")
    assert dict(control["decision"]) == {"FedAvg": "control", "Same": "equivalent", "Better": "better", "Worse": "worse", "Rare": "undecided"}
    assert control.loc["Rare", "blocks"] == 2 < pairs_needed(settings["alpha"], 1) and control.loc["Rare", "p_better"] > 0.95
    assert control.loc["Rare", "z_note"].startswith("no rank test") and np.isnan(control.loc["Rare", "p_control_holm"])
    design = [m for m in ranking.design.columns if m != "FedAvg"]
    expected = rank_z_tests(ranking.ranks, "FedAvg", settings["alpha"]).set_index("method")
    np.testing.assert_allclose(control.loc[design, "p_control_holm"], expected.loc[design, "p_control_holm"])
    runs = pd.DataFrame({"method": list(values), "headline_scope": "global"})
    analysis = SimpleNamespace(ranking=ranking, settings=settings, results=SimpleNamespace(runs=runs), control="FedAvg")
    (board,) = leaderboard_table(analysis)
    verdicts = dict(zip(board.display["method"], board.display["verdict vs FedAvg"]))
    assert verdicts["FedAvg"] == "control" and verdicts["Rare"] == "undecided (2 blocks)"
    assert verdicts["Better"] == f"better ({control.loc['Better', 'p_better']:.3f})" and verdicts["Same"].startswith("equivalent (")
    assert "p Holm vs FedAvg" in board.display and any("Bayesian signed-rank test" in note for note in board.notes)
    (table,) = control_table(analysis)
    assert table.display["method"].tolist() == board.display["method"].tolist()  # leaderboard order
    assert [f"P({r})" for r in REGIONS] == [c for c in table.display.columns if c.startswith("P(")]


def test_without_the_control_in_the_results_nothing_is_compared():
    ranking = rank_methods(scored_frame({"A": [0.7, 0.8], "B": [0.6, 0.7]}), [], resolve_stats({}), None)
    assert ranking.control.empty and "decision" not in ranking.leaderboard
    alone = against_control(pd.DataFrame({"C": [0.7, 0.8]}), pd.DataFrame(), "C", resolve_stats({}))
    assert alone["decision"].tolist() == ["control"]


def test_no_block_shared_by_all_is_no_rank_test_and_no_verdict():
    ranking = rank_methods(scored_frame({"A": [0.7, 0.8, np.nan, np.nan], "B": [np.nan, np.nan, 0.6, 0.7]}), [], resolve_stats({}), "A")
    row = ranking.control.set_index("method").loc["B"]
    assert row["blocks"] == 0 and row["decision"] == "undecided" and np.isnan(row["p_better"]) and row["z_note"].startswith("no rank test")
