"""What the design can detect against the control, and the seeds a difference of the ROPE needs.

Per method, from its paired differences to the control (same setting, same seed): their SD
pooled over the settings, each setting's variance taken around its own mean and weighted by its
n - 1 degrees of freedom (a method that is better in one setting than in another is not noise
of a paired test within a setting). Per method, not pooled over methods: a method close to the
control varies with it, one far from it does not. The test planned for is one setting's paired
t-test over n seeds (the median number of paired seeds per setting) at alpha / (k - 1): Holm's
first and strictest step over the k - 1 comparisons with the control, so the power holds
whichever step the comparison is tested at. Power of a two-sided paired t-test with effect
d = delta / SD: P(|T| > t_crit) for T noncentral t with n - 1 degrees of freedom and
noncentrality d sqrt(n) (equal to statsmodels' TTestPower, tested).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import optimize, stats

from bench.stats.control import rope_units
from bench.stats.ranking import block_scores
from bench.stats.significance import rounding_scale

POWER = 0.8
MAX_SEEDS = 1000  # seeds needed beyond this are reported as more than it


def t_power(effect: float, n, alpha: float) -> np.ndarray:
    """Power of the two-sided paired t-test at level alpha for standardized effect d with n pairs."""
    n = np.asarray(n, dtype=float)
    critical = stats.t.ppf(1 - alpha / 2, n - 1)
    shift = effect * np.sqrt(n)
    upper, lower = stats.nct.sf(critical, n - 1, shift), stats.nct.cdf(-critical, n - 1, shift)
    # scipy's noncentral t is NaN far in a tail, where the upper tail is 1 and the lower 0 to the last digit
    return np.where(np.isnan(upper), 1.0, upper) + np.nan_to_num(lower)


def detectable_effect(n: int, alpha: float, power: float = POWER) -> float:
    """The smallest standardized effect d that n pairs detect with `power` at level alpha."""
    return optimize.brentq(lambda d: float(t_power(d, n, alpha)) - power, 1e-9, 1e4, xtol=1e-12)


def seeds_needed(effect: float, alpha: float, power: float = POWER) -> float:
    """Fewest pairs (>= 2) with `power` for effect d at level alpha; NaN beyond MAX_SEEDS."""
    n = np.arange(2, MAX_SEEDS + 1)
    enough = np.flatnonzero(t_power(effect, n, alpha) >= power)
    return float(n[enough[0]]) if len(enough) else np.nan


def pooled_spread(diffs: pd.DataFrame) -> pd.DataFrame:
    """Per method: settings, seeds (median paired seeds per setting), df, the mean of the
    settings' mean differences (for the rounding scale) and the pooled SD of the differences
    (columns method, block, diff)."""
    per_block = diffs.groupby(["method", "block"], sort=False)["diff"].agg(n="size", var="var", mean="mean").reset_index()
    per_block["ss"] = per_block["var"].fillna(0) * (per_block["n"] - 1)
    out = per_block.groupby("method", sort=False).agg(settings=("block", "size"), seeds=("n", "median"), df=("n", lambda n: int((n - 1).sum())),
                                                    ss=("ss", "sum"), mean_diff=("mean", "mean")).reset_index()
    out["seeds"] = np.floor(out["seeds"]).astype(int)
    with np.errstate(invalid="ignore", divide="ignore"):
        out["sd"] = np.sqrt(out.pop("ss") / out["df"].where(out["df"] > 0))
    return out


def plan(row: pd.Series, alpha: float, target: float) -> dict:
    """One method's detectable difference and seeds needed, or the note saying why not."""
    if not row["df"] > 0:
        return {"note": "one paired seed per setting: no spread to plan from"}
    if row["sd"] <= rounding_scale(row["mean_diff"]):
        return {"note": "constant difference: no test (the paired differences do not vary)"}
    needed = seeds_needed(target / row["sd"], alpha)
    out = {"seeds_needed": needed, "note": f"more than {MAX_SEEDS} seeds" if np.isnan(needed) else ""}
    if row["seeds"] < 2:
        return {**out, "note": "fewer than 2 paired seeds per setting: no t-test in this design"}
    return {**out, "detectable": detectable_effect(int(row["seeds"]), alpha) * row["sd"]}


def power_table(scored: pd.DataFrame, control: str, settings: dict) -> pd.DataFrame:
    """One row per method but the control (see module doc): settings, seeds, df, sd, alpha of
    Holm's first step, the smallest detectable difference at power 0.8, the target difference
    (the ROPE) and the seeds per setting it needs; in the metric's stored units."""
    columns = ["method", "settings", "seeds", "df", "sd", "alpha_holm", "power", "detectable", "target", "seeds_needed", "note"]
    wide = block_scores(scored, "seed", settings["metric"], settings)
    if control not in wide or wide.shape[1] < 2:
        return pd.DataFrame(columns=columns)
    diffs = wide.drop(columns=control).sub(wide[control], axis=0).stack().dropna().rename("diff").reset_index()
    table = pooled_spread(diffs)
    alpha, target = settings["alpha"] / max(1, len(table)), rope_units(settings)
    plans = pd.DataFrame([plan(row, alpha, target) for _, row in table.iterrows()], index=table.index)
    table = table.assign(alpha_holm=alpha, power=POWER, target=target).join(plans)
    return table.reindex(columns=columns)
