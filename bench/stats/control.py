"""Every ranked method against one control method (`stats.control`, FedAvg by default).

Two views of the ranking's blocks, side by side in the leaderboard:

- Demšar (2006, §3.2.2): over the Friedman design's N blocks of k methods, z = (R_i - R_c) /
  sqrt(k (k + 1) / (6 N)) of the average ranks, two-sided normal p, Holm over the k - 1
  comparisons. A negative z is a better (smaller) rank than the control's. Where even a method
  first in every block against a control last in every block could not reach alpha after Holm
  under the exact permutation null (probability (1 / (k (k - 1)))^N), the normal p would claim
  what the blocks cannot show (k = 2, N = 4: z = 2, p = 0.046, exact 0.125): p is undefined.
- The Bayesian signed-rank test (bayes.py) over the blocks the method shares with the control:
  the method is better, equivalent (within the ROPE) or worse where that posterior probability
  reaches `bayes_threshold`, else undecided. A decision needs as many blocks as an exact
  Wilcoxon test needs to reach alpha (6 at 0.05): the posterior lives on the observed
  differences, so from two identical blocks it is certain of anything.

The unit is the block, each block's score (a setting's mean over seeds, or one setting x seed)
one observation: seeds of one setting share its data and partition, so they are not
exchangeable with seeds of another, and Benavoli et al. run the test over per-data-set means.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
from scipy import stats

from bench.stats.bayes import signed_rank_probs
from bench.stats.render import is_percent
from bench.stats.significance import holm, pairs_needed

REGIONS = ("worse", "equivalent", "better")


def rope_units(settings: dict) -> float:
    """`rope` in the metric's stored units: percentage points of a metric shown in % (stored as
    a fraction, so 1 pp = 0.01), the metric's own units otherwise."""
    return settings["rope"] / 100 if is_percent(settings["metric"]) else settings["rope"]


def min_rank_p(k: int, n: int) -> float:
    """Smallest two-sided p an exact permutation test of one rank difference allows with k
    methods in n blocks: the method first and the control last in every block."""
    return min(1.0, 2 * float(k * (k - 1)) ** -n)


def rank_z_tests(ranks: pd.DataFrame, control: str, alpha: float) -> pd.DataFrame:
    """method, z, p_control, p_control_holm, z_note for every design method but the control."""
    n, k = ranks.shape
    average = ranks.mean()
    others = [m for m in ranks.columns if m != control]
    z = (average[others] - average[control]) / math.sqrt(k * (k + 1) / (6 * n))
    table = pd.DataFrame({"method": others, "z": z.to_numpy(), "p_control": 2 * stats.norm.sf(np.abs(z.to_numpy())), "z_note": ""})
    floor = min_rank_p(k, n)
    if (k - 1) * floor > alpha:
        table["p_control"] = np.nan
        table["z_note"] = (f"underpowered: with N = {n} blocks of k = {k} methods the exact p cannot go below {floor:.3g}, "
                           f"{min(1.0, (k - 1) * floor):.3g} after Holm over {k - 1} > alpha = {alpha:g}")
    table["p_control_holm"] = holm(table["p_control"], members=pd.Series(True, index=table.index))
    return table


def decision(probs: tuple[float, float, float], blocks: int, threshold: float, min_blocks: int) -> str:
    """better / equivalent / worse where its posterior probability reaches `threshold` on at
    least `min_blocks` blocks; undecided otherwise."""
    if blocks < min_blocks or not np.nanmax(probs) >= threshold:
        return "undecided"
    return REGIONS[int(np.argmax(probs))]


def bayes_tests(scores: pd.DataFrame, control: str, settings: dict) -> pd.DataFrame:
    """method, blocks, mean_diff, p_worse, p_equivalent, p_better, decision for every method but
    the control, over the blocks it shares with the control (scores: larger is better)."""
    rope, seed, threshold = rope_units(settings), settings["bootstrap"]["seed"], settings["bayes_threshold"]
    min_blocks = pairs_needed(settings["alpha"], 1)
    rows = []
    for method in (m for m in scores.columns if m != control):
        diffs = (scores[method] - scores[control]).dropna().to_numpy()
        probs = signed_rank_probs(diffs, rope, seed)
        rows.append({"method": method, "blocks": len(diffs), "mean_diff": diffs.mean() if len(diffs) else np.nan,
                     **{f"p_{region}": p for region, p in zip(REGIONS, probs)}, "decision": decision(probs, len(diffs), threshold, min_blocks)})
    return pd.DataFrame(rows, columns=["method", "blocks", "mean_diff", *(f"p_{r}" for r in REGIONS), "decision"])


def against_control(scores: pd.DataFrame, ranks: pd.DataFrame, control: str, settings: dict) -> pd.DataFrame:
    """One row per method of `scores` (the control's own row says 'control'): the rank z-test
    (methods of the Friedman design) and the Bayesian signed-rank test (see module doc)."""
    columns = ["method", "z", "p_control", "p_control_holm", "z_note"]
    ranked = control in ranks.columns and ranks.shape[1] >= 2 and len(ranks) > 0  # no block all methods share: no ranks
    z = rank_z_tests(ranks, control, settings["alpha"]) if ranked else pd.DataFrame(columns=columns)
    table = bayes_tests(scores, control, settings).merge(z, on="method", how="left")
    table["z_note"] = table["z_note"].fillna("no rank test: not in the Friedman design with the control")
    own = pd.DataFrame({"method": [control], "decision": ["control"], "z_note": [""]})
    return pd.concat([own, table], ignore_index=True)
