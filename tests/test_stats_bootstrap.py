"""The batched bootstrap against scipy.stats.bootstrap called directly."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from bench.stats.bootstrap import grouped_mean_ci, mean_ci


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
    out = grouped_mean_ci(frame, ["group"], "value", confidence=0.95, resamples=9999, seed=0).set_index("group")
    assert out.loc["a", "n"] == 3 and out.loc["a", "mean"] == pytest.approx(0.625)
    assert out.loc["b", "sd"] == pytest.approx(np.std([0.25, 0.5, 0.5, 0.75, 0.875], ddof=1))
    for group in ("a", "b"):
        ref_low, ref_high = scipy_interval(frame.loc[frame["group"] == group, "value"].to_numpy()[None, :], 0)
        assert (out.loc[group, "ci_low"], out.loc[group, "ci_high"]) == pytest.approx((ref_low[0], ref_high[0]), abs=1e-12)
    assert out.loc["c", "ci_method"] == "n<2" and np.isnan(out.loc["c", "ci_low"])


def test_non_finite_values_are_not_averaged():
    frame = pd.DataFrame({"group": ["a"] * 3, "value": [0.5, np.nan, 0.7]})
    out = grouped_mean_ci(frame, ["group"], "value", 0.95, 999, 0)
    assert out["n"].item() == 2 and out["mean"].item() == pytest.approx(0.6)
