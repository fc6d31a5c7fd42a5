"""Paired t, exact Wilcoxon and Holm against scipy / statsmodels and hand-worked numbers."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats
from statsmodels.stats.multitest import multipletests

from bench.stats.paired import comparisons, paired_comparisons, too_few_seeds
from bench.stats.settings import resolve_stats
from bench.stats.significance import CONSTANT_NOTE, cohen_dz, constant, holm, min_wilcoxon_p, paired_t, pairs_needed, wilcoxon


def signed_rank_sum(x, axis=-1):
    return (stats.rankdata(np.abs(x), axis=-1) * (x > 0)).sum(axis=-1)


def test_paired_t_equals_scipy_ttest_rel():
    rng = np.random.default_rng(0)
    a, b = rng.normal(0.8, 0.02, (30, 5)), rng.normal(0.79, 0.02, (30, 5))
    t, p = paired_t(a - b)
    ref = stats.ttest_rel(a, b, axis=1)
    np.testing.assert_allclose(t, ref.statistic, rtol=1e-10)
    np.testing.assert_allclose(p, ref.pvalue, rtol=1e-10)


def test_paired_t_needs_two_pairs():
    t, p = paired_t(np.array([[0.1]]))
    assert np.isnan(t[0]) and np.isnan(p[0])


def test_wilcoxon_equals_scipy_exact_without_ties():
    diffs = np.random.default_rng(1).normal(0.01, 0.02, (50, 8))
    w, p, how = wilcoxon(diffs)
    for row, wi, pi in zip(diffs, w, p):
        ref = stats.wilcoxon(row, method="exact")
        assert pi == pytest.approx(ref.pvalue, abs=1e-12)
        assert wi == pytest.approx(signed_rank_sum(row))
    assert set(how) == {"exact"}


def test_wilcoxon_with_ties_and_zeros_is_the_exact_sign_flip_distribution():
    # Ties and zeros: scipy's 'exact' tables assume neither; the exact null is all sign flips
    # of the zero-dropped differences, which scipy.stats.permutation_test enumerates.
    diffs = np.round(np.random.default_rng(2).normal(0, 1, (25, 6)) * 2) / 2
    _, p, _ = wilcoxon(diffs)
    for row, pi in zip(diffs, p):
        kept = row[row != 0]
        if len(np.unique(row)) == 1:  # all zero or all equal: no test (see the constant-difference tests)
            assert np.isnan(pi)
            continue
        ref = stats.permutation_test((kept,), signed_rank_sum, permutation_type="samples", n_resamples=np.inf, vectorized=True)
        assert pi == pytest.approx(ref.pvalue, abs=1e-12)


def test_wilcoxon_hand_worked_example():
    # d = (1, 2, 3, 4, 5): all positive, W+ = 15; only 1 of the 32 sign patterns is as extreme
    # on each side -> p = 2/32 = 0.0625, the floor with five seeds.
    w, p, _ = wilcoxon(np.array([[1.0, 2, 3, 4, 5]]))
    assert w[0] == 15 and p[0] == pytest.approx(0.0625)
    assert min_wilcoxon_p(5) == 0.0625 and min_wilcoxon_p(6) == 0.03125


def test_wilcoxon_beyond_the_exact_limit_uses_scipy():
    diffs = np.random.default_rng(3).normal(0.1, 1, (2, 20))
    _, p, how = wilcoxon(diffs)
    assert p == pytest.approx([stats.wilcoxon(d).pvalue for d in diffs])
    assert set(how) == {"exact"}


def test_seeds_needed_to_reach_alpha():
    assert pairs_needed(0.05, 1) == 6  # 2/2^6 = 0.031 <= 0.05 < 2/2^5
    assert pairs_needed(0.05, 11) == 9  # 11 * 2/2^9 = 0.043
    assert "cannot go below 0.0625 > alpha=0.05" in too_few_seeds(5, 1, 0.05)
    assert "after Holm over 11 comparisons" in too_few_seeds(6, 11, 0.05) and "needs >= 9 seeds" in too_few_seeds(6, 11, 0.05)
    assert too_few_seeds(9, 11, 0.05) == ""
    assert "no test" in too_few_seeds(1, 3, 0.05)


def test_holm_equals_statsmodels_per_family_and_skips_missing_tests():
    rng = np.random.default_rng(4)
    p = pd.Series(rng.uniform(0, 0.1, 40))
    p[[3, 17]] = np.nan
    families = pd.Series(rng.integers(0, 5, 40))
    adjusted = holm(p, families)
    for family in range(5):
        tested = (families == family) & p.notna()
        expected = multipletests(p[tested].to_numpy(), alpha=0.05, method="holm")[1]
        np.testing.assert_allclose(adjusted[tested].to_numpy(), expected, rtol=1e-12)
    assert adjusted[[3, 17]].isna().all()


def test_holm_hand_worked_example():
    # sorted p = .01, .02, .03, .04 (m = 4): .04, .06, .06 (monotone), .06
    assert holm(pd.Series([0.03, 0.01, 0.04, 0.02])).tolist() == pytest.approx([0.06, 0.04, 0.06, 0.06])


def test_comparisons_pair_by_seed_and_compare_two_references_once():
    scored = pd.DataFrame({
        "study": "all", "setting": "s",
        "method": ["A"] * 3 + ["R1"] * 3 + ["R2"] * 2,
        "seed": [0, 1, 2, 0, 1, 2, 0, 2],
        "value": [0.9, 0.8, 0.7, 0.5, 0.5, 0.5, 0.6, 0.6],
    })
    diffs = comparisons(scored, ["R1", "R2"])
    pairs = diffs.groupby(["method", "reference"])["diff"].apply(list).to_dict()
    assert pairs[("A", "R1")] == pytest.approx([0.4, 0.3, 0.2])
    assert pairs[("A", "R2")] == pytest.approx([0.3, 0.1])  # seed 1 of R2 is missing: not paired
    assert pairs[("R2", "R1")] == pytest.approx([0.1, 0.1])
    assert ("R1", "R2") not in pairs


def test_a_single_pair_is_no_test_and_not_in_the_holm_family():
    scored = pd.DataFrame({"study": "all", "setting": "s", "setting_order": 0, "method_order": 0,
                           "method": ["R"] * 3 + ["A"] * 3 + ["B"],
                           "seed": [0, 1, 2, 0, 1, 2, 0], "value": [0.5, 0.6, 0.55, 0.7, 0.8, 0.72, 0.9]})
    table = paired_comparisons(scored, ["R"], resolve_stats({"bootstrap": {"resamples": 999}})).set_index("method")
    assert np.isnan(table.loc["B", "p_t"]) and np.isnan(table.loc["B", "p_wilcoxon"]) and "no test" in table.loc["B", "note"]
    assert table.loc["A", "family"] == 1 and table.loc["A", "p_wilcoxon_holm"] == table.loc["A", "p_wilcoxon"] == 0.25


SEEDS_FLOAT = np.array([0.71, 0.69, 0.73, 0.70, 0.72, 0.68])


def test_a_constant_difference_is_no_test_and_never_significant():
    # Every seed differs by -0.28 up to float noise (b - a is -0.28 +- 6e-17): the t statistic
    # divided by that noise (d_z = -4e13, p = 0 before); now nothing is tested, and in Holm the
    # comparison counts as never rejected: B's p is doubled as in a family of two.
    a = (SEEDS_FLOAT * 3 - 0.84) / 3  # SEEDS_FLOAT - 0.28 computed another way
    b = SEEDS_FLOAT + np.random.default_rng(0).normal(0.02, 0.01, 6)
    scored = pd.DataFrame({"study": "all", "setting": "s", "setting_order": 0, "method_order": 0, "method": np.repeat(["R", "A", "B"], 6),
                           "seed": np.tile(range(6), 3), "value": np.concatenate([SEEDS_FLOAT, a, b])})
    assert 0 < np.ptp(a - SEEDS_FLOAT) < 1e-15  # the noise is real
    table = paired_comparisons(scored, ["R"], resolve_stats({"bootstrap": {"resamples": 999}})).set_index("method")
    a = table.loc["A"]
    assert a["diff"] == pytest.approx(-0.28) and a["ci_low"] == pytest.approx(-0.28) and a["ci_high"] == pytest.approx(-0.28)
    assert np.isnan([a["t"], a["p_t"], a["p_wilcoxon"], a["effect_dz"], a["p_t_holm"], a["p_wilcoxon_holm"]]).all()
    assert a["note"].startswith("constant difference: no test") and a["family"] == 2
    p_b = stats.ttest_rel(b, SEEDS_FLOAT).pvalue
    assert table.loc["B", "p_t"] == pytest.approx(p_b) and table.loc["B", "p_t_holm"] == pytest.approx(min(1, 2 * p_b))
    assert table.loc["B", "note"].startswith("after Holm over 2 comparisons")  # A counts in the family


@pytest.mark.parametrize("row, is_constant", [
    ([0.0, 0.0, 0.0], True),
    ([-0.28, -0.28 + 5e-17, -0.28 - 5e-17], True),
    ([1e6, 1e6 + 1e-4, 1e6], True),  # rounding relative to the values' size: 1e-9 x 1e6 = 1e-3
    ([0.1, 0.1 + 1e-8, 0.1], False),
    ([0.3], True),  # one value has no spread
])
def test_constant_rows_are_those_with_rounding_level_spread(row, is_constant):
    diffs = np.array([row])
    assert constant(diffs)[0] == is_constant
    if len(row) > 1:
        t, p = paired_t(diffs)
        assert np.isnan(p[0]) == np.isnan(cohen_dz(diffs)[0]) == np.isnan(wilcoxon(diffs)[1][0]) == is_constant


def test_cohen_dz_hand_worked():
    # d = (1, 2, 3): mean 2, SD 1 -> d_z = 2
    assert cohen_dz(np.array([[1.0, 2.0, 3.0]]))[0] == pytest.approx(2.0)


def test_wilcoxon_of_constant_rows_says_why():
    w, p, how = wilcoxon(np.array([[0.0] * 6, [-0.28] * 6, [0.1, 0.2, 0.3, 0.4, 0.5, 0.6]]))
    assert np.isnan(w[:2]).all() and np.isnan(p[:2]).all() and list(how) == [CONSTANT_NOTE, CONSTANT_NOTE, "exact"]
    assert p[2] == pytest.approx(2 / 2**6)


def test_wilcoxon_reads_float_noise_as_zero_and_ties():
    # 0.1 + 0.2 = 0.30000000000000004 ties with 0.3, and 1e-17 is a zero: the test is that of
    # d = (0.3, -0.3, 0.5, 0.6, 0.7), ranks 1.5, 1.5, 3, 4, 5, W+ = 13.5. Of the 32 sign patterns
    # 3 have W- <= 1.5 ({}, either 0.3 negative): p = 2 x 3/32 = 0.1875 (scipy, with the noise as
    # data, ranks the 1e-17 and breaks the tie: p = 0.156).
    w, p, _ = wilcoxon(np.array([[0.3, -(0.1 + 0.2), 0.5, 0.6, 0.7, 1e-17]]))
    assert w[0] == 13.5 and p[0] == pytest.approx(0.1875)


def test_holm_counts_members_without_a_test_as_never_rejected():
    p = pd.Series([0.01, np.nan, 0.04, np.nan])
    members = pd.Series([True, True, True, False])  # the last one is outside the family (one seed)
    adjusted = holm(p, members=members)
    expected = multipletests([0.01, 1.0, 0.04], method="holm")[1]  # the undefined test as p = 1
    assert adjusted[[0, 2]].tolist() == pytest.approx(expected[[0, 2]].tolist())
    assert adjusted.tolist()[0] == pytest.approx(0.03) and np.isnan(adjusted[[1, 3]]).all()
