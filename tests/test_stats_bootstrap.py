"""The batched bootstrap against scipy.stats.bootstrap called directly."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from bench.stats.bootstrap import grouped_mean_ci, mean_ci, t_interval
from bench.stats.captions import interval_phrase


def scipy_interval(samples: np.ndarray, seed: int, confidence: float = 0.95) -> tuple[np.ndarray, np.ndarray]:
    """scipy's BCa interval per row, its percentile interval where BCa is NaN (degenerate)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        bca = stats.bootstrap((samples,), np.mean, axis=-1, rng=seed, confidence_level=confidence, method="BCa").confidence_interval
        pct = stats.bootstrap((samples,), np.mean, axis=-1, rng=seed, confidence_level=confidence, method="percentile").confidence_interval
    return np.where(np.isnan(bca.low), pct.low, bca.low), np.where(np.isnan(bca.high), pct.high, bca.high)


@pytest.mark.parametrize("n", [2, 3, 5, 6, 8, 12, 30])
def test_equals_scipy_bca_on_exactly_representable_data(n):
    # Multiples of 1/8 sum exactly, so scipy's and our resample means are bit-identical and the
    # intervals must agree to rounding, including BCa's bias and acceleration terms.
    rng = np.random.default_rng(n)
    samples = np.round(rng.normal(0.7, 0.05, (40, n)) * 64) / 64
    low, high, method = mean_ci(samples, 0.95, 9999, seed=11)
    ref_low, ref_high = scipy_interval(samples, 11)
    np.testing.assert_allclose(low, ref_low, rtol=0, atol=1e-12)
    np.testing.assert_allclose(high, ref_high, rtol=0, atol=1e-12)
    assert set(method) <= {"BCa", "percentile"}


def test_other_confidence_levels_and_resample_counts():
    samples = np.round(np.random.default_rng(3).normal(size=(10, 7)) * 32) / 32
    low, high, _ = mean_ci(samples, 0.9, 2000, seed=5)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = stats.bootstrap((samples,), np.mean, axis=-1, rng=5, confidence_level=0.9, n_resamples=2000).confidence_interval
    np.testing.assert_allclose(low, ref.low, atol=1e-12)
    np.testing.assert_allclose(high, ref.high, atol=1e-12)


def test_degenerate_rows_fall_back_to_the_percentile_interval():
    samples = np.array([[0.8, 0.8, 0.8, 0.8], [0.7, 0.75, 0.8, 0.9]])
    low, high, method = mean_ci(samples, seed=0)
    assert method.tolist() == ["percentile", "BCa"]
    assert low[0] == high[0] == pytest.approx(0.8)  # identical seeds: a zero-width interval, not NaN
    assert low[1] < samples[1].mean() < high[1]


def test_a_row_interval_does_not_depend_on_its_batch():
    rng = np.random.default_rng(0)
    samples = rng.normal(size=(5, 5))
    together = mean_ci(samples, seed=4)
    alone = [mean_ci(samples[i:i + 1], seed=4) for i in range(5)]
    # equal up to the last bit a matrix product may round differently for one row than for five
    np.testing.assert_allclose(together[0], [a[0][0] for a in alone], rtol=1e-14)
    np.testing.assert_allclose(together[1], [a[1][0] for a in alone], rtol=1e-14)


def test_same_seed_same_interval_other_seed_other_interval():
    samples = np.random.default_rng(1).normal(size=(1, 6))
    assert mean_ci(samples, seed=1)[0][0] == mean_ci(samples, seed=1)[0][0]
    assert mean_ci(samples, seed=1)[0][0] != mean_ci(samples, seed=2)[0][0]


def test_grouped_intervals_per_group_size_and_single_values():
    frame = pd.DataFrame({
        "group": ["a"] * 3 + ["b"] * 5 + ["c"],
        "value": [0.5, 0.625, 0.75, 0.25, 0.5, 0.5, 0.75, 0.875, 0.9],
    })
    out = grouped_mean_ci(frame, ["group"], "value", confidence=0.95, resamples=9999, seed=0, min_values=2).set_index("group")
    assert out.loc["a", "n"] == 3 and out.loc["a", "mean"] == pytest.approx(0.625)
    assert out.loc["b", "sd"] == pytest.approx(np.std([0.25, 0.5, 0.5, 0.75, 0.875], ddof=1))
    for group in ("a", "b"):
        ref_low, ref_high = scipy_interval(frame.loc[frame["group"] == group, "value"].to_numpy()[None, :], 0)
        assert (out.loc[group, "ci_low"], out.loc[group, "ci_high"]) == pytest.approx((ref_low[0], ref_high[0]), abs=1e-12)
    assert out.loc["c", "ci_method"] == "n<2" and np.isnan(out.loc["c", "ci_low"])


def test_non_finite_values_are_not_averaged():
    frame = pd.DataFrame({"group": ["a"] * 3, "value": [0.5, np.nan, 0.7]})
    out = grouped_mean_ci(frame, ["group"], "value", 0.95, 999, 0, 2)
    assert out["n"].item() == 2 and out["mean"].item() == pytest.approx(0.6)


COVERAGE_SEEDS = (3, 5, 10)


@pytest.fixture(scope="module")
def coverage() -> dict[int, tuple[float, float]]:
    """n -> (coverage of the 95% BCa interval, of the 95% t interval) of the true mean over 4000
    normal samples of n values (999 resamples; a fraction of a second)."""
    rng = np.random.default_rng(0)
    out = {}
    for n in COVERAGE_SEEDS:
        samples = rng.normal(0.8, 0.02, (4000, n))
        intervals = {"bca": mean_ci(samples, 0.95, 999, seed=0)[:2], "t": t_interval(samples, 0.95)}
        out[n] = tuple(float(((low <= 0.8) & (0.8 <= high)).mean()) for low, high in intervals.values())
    return out


@pytest.mark.parametrize("n", COVERAGE_SEEDS)
def test_the_t_interval_covers_as_nominal_from_few_seeds(coverage, n):
    # 4000 repeats: the binomial SE of a 95% coverage is 0.0034, so +-0.012 is 3.5 SE
    assert coverage[n][1] == pytest.approx(0.95, abs=0.012)


def test_bca_from_few_seeds_under_covers(coverage):
    # Measured (README): BCa covers 0.73 at n = 3, 0.84 at 5, 0.89 at 10; the bootstrap only
    # resamples the values seen, so from 3 of them its "95%" interval is about their range.
    bca = [coverage[n][0] for n in COVERAGE_SEEDS]
    assert bca[0] < 0.80 and bca == sorted(bca) and bca[-1] < 0.95 - 0.03


def test_t_interval_hand_worked():
    # (0.5, 0.625, 0.75): mean 0.625, SD 0.125, t(2, 0.975) = 4.302653 -> 0.625 -+ 0.537832 / sqrt(3) = 0.310517
    low, high = t_interval(np.array([[0.5, 0.625, 0.75]]))
    assert (low[0], high[0]) == pytest.approx((0.625 - 0.3105172, 0.625 + 0.3105172), abs=1e-6)


def test_groups_below_min_values_get_the_t_interval_and_say_so():
    frame = pd.DataFrame({"group": ["a"] * 3 + ["b"] * 5, "value": [0.5, 0.625, 0.75, 0.25, 0.5, 0.5, 0.75, 0.875]})
    out = grouped_mean_ci(frame, ["group"], "value", 0.95, 999, 0, min_values=5).set_index("group")
    assert out.loc["a", "ci_method"] == "t" and out.loc["b", "ci_method"] == "BCa"
    assert (out.loc["a", "ci_low"], out.loc["a", "ci_high"]) == pytest.approx(tuple(v[0] for v in t_interval(np.array([[0.5, 0.625, 0.75]]))))
    phrase = interval_phrase(out["ci_method"], 0.95)
    assert phrase == "95% BCa bootstrap interval over seeds (the Student t interval for 1 with too few seeds for the bootstrap)"
    assert interval_phrase(["t", "t", "n<2"], 0.9, "blocks") == "90% Student t interval over blocks (too few blocks for a bootstrap interval); none for 1 with a single value"
