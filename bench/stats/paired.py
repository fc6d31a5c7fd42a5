"""Every method against the reference methods, paired by seed within a setting.

For a given seed every method sees the same partition, initial model and batch order, so the
difference of two methods' final scores on that seed is the unit of evidence. Per comparison:
mean difference with a paired bootstrap CI, paired t-test, exact Wilcoxon signed-rank, Cohen's
d_z, and Holm's correction over the family of all comparisons of the setting (per test). Where
too few seeds make significance unreachable, the row says so instead of printing a bare p; a
constant difference (every seed differs by the same amount, up to rounding) is no test at all.
"""

from __future__ import annotations

import json
import logging

import numpy as np
import pandas as pd

from bench.stats.bootstrap import grouped_mean_ci
from bench.stats.collect import Results, method_defaults
from bench.stats.significance import CONSTANT_NOTE, cohen_dz, constant, holm, min_wilcoxon_p, paired_t, pairs_needed, wilcoxon
from bench.stats.summaries import bootstrap_args

log = logging.getLogger(__name__)
KEYS = ["study", "setting", "method", "reference"]


def resolve_references(results: Results, references: list[str]) -> list[str]:
    """Display names of the reference methods: a reference given as a paper name or label is
    itself; given as a method name it is that method's variant with default hyper-parameters."""
    treatments = results.runs.drop_duplicates("method")
    found = []
    for ref in references:
        exact = treatments[(treatments["method"] == ref) | (treatments["label"] == ref)]
        named = treatments[treatments["method_config"].map(lambda c: json.loads(c)["name"]) == ref]
        if len(named) > 1:
            default = method_defaults().get(ref)
            named = named[named["method_config"].map(json.loads) == default]
        chosen = exact if len(exact) else named
        if len(chosen) == 1:
            found.append(chosen["method"].iloc[0])
        else:
            log.info("reference method '%s' %s; no comparisons against it", ref, "is not in the results" if chosen.empty else "is ambiguous")
    return list(dict.fromkeys(found))


def comparisons(scored: pd.DataFrame, references: list[str]) -> pd.DataFrame:
    """Long table of paired differences: study, setting, method, reference, seed, diff.

    A pair of references is compared once (the later one against the earlier)."""
    wide = scored.pivot_table(index=["study", "setting", "seed"], columns="method", values="value", observed=True)
    frames = []
    for rank, ref in enumerate(references):
        if ref not in wide:
            continue
        others = [m for m in wide.columns if m != ref and m not in references[:rank]]
        diff = wide[others].sub(wide[ref], axis=0).stack().dropna().rename("diff").reset_index()
        frames.append(diff.assign(reference=ref))
    if not frames:
        return pd.DataFrame(columns=[*KEYS, "seed", "diff"])
    return pd.concat(frames, ignore_index=True)


def too_few_seeds(n: int, family: int, alpha: float, fixed: bool = False) -> str:
    """The explicit statement a reader needs when a test cannot reach alpha by construction
    (`fixed`: the differences are constant, so there is nothing to test)."""
    if n < 2:
        return f"{n} paired seed(s): no test"
    if fixed:
        return f"{CONSTANT_NOTE} (all {n} seeds differ by the same amount up to rounding: no spread to test against)"
    floor = min_wilcoxon_p(n)
    if floor > alpha:
        return f"with {n} paired seeds the exact Wilcoxon p cannot go below {floor:.3g} > alpha={alpha:g}; needs >= {pairs_needed(alpha, 1)} seeds"
    if family * floor > alpha:
        return f"after Holm over {family} comparisons the Wilcoxon p cannot go below {min(1, family * floor):.3g} > alpha={alpha:g}; needs >= {pairs_needed(alpha, family)} seeds"
    return ""


def comparison_tests(diffs: pd.DataFrame, settings: dict) -> pd.DataFrame:
    """Mean difference, CI, t-test, Wilcoxon and d_z per comparison (batched by sample size)."""
    table = grouped_mean_ci(diffs, KEYS, "diff", **bootstrap_args(settings), keep_values=True).rename(columns={"mean": "diff"})
    for column in ("t", "p_t", "w_plus", "p_wilcoxon", "effect_dz"):
        table[column] = np.nan
    table["wilcoxon_method"], table["constant"] = "", False
    for n, index in table.groupby("n").groups.items():
        if n < 2:  # one pair is no test: it stays out of the Holm family
            continue
        matrix = np.array(table.loc[index, "values"].tolist(), dtype=float).reshape(len(index), n)
        t, p = paired_t(matrix)
        w, pw, how = wilcoxon(matrix)
        table.loc[index, ["t", "p_t", "w_plus", "p_wilcoxon", "effect_dz"]] = np.column_stack([t, p, w, pw, cohen_dz(matrix)])
        table.loc[index, "wilcoxon_method"] = how
        table.loc[index, "constant"] = constant(matrix)
    return table.drop(columns="values")


def paired_comparisons(scored: pd.DataFrame, references: list[str], settings: dict) -> pd.DataFrame:
    """One row per study, setting, method and reference (see module doc)."""
    diffs = comparisons(scored, references)
    if diffs.empty:
        return pd.DataFrame(columns=[*KEYS, "metric", "n", "diff", "ci_low", "ci_high", "p_t", "p_wilcoxon", "note"])
    table = comparison_tests(diffs, settings)
    alpha = settings["alpha"]
    family, tested = table["study"] + "\x00" + table["setting"], table["n"] >= 2
    table["family"] = family.map(family[tested].value_counts()).fillna(0).astype(int)
    table["p_t_holm"] = holm(table["p_t"], family, tested)
    table["p_wilcoxon_holm"] = holm(table["p_wilcoxon"], family, tested)
    means = scored.groupby(["study", "setting", "method"], observed=True)["value"].mean()
    table["mean_method"] = means.reindex(pd.MultiIndex.from_frame(table[["study", "setting", "method"]])).to_numpy()
    table["mean_reference"] = means.reindex(pd.MultiIndex.from_frame(table[["study", "setting", "reference"]])).to_numpy()
    table["note"] = [too_few_seeds(n, f, alpha, c) for n, f, c in zip(table["n"], table["family"], table["constant"])]
    order = scored.drop_duplicates(["study", "setting", "method"])[["study", "setting", "method", "setting_order", "method_order"]]
    table = table.merge(order, on=["study", "setting", "method"]).assign(metric=settings["metric"])
    return table.sort_values(["setting_order", "reference", "method_order", "method"], ignore_index=True)
