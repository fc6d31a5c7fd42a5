"""Paired t, exact Wilcoxon and Holm against scipy / statsmodels and hand-worked numbers."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats
from statsmodels.stats.multitest import multipletests

from bench.stats.paired import comparisons, too_few_seeds
from bench.stats.significance import holm, min_wilcoxon_p, paired_t, pairs_needed, wilcoxon


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
        if not len(kept):
            assert pi == 1.0
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
    from bench.stats.paired import paired_comparisons
    from bench.stats.settings import resolve_stats

    scored = pd.DataFrame({"study": "all", "setting": "s", "setting_order": 0, "method_order": 0,
                           "method": ["R"] * 3 + ["A"] * 3 + ["B"],
                           "seed": [0, 1, 2, 0, 1, 2, 0], "value": [0.5, 0.6, 0.55, 0.7, 0.8, 0.72, 0.9]})
    table = paired_comparisons(scored, ["R"], resolve_stats({"bootstrap": {"resamples": 999}})).set_index("method")
    assert np.isnan(table.loc["B", "p_t"]) and np.isnan(table.loc["B", "p_wilcoxon"]) and "no test" in table.loc["B", "note"]
    assert table.loc["A", "family"] == 1 and table.loc["A", "p_wilcoxon_holm"] == table.loc["A", "p_wilcoxon"] == 0.25
