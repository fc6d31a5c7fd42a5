"""Aggregate scores across settings for few-seed benchmarks (Agarwal et al. 2021, rliable).

Interquartile mean (IQM): the mean of the middle 50% of a method's runs pooled over settings
(`scipy.stats.trim_mean(x, 0.25)`, rliable's definition; computed as it computes it, in place). Probability of improvement of X over Y:
per setting P(X > Y) + P(X = Y) / 2 over all pairs of their seeds (the Mann-Whitney U / (n m)),
averaged over the settings both have. Intervals: stratified percentile bootstrap, seeds resampled
with replacement within each setting (each method on its own), `bootstrap.resamples` draws from
`bootstrap.seed`. Implemented with numpy and scipy, not the `rliable` package: it installs, but
its last release (1.2.0, 2024) caps its `arch` dependency below the current major version and
needs a complete runs x settings matrix per method, which a report with a missing seed lacks.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from bench.stats.scores import orient


def strata(scored: pd.DataFrame) -> dict[tuple[str, str], np.ndarray]:
    """Each method's values per setting (block), each run once: one pass over the scores (a
    filter per method, reference and block was most of the report's time at 10,000 runs)."""
    unique = scored.drop_duplicates(["method", "block", "run_id"])
    return {key: values.to_numpy(float) for key, values in unique.groupby(["method", "block"], sort=False)["value"]}


def stratum_list(by_block: dict[tuple[str, str], np.ndarray], method: str, blocks: list[str]) -> list[np.ndarray]:
    """A method's values per setting, in `blocks` order, settings it lacks left out."""
    return [by_block[method, b] for b in blocks if (method, b) in by_block]


def resampled(values: list[np.ndarray], resamples: int, rng: np.random.Generator) -> np.ndarray:
    """(resamples, n) stratified bootstrap draws: each setting's seeds drawn with replacement."""
    return np.concatenate([v[rng.integers(0, len(v), (resamples, len(v)))] for v in values], axis=1)


def trimmed_mean(values: np.ndarray, proportion: float) -> np.ndarray:
    """`scipy.stats.trim_mean(values, proportion, axis=-1)` bit for bit (the same partition, then
    the mean of the kept middle), NaN where a row holds a NaN as its default policy gives, but
    partitioning `values` in place: trim_mean's copies and NaN-policy passes made it 6x slower on
    a bootstrap's 10,000 x 1,440 draws."""
    n = values.shape[-1]
    low = int(proportion * n)
    if low >= n - low:
        raise ValueError(f"cannot trim {proportion:.0%} from each end of {n} values")
    nan = np.isnan(values).any(axis=-1)
    values.partition((low, n - low - 1), axis=-1)
    return np.where(nan, np.nan, values[..., low:n - low].mean(axis=-1))


def iqm(values: list[np.ndarray], resamples: int, rng: np.random.Generator, confidence: float) -> tuple[float, float, float]:
    """(IQM, CI low, CI high) of the pooled values."""
    point = float(trimmed_mean(np.concatenate(values), 0.25))
    draws = trimmed_mean(resampled(values, resamples, rng), 0.25)
    low, high = np.quantile(draws, [(1 - confidence) / 2, (1 + confidence) / 2])
    return point, float(low), float(high)


def improvement(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """P(X > Y) + P(X = Y) / 2 over all pairs, per row of x (r, n) and y (r, m)."""
    greater = (x[:, :, None] > y[:, None, :]).mean((1, 2))
    equal = (x[:, :, None] == y[:, None, :]).mean((1, 2))
    return greater + equal / 2


def resampled_improvement(x: np.ndarray, y: np.ndarray, resamples: int, rng: np.random.Generator) -> np.ndarray:
    """`improvement` of `resamples` bootstrap draws of x's seeds and of y's (drawn as `resampled`
    draws them, x first), equal to it bit for bit: each pair of seeds is compared once and
    weighted by how often the draw took each (integer counts, exact in float64), instead of
    comparing every drawn pair (resamples x n x m: most of the aggregate table's time)."""
    drawn_x = draw_counts(rng.integers(0, len(x), (resamples, len(x))), len(x))
    drawn_y = draw_counts(rng.integers(0, len(y), (resamples, len(y))), len(y))
    pairs = len(x) * len(y)
    greater = ((drawn_x @ (x[:, None] > y[None, :])) * drawn_y).sum(1) / pairs
    equal = ((drawn_x @ (x[:, None] == y[None, :])) * drawn_y).sum(1) / pairs
    return greater + equal / 2


def draw_counts(drawn: np.ndarray, n: int) -> np.ndarray:
    """(resamples, n): how often each of n seeds is in each draw (one bincount over the draws,
    each offset by its resample's row)."""
    offsets = np.arange(len(drawn))[:, None] * n
    return np.bincount((drawn + offsets).ravel(), minlength=len(drawn) * n).reshape(len(drawn), n).astype(float)


def probability_of_improvement(xs: list[np.ndarray], ys: list[np.ndarray], resamples: int, rng: np.random.Generator,
                               confidence: float) -> tuple[float, float, float]:
    """(P(X > Y), CI low, CI high), averaged over the paired settings."""
    point = float(np.mean([improvement(x[None], y[None])[0] for x, y in zip(xs, ys)]))
    draws = np.mean([resampled_improvement(x, y, resamples, rng) for x, y in zip(xs, ys)], axis=0)
    low, high = np.quantile(draws, [(1 - confidence) / 2, (1 + confidence) / 2])
    return point, float(low), float(high)


def aggregate_scores(scored: pd.DataFrame, references: list[str], settings: dict, blocks: list[str]) -> pd.DataFrame:
    """Per method: settings, runs, IQM [CI] over `blocks` x seeds (in the metric's own
    direction), and P(improvement) [CI] over each reference on the settings both have
    ("improvement": better in the metric's direction)."""
    oriented = scored.assign(value=orient(scored["value"].to_numpy(), settings["metric"], settings))
    resamples, confidence = settings["bootstrap"]["resamples"], settings["confidence"]
    rng = np.random.default_rng(settings["bootstrap"]["seed"])
    methods = list(dict.fromkeys(scored.sort_values(["method_order", "method"])["method"]))
    values_of, oriented_of = strata(scored), strata(oriented)
    rows = []
    for method in methods:
        values = stratum_list(values_of, method, blocks)
        if not values:
            continue
        row = {"method": method, "settings": len(values), "runs": int(sum(len(v) for v in values))}
        row["iqm"], row["iqm_ci_low"], row["iqm_ci_high"] = iqm(values, resamples, rng, confidence)
        for ref in references:
            shared = [b for b in blocks if (method, b) in values_of and (ref, b) in values_of]
            if ref == method or not shared:
                continue
            row[f"poi_vs_{ref}"], row[f"poi_vs_{ref}_ci_low"], row[f"poi_vs_{ref}_ci_high"] = probability_of_improvement(
                stratum_list(oriented_of, method, shared), stratum_list(oriented_of, ref, shared), resamples, rng, confidence)
        rows.append(row)
    return pd.DataFrame(rows)
