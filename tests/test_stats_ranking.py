"""Friedman, Nemenyi and the leaderboard against scipy, Demšar (2006) and hand-worked ranks."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from bench.stats.captions import friedman_phrase
from bench.stats.ranking import block_ranks, cliques, complete_design, critical_difference, friedman, nemenyi_q, pairwise_wilcoxon, rank_methods
from bench.stats.settings import resolve_stats
from bench.stats.significance import CONSTANT_NOTE

DEMSAR_Q05 = {2: 1.960, 3: 2.343, 4: 2.569, 5: 2.728, 6: 2.850, 7: 2.949, 8: 3.031, 9: 3.102, 10: 3.164}


@pytest.mark.parametrize("k", sorted(DEMSAR_Q05))
def test_nemenyi_q_equals_demsar_table(k):
    # Demšar's Table 5 gives three decimals, rounded from a three-decimal studentized range
    # table (k = 3: 2.3437 is printed 2.343, k = 7: 2.9483 is printed 2.949): equal to 1e-3.
    assert nemenyi_q(k, 0.05) == pytest.approx(DEMSAR_Q05[k], abs=1e-3)


def test_critical_difference_hand_worked():
    # Demšar's example: k = 4 methods, N = 14 data sets -> CD = 2.569 sqrt(4*5/(6*14)) = 1.25
    assert critical_difference(4, 14, 0.05) == pytest.approx(2.569 * math.sqrt(20 / 84), abs=1e-3)
    assert critical_difference(4, 14, 0.05) == pytest.approx(1.25, abs=0.01)


def test_block_ranks_share_ties():
    ranks = block_ranks(np.array([[0.9, 0.8, 0.8, 0.7], [0.5, 0.5, 0.5, 0.6]]))
    np.testing.assert_array_equal(ranks, [[1, 2.5, 2.5, 4], [3, 3, 3, 1]])


@pytest.mark.parametrize("seed", range(4))
def test_friedman_equals_scipy_with_and_without_ties(seed):
    rng = np.random.default_rng(seed)
    scores = np.round(rng.normal(size=(12, 5)), 1 if seed % 2 else 6)  # rounding to 0.1 makes ties
    result = friedman(block_ranks(scores))
    ref = stats.friedmanchisquare(*scores.T)
    assert result["chi2"] == pytest.approx(ref.statistic, rel=1e-10)
    assert result["p"] == pytest.approx(ref.pvalue, rel=1e-10)
    n, k = scores.shape
    assert result["iman_davenport_f"] == pytest.approx((n - 1) * ref.statistic / (n * (k - 1) - ref.statistic), rel=1e-10)


def test_friedman_all_tied_blocks_are_no_test():
    result = friedman(block_ranks(np.ones((4, 3))))
    assert np.isnan([result["chi2"], result["p"], result["iman_davenport_f"], result["p_f"]]).all()
    assert result["undefined"] == "undefined: every block a complete tie"
    assert friedman_phrase({**result, "alpha": 0.05}) == "Friedman test (k = 3, N = 4) undefined: every block a complete tie"


@pytest.mark.parametrize("ranks", [[[1, 2, 3], [1, 2, 3]], [[1, 2.5, 2.5], [1, 2.5, 2.5], [1, 2.5, 2.5]], [[2, 1, 3]]])
def test_iman_davenport_is_undefined_when_every_block_ranks_alike(ranks):
    # k = 3, N = 2, the same ranks twice: chi2 = 12 N / (k (k + 1)) sum R^2 - 3 N (k + 1) = 2 (1 + 4 + 9) - 24
    # = 4 = N (k - 1), p = exp(-4 / 2) = 0.135; F = (N - 1) chi2 / (N (k - 1) - chi2) divides by
    # zero (it was inf, p < 0.001). With ties or a single block chi2 also reaches N (k - 1).
    ranks = np.array(ranks, dtype=float)
    n, k = ranks.shape
    result = {**friedman(ranks), "alpha": 0.05}
    assert result["chi2"] == pytest.approx(n * (k - 1)) and result["p"] == pytest.approx(math.exp(-n * (k - 1) / 2))
    assert np.isnan(result["iman_davenport_f"]) and np.isnan(result["p_f"])
    text = friedman_phrase(result)
    assert text.endswith("Iman-Davenport F undefined: identical ranks in every block") and "inf" not in text and "< 0.001" not in text


def test_iman_davenport_below_alpha_where_friedman_is_not_is_not_claimed():
    # k = 3, N = 3, ranks (1,2,3), (1,2,3), (1,3,2): mean ranks 1, 7/3, 8/3, chi2 = 3 (1 + 49/9 + 64/9) - 36
    # = 14/3, p = exp(-7/3) = 0.097; F = 2 (14/3) / (6 - 14/3) = 7 on (2, 4) df, p = (1 + 2 x 7 / 4)^-2 = 0.049.
    result = {**friedman(np.array([[1.0, 2, 3], [1, 2, 3], [1, 3, 2]])), "alpha": 0.05}
    assert result["chi2"] == pytest.approx(14 / 3) and result["p"] == pytest.approx(math.exp(-7 / 3))
    assert result["iman_davenport_f"] == pytest.approx(7.0) and result["p_f"] == pytest.approx(4.5**-2)
    assert "no difference is claimed" in friedman_phrase(result)
    assert "claimed" not in friedman_phrase({**result, "alpha": 0.01})


def test_pairwise_wilcoxon_of_a_constant_difference_is_no_test_but_counts_in_holm():
    a = np.array([0.70, 0.72, 0.71, 0.69, 0.70, 0.73])
    scores = pd.DataFrame({"A": a, "B": (a * 3 - 0.3) / 3, "C": [0.75, 0.74, 0.77, 0.70, 0.76, 0.74]})  # A - B = 0.1 up to rounding
    table = pairwise_wilcoxon(scores, 0.05).set_index(["method_a", "method_b"])
    assert np.isnan(table.loc[("A", "B"), "p"]) and table.loc[("A", "B"), "wilcoxon_method"] == CONSTANT_NOTE and table.loc[("A", "B"), "better"] == ""
    p = table["p"].dropna().sort_values()
    assert table["p_holm"].dropna().sort_values().tolist() == pytest.approx([3 * p.iloc[0], max(3 * p.iloc[0], 2 * p.iloc[1])])


def test_cliques_join_methods_closer_than_cd():
    average = pd.Series({"A": 1.0, "B": 1.5, "C": 2.6, "D": 3.9})
    assert cliques(average, 1.2) == [["A", "B"], ["B", "C"]]
    assert cliques(average, 3.0) == [["A", "B", "C", "D"]]
    assert cliques(average, 0.1) == []


def test_complete_design_keeps_a_method_missing_one_setting_and_drops_a_rare_variant():
    scores = pd.DataFrame(np.arange(40, dtype=float).reshape(10, 4), columns=["A", "B", "C", "rare"])
    scores.loc[3, "C"] = np.nan  # one failed setting: C is still ranked, on 9 blocks
    scores.loc[1:, "rare"] = np.nan  # a sweep variant run in one setting of ten
    design = complete_design(scores)
    assert list(design.columns) == ["A", "B", "C"] and len(design) == 9


def scored_frame(values: dict[str, list[float]], seeds: int = 1) -> pd.DataFrame:
    """Completed runs: method -> one final score per setting (block); NaN = not run."""
    rows = []
    for method, scores in values.items():
        for block, score in enumerate(scores):
            for seed in range(seeds):
                if not np.isnan(score):
                    rows.append({"study": "all", "setting": f"s{block}", "block": f"s{block}", "method": method, "seed": seed,
                                 "run_id": f"{method}-{block}-{seed}", "value": score})
    return pd.DataFrame(rows)


def test_ranking_with_a_method_missing_in_some_settings():
    scored = scored_frame({
        "FedAvg": [0.70, 0.72, 0.71, 0.69, 0.70, 0.73],
        "Mine": [0.75, 0.74, 0.77, 0.70, 0.76, 0.74],
        "Other": [0.71, 0.70, np.nan, 0.69, 0.72, 0.73],
        "Sweep": [0.80, np.nan, np.nan, np.nan, np.nan, np.nan],
    })
    ranking = rank_methods(scored, ["FedAvg"], resolve_stats({}))
    assert ranking.kind == "setting" and list(ranking.design.columns) == ["FedAvg", "Mine", "Other"] and len(ranking.design) == 5
    board = ranking.leaderboard.set_index("method")
    assert board.loc["Mine", "rank"] == 1 and board.loc["Mine", "average_rank"] == 1.0
    expected = block_ranks(ranking.design.to_numpy()).mean(0)
    np.testing.assert_allclose(board.loc[list(ranking.design.columns), "average_rank"], expected)
    assert board.loc["Sweep", "ranked_on"] == "pairwise evidence only" and board.loc["Sweep", "rank"] == 4
    assert board.loc["Mine", "vs FedAvg"] == "6/0/0"
    other = scored[scored["method"] == "Other"].set_index("block")["value"]
    fedavg = scored[scored["method"] == "FedAvg"].set_index("block")["value"].reindex(other.index)
    diff = (other - fedavg).round(12)
    assert board.loc["Other", "vs FedAvg"] == f"{(diff > 0).sum()}/{(diff == 0).sum()}/{(diff < 0).sum()}"
    pair = ranking.pairwise.set_index(["method_a", "method_b"]).loc[("FedAvg", "Mine")]
    assert pair["blocks"] == 6 and pair["p"] == pytest.approx(stats.wilcoxon(
        scored[scored["method"] == "FedAvg"]["value"].to_numpy() - scored[scored["method"] == "Mine"]["value"].to_numpy()).pvalue)
    friedman_p = stats.friedmanchisquare(*ranking.design.to_numpy().T).pvalue
    assert ranking.friedman["p"] == pytest.approx(friedman_p)


def test_one_setting_ranks_over_seeds_and_lower_is_better_flips():
    scored = scored_frame({"A": [2.0], "B": [1.0], "C": [3.0]}, seeds=3)
    scored["value"] += scored["seed"] * 0.01
    settings = resolve_stats({"metric": "loss"})
    ranking = rank_methods(scored, [], settings)
    assert ranking.kind == "seed" and len(ranking.design) == 3
    assert ranking.leaderboard["method"].tolist() == ["B", "A", "C"]  # smallest loss first


def test_tie_margin_counts_small_differences_as_ties():
    scored = scored_frame({"R": [0.70, 0.70, 0.70], "M": [0.705, 0.69, 0.75]})
    board = rank_methods(scored, ["R"], resolve_stats({"ranking": {"tie_margin": 0.01}})).leaderboard.set_index("method")
    assert board.loc["M", "vs R"] == "1/2/0"


def test_tied_methods_share_their_rank_and_the_leaderboard_marks_it():
    from types import SimpleNamespace

    from bench.stats.tables import leaderboard_table

    scored = scored_frame({"A": [0.9, 0.8, 0.7], "B": [0.9, 0.8, 0.7], "C": [0.5, 0.6, 0.4], "D": [0.6, 0.5, 0.6]})
    settings = resolve_stats({})
    ranking = rank_methods(scored, ["A"], settings)
    assert dict(zip(ranking.leaderboard["method"], ranking.leaderboard["rank"])) == {"A": 1, "B": 1, "D": 3, "C": 4}
    runs = pd.DataFrame({"method": list("ABCD"), "headline_scope": "global"})  # what the leaderboard's caption reads of the runs
    (table,) = leaderboard_table(SimpleNamespace(ranking=ranking, settings=settings, results=SimpleNamespace(runs=runs)))
    assert dict(zip(table.display["method"], table.display["rank"])) == {"A": "1=", "B": "1=", "D": "3", "C": "4"}
