"""Bootstrap confidence intervals of a mean, for thousands of small samples at once.

The interval is `scipy.stats.bootstrap`'s BCa interval (Efron & Tibshirani 1993, 14.3), falling
back to the percentile interval where BCa is degenerate (e.g. all values equal). scipy draws one
set of resample indices per call and applies it to every sample of a batch; so do we, and for the
mean each resample is a weighted sum, so the whole bootstrap distribution of many samples is one
matrix product. With the same seed the intervals equal scipy's (tests/test_stats_bootstrap.py);
each sample's interval depends only on its own values, the seed and its size (up to the last
bit of rounding), never on which other samples were computed with it.

From few values the bootstrap under-covers: its resamples only ever hold the values seen, so a
"95%" BCa interval of 3 values is about their range. On normal data it covers the true mean 73%
of the time at n = 3, 84% at 5, 89% at 10 and 93% at 20 (tests/test_stats_bootstrap.py measures
it). Below `bootstrap.min_values` values a group gets Student's t interval instead, whose
coverage on normal data is the nominal one at every n (method 't').
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats
from scipy.special import ndtr, ndtri

ROWS_PER_CHUNK = 2048  # bounds memory: rows x resamples float64 per chunk


def distinct_resamples(n: int, resamples: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(distinct count vectors (m, n), how many of the resamples drew each) for the draws scipy
    makes with `rng=seed`. The mean of a resample depends only on its counts, and few seeds
    allow few distinct resamples (126 for n = 5), so the work shrinks accordingly."""
    draws = np.random.default_rng(seed).integers(0, n, (resamples, n))
    counts = np.zeros((resamples, n))
    np.add.at(counts, (np.arange(resamples)[:, None], draws), 1)
    return np.unique(counts, axis=0, return_counts=True)


def resample_means(samples: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """(rows, m) mean of every distinct resample. A resample that draws each observation once
    has exactly the sample mean (not a rounding of it), so it counts as a tie in BCa's bias."""
    n = samples.shape[1]
    theta_b = samples @ counts.T
    theta_b /= n
    theta_b[:, (counts == 1).all(1)] = samples.sum(1, keepdims=True) / n
    return theta_b


def bca_levels(samples: np.ndarray, theta_b: np.ndarray, weights: np.ndarray, alpha: float) -> np.ndarray:
    """(rows, 2) percentile levels of the BCa interval of the mean (NaN where degenerate)."""
    n = samples.shape[1]
    theta = samples.sum(1, keepdims=True) / n
    below = ((theta_b < theta) @ weights + (theta_b <= theta) @ weights) / (2 * weights.sum())
    z0 = ndtri(below)
    jack = (samples.sum(1, keepdims=True) - samples) / (n - 1)
    u = (n - 1) * (jack.mean(1, keepdims=True) - jack)
    with np.errstate(invalid="ignore", divide="ignore"):
        accel = (u**3).sum(1) / n**3 / ((u**2).sum(1) / n**2) ** 1.5 / 6
        z = np.array([ndtri(alpha), -ndtri(alpha)])
        levels = ndtr(z0[:, None] + (z0[:, None] + z) / (1 - accel[:, None] * (z0[:, None] + z)))
    return levels


def weighted_quantiles(theta_b: np.ndarray, weights: np.ndarray, levels: np.ndarray) -> np.ndarray:
    """Per row, the quantiles at that row's levels of the resamples `theta_b` drawn `weights`
    times each: numpy's default linear interpolation on the expanded sorted sample."""
    total = int(weights.sum())
    position = levels * (total - 1)
    below = np.floor(position).astype(np.int64)
    above = np.minimum(below + 1, total - 1)
    if len(weights) > total // 4:  # mostly distinct: order statistics of the expanded sample
        expanded = np.repeat(theta_b, weights, axis=1)
        kth = sorted({int(k) for k in (below.min(0), below.max(0), above.min(0), above.max(0)) for k in k})
        expanded.partition(kth, axis=1)
        for j in range(levels.shape[1]):
            expanded[:, below[:, j].min():above[:, j].max() + 1].sort(axis=1)
        low, high = np.take_along_axis(expanded, below, 1), np.take_along_axis(expanded, above, 1)
    else:  # few distinct resamples: walk their cumulative counts
        order = np.argsort(theta_b, axis=1)
        ordered = np.take_along_axis(theta_b, order, 1)
        ends = np.cumsum(weights[order], axis=1)  # one past the last expanded index of each value
        slot = [np.stack([(ends <= k[:, [j]]).sum(1) for j in range(k.shape[1])], 1) for k in (below, above)]
        low, high = np.take_along_axis(ordered, slot[0], 1), np.take_along_axis(ordered, slot[1], 1)
    return low + (position - below) * (high - low)


def mean_ci(samples: np.ndarray, confidence: float = 0.95, resamples: int = 9999, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(low, high, method) of the mean of each row of `samples` (rows, n), n >= 2.

    method is 'BCa' or 'percentile' (BCa degenerate) per row."""
    samples = np.asarray(samples, dtype=float)
    rows, n = samples.shape
    alpha = (1 - confidence) / 2
    counts, weights = distinct_resamples(n, resamples, seed)
    low, high, method = np.empty(rows), np.empty(rows), np.empty(rows, dtype=object)
    for start in range(0, rows, ROWS_PER_CHUNK):
        part = slice(start, start + ROWS_PER_CHUNK)
        theta_b = resample_means(samples[part], counts)
        levels = bca_levels(samples[part], theta_b, weights, alpha)
        bad = np.isnan(levels).any(1)
        levels[bad] = [alpha, 1 - alpha]
        ci = weighted_quantiles(theta_b, weights, levels)
        low[part], high[part] = ci[:, 0], ci[:, 1]
        method[part] = np.where(bad, "percentile", "BCa")
    return low, high, method


def t_interval(samples: np.ndarray, confidence: float = 0.95) -> tuple[np.ndarray, np.ndarray]:
    """(low, high) of Student's t interval of the mean of each row (rows, n), n >= 2:
    mean -/+ t(n - 1) SD / sqrt(n); zero width for equal values."""
    n = samples.shape[1]
    half = stats.t.ppf((1 + confidence) / 2, n - 1) * samples.std(1, ddof=1) / np.sqrt(n)
    mean = samples.mean(1)
    return mean - half, mean + half


def group_ci(samples: np.ndarray, confidence: float, resamples: int, seed: int, min_values: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(low, high, method) of equally sized groups: the bootstrap from `min_values` values on,
    Student's t below (see module doc)."""
    if samples.shape[1] >= min_values:
        return mean_ci(samples, confidence, resamples, seed)
    return *t_interval(samples, confidence), np.full(len(samples), "t", dtype=object)


def grouped_mean_ci(frame: pd.DataFrame, keys: list[str], value: str, confidence: float, resamples: int, seed: int, min_values: int,
                    keep_values: bool = False) -> pd.DataFrame:
    """Per group of `keys`: n, mean, sd, ci_low, ci_high, ci_method of the finite values of
    `value` (and the values themselves, in a list, if asked). Groups are batched by size; a
    group of one value gets no interval, one of fewer than `min_values` Student's t interval."""
    finite = frame[np.isfinite(frame[value])]
    groups = finite.groupby(keys, sort=False, observed=True)[value]
    out = groups.agg(n="size", mean="mean", sd="std", values=list).reset_index()
    out["ci_low"], out["ci_high"], out["ci_method"] = np.nan, np.nan, "n<2"
    for n, index in out.groupby("n").groups.items():
        if n < 2:
            continue
        matrix = np.array(out.loc[index, "values"].tolist(), dtype=float)
        low, high, method = group_ci(matrix, confidence, resamples, seed, min_values)
        out.loc[index, ["ci_low", "ci_high"]] = np.column_stack([low, high])
        out.loc[index, "ci_method"] = method
    return out if keep_values else out.drop(columns="values")
