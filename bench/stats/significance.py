"""Paired tests on many small samples at once: paired t, exact Wilcoxon signed-rank, Holm.

Each row of a (rows, n) matrix of paired differences is one comparison. The Wilcoxon test is
exact: zero differences are dropped (Wilcoxon's convention, scipy's default), the others ranked
by absolute value with ties averaged, and the p-value is read off all 2^m equally likely sign
patterns, which is the exact null distribution with or without ties (scipy's 'exact' method
assumes no ties). Above `MAX_EXACT` non-zero differences scipy's `wilcoxon` is used (exact
without ties, normal approximation with them) and the row says so.

A row whose differences are all equal up to rounding (`constant`) is no test of either kind, and
its effect size d_z is undefined: NaN, which Holm counts as never rejected. Such seeds replicate
nothing (the mean difference is a fact of the design, not a sample), and dividing by a rounding
residue gave d_z = -4e13 and t-test p = 0 before. The Wilcoxon test also reads its differences on
that rounding grid, so float noise is neither a sign nor an order of magnitudes.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
from scipy import stats

MAX_EXACT = 16  # 2^16 sign patterns per comparison
ROUNDING = 1e-9  # relative to max(1, |value|): differences closer than this are rounding noise
CONSTANT_NOTE = "constant difference: no test"


def rounding_scale(center):
    """The size below which differences around `center` are rounding noise: ROUNDING x max(1, |center|)."""
    return ROUNDING * np.maximum(1.0, np.abs(center))


def constant(diffs: np.ndarray) -> np.ndarray:
    """Rows whose spread (max - min) is rounding noise around their mean; a single value is one too."""
    return diffs.max(1) - diffs.min(1) <= rounding_scale(diffs.mean(1))


def paired_t(diffs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(t, two-sided p) of the paired t-test per row (as scipy.stats.ttest_rel); NaN for n < 2
    and for constant rows (zero or rounding-level spread: the t statistic divides by it)."""
    n = diffs.shape[1]
    if n < 2:
        return np.full(len(diffs), np.nan), np.full(len(diffs), np.nan)
    mean, sd = diffs.mean(1), diffs.std(1, ddof=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        t = np.where(constant(diffs), np.nan, mean / (sd / math.sqrt(n)))
    return t, 2 * stats.t.sf(np.abs(t), n - 1)


def cohen_dz(diffs: np.ndarray) -> np.ndarray:
    """Cohen's d_z = mean / SD (n - 1) of each row's differences; NaN for n < 2 and constant rows."""
    if diffs.shape[1] < 2:
        return np.full(len(diffs), np.nan)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(constant(diffs), np.nan, diffs.mean(1) / diffs.std(1, ddof=1))


def on_rounding_grid(diffs: np.ndarray) -> np.ndarray:
    """Differences in units of each row's rounding scale (of its largest magnitude), rounded:
    a difference of float noise is a zero, two magnitudes equal up to noise are a tie."""
    scale = rounding_scale(np.abs(diffs).max(1))
    return np.round(diffs / scale[:, None])


def doubled_ranks(magnitudes: np.ndarray) -> np.ndarray:
    """2 x average ranks of each row (integers even with ties, so sums compare exactly)."""
    return np.rint(2 * stats.rankdata(magnitudes, axis=1)).astype(np.int64)


def exact_signed_rank(diffs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(W+, two-sided exact p) per row of non-zero differences (rows, m), m <= MAX_EXACT."""
    rows, m = diffs.shape
    if m == 0:
        return np.zeros(rows), np.ones(rows)
    ranks = doubled_ranks(np.abs(diffs))
    observed = (ranks * (diffs > 0)).sum(1)
    signs = (np.arange(2**m)[:, None] >> np.arange(m)) & 1  # every sign pattern
    below, above = np.empty(rows), np.empty(rows)
    step = max(1, 2**22 >> m)  # bounds the (2^m, rows) null table
    for start in range(0, rows, step):
        part = slice(start, start + step)
        null = signs @ ranks[part].T
        below[part] = (null <= observed[part]).mean(0)
        above[part] = (null >= observed[part]).mean(0)
    return observed / 2, np.minimum(1.0, 2 * np.minimum(below, above))


def wilcoxon(diffs: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(W+, two-sided p, method) per row of paired differences (rows, n); NaN with the method
    CONSTANT_NOTE for constant rows (all zero included: no non-zero difference to rank)."""
    rows = len(diffs)
    w, p, method = np.full(rows, np.nan), np.full(rows, np.nan), np.full(rows, "exact", dtype=object)
    tested = ~constant(diffs)
    method[~tested] = CONSTANT_NOTE
    diffs = on_rounding_grid(diffs)
    nonzero = np.where(tested, (diffs != 0).sum(1), -1)
    for m in np.unique(nonzero[tested]):
        index = np.flatnonzero(nonzero == m)
        kept = np.array([row[row != 0] for row in diffs[index]]).reshape(len(index), m)
        if m <= MAX_EXACT:
            w[index], p[index] = exact_signed_rank(kept)
            continue
        for i, row in zip(index, kept):
            result = stats.wilcoxon(row, method="auto")
            ties = len(np.unique(np.abs(row))) < m
            w[i] = (stats.rankdata(np.abs(row)) * (row > 0)).sum()
            p[i], method[i] = result.pvalue, "normal approximation (ties)" if ties else "exact"
    return w, p, method


def min_wilcoxon_p(nonzero: int) -> float:
    """The smallest two-sided exact Wilcoxon p-value m non-zero differences allow: 2 / 2^m."""
    return min(1.0, 2.0 ** (1 - nonzero))


def pairs_needed(alpha: float, family: int) -> int:
    """Paired seeds an exact Wilcoxon needs before Holm over `family` tests can reach alpha."""
    return math.ceil(1 + math.log2(family / alpha))


def holm(pvalues: pd.Series, families: pd.Series | None = None, members: pd.Series | None = None) -> pd.Series:
    """Holm-adjusted p-values within each family (all one family by default); NaN (no test)
    stays NaN. `members` (default: the rows with a p-value) are the comparisons each family
    counts: a member without a p (a constant difference) counts as p = 1, never rejected, so
    an undefined test never makes the others' correction milder.

    Equal to statsmodels' multipletests(method="holm") per family (tested), computed for all
    families at once: statsmodels runs a full garbage collection on every call, which costs
    ~0.3 s with a large results table in memory and minutes over hundreds of settings."""
    families = pd.Series(0, index=pvalues.index) if families is None else families
    members = pvalues.notna() if members is None else members.astype(bool) | pvalues.notna()
    counted = pvalues.where(pvalues.notna(), 1.0)[members]
    tested = pd.DataFrame({"p": counted, "family": families[members]}).sort_values(["family", "p"], kind="stable")
    group = tested.groupby("family", sort=False)["p"]
    size, position = group.transform("size"), group.cumcount()
    scaled = (tested["p"] * (size - position)).groupby(tested["family"], sort=False).cummax()
    return scaled.clip(upper=1.0).reindex(pvalues.index).where(pvalues.notna())
