"""Ranking every method across settings (Demšar 2006; Benavoli, Corani & Mangili 2016).

Blocks are settings (each method's mean over seeds) or, with few settings, setting x seed pairs.
Within a block methods are ranked (1 = best, ties share the average rank). The Friedman test
asks whether the average ranks differ at all; the Nemenyi critical difference says how far
apart two average ranks must be; Holm-corrected pairwise Wilcoxon signed-rank tests over the
blocks two methods share are the primary pairwise evidence (they do not depend on which other
methods are in the comparison). Friedman needs every method in every block: it runs on the
largest complete design, and a method that lacks too many blocks is ranked on its pairwise
evidence only, which the leaderboard says. Every method is also compared with one control
method (control.py): Demšar's rank z-test and the Bayesian signed-rank test with a ROPE.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from scipy import stats

from bench.stats.bootstrap import grouped_mean_ci
from bench.stats.control import against_control
from bench.stats.scores import orient
from bench.stats.significance import ROUNDING, holm, wilcoxon
from bench.stats.summaries import bootstrap_args


AUTO_MIN_SETTINGS = 5


@dataclass
class Ranking:
    kind: str  # "setting" or "seed": what a block is
    scores: pd.DataFrame  # blocks x methods, oriented so larger is better (NaN: method absent)
    design: pd.DataFrame  # the complete blocks x methods the Friedman test uses
    ranks: pd.DataFrame  # design's ranks per block
    friedman: dict = field(default_factory=dict)
    pairwise: pd.DataFrame = field(default_factory=pd.DataFrame)
    control: pd.DataFrame = field(default_factory=pd.DataFrame)  # every method against the control (control.py)
    leaderboard: pd.DataFrame = field(default_factory=pd.DataFrame)
    notes: list[str] = field(default_factory=list)


# ---- statistics -----------------------------------------------------------------------------
def block_ranks(scores: np.ndarray) -> np.ndarray:
    """Rank of each method within each block (row): 1 = largest, ties get their average rank."""
    return stats.rankdata(-scores, method="average", axis=1)


def friedman(ranks: np.ndarray) -> dict:
    """Friedman chi-square (tie-corrected, as scipy.stats.friedmanchisquare) and the
    Iman-Davenport F of an (n blocks, k methods) rank matrix, with `undefined` saying why a
    statistic is NaN.

    Every block a complete tie: chi2 is 0 / 0, no test. Ranks identical in every block (one
    block always is): chi2 reaches its maximum n (k - 1) and F = (n - 1) chi2 / (n (k - 1) - chi2)
    divides by zero; that is the most extreme outcome, not infinite evidence (k = 3, n = 2: chi2 =
    4, p = 0.135), so F and its p are NaN and only the chi2 test speaks."""
    n, k = ranks.shape
    out = {"blocks": n, "methods": k, "chi2": math.nan, "p": math.nan, "iman_davenport_f": math.nan, "p_f": math.nan, "undefined": ""}
    ties = sum(np.sum(t**3 - t) for t in (np.unique(row, return_counts=True)[1] for row in ranks))
    correction = 1 - ties / (n * k * (k * k - 1))
    if correction <= 0:
        return {**out, "undefined": "undefined: every block a complete tie"}
    chi2 = (12 * n / (k * (k + 1)) * np.sum(ranks.mean(0) ** 2) - 3 * n * (k + 1)) / correction
    out.update(chi2=float(chi2), p=float(stats.chi2.sf(chi2, k - 1)))
    denominator = n * (k - 1) - chi2
    if denominator <= ROUNDING * n * (k - 1):
        return {**out, "undefined": "Iman-Davenport F undefined: identical ranks in every block"}
    f = (n - 1) * chi2 / denominator
    return {**out, "iman_davenport_f": float(f), "p_f": float(stats.f.sf(f, k - 1, (k - 1) * (n - 1)))}


def nemenyi_q(k: int, alpha: float) -> float:
    """Critical value q_alpha of the Nemenyi test: the studentized range quantile / sqrt(2)."""
    return float(stats.studentized_range.ppf(1 - alpha, k, np.inf) / math.sqrt(2))


def critical_difference(k: int, n: int, alpha: float) -> float:
    """Nemenyi CD = q_alpha sqrt(k (k + 1) / (6 n)) for k methods over n blocks."""
    return nemenyi_q(k, alpha) * math.sqrt(k * (k + 1) / (6 * n))


def cliques(average_ranks: pd.Series, cd: float) -> list[list[str]]:
    """Maximal runs of methods (sorted by rank) whose ranks differ by less than CD: the groups a
    CD diagram joins with a bar."""
    ordered = average_ranks.sort_values()
    names, values = ordered.index.tolist(), ordered.to_numpy()
    spans = []
    for i in range(len(values)):
        j = i
        while j + 1 < len(values) and values[j + 1] - values[i] < cd:
            j += 1
        if j > i and not (spans and spans[-1][1] >= j):
            spans.append((i, j))
    return [names[i:j + 1] for i, j in spans]


# ---- the design -----------------------------------------------------------------------------
def block_scores(scored: pd.DataFrame, kind: str, metric: str, settings: dict) -> pd.DataFrame:
    """Blocks x methods of oriented scores: a run shared by two studies counts once."""
    unique = scored.drop_duplicates(["block", "run_id"])
    index = ["block"] if kind == "setting" else ["block", "seed"]
    table = unique.pivot_table(index=index, columns="method", values="value", aggfunc="mean", observed=True)
    return orient(table, metric, settings)


def complete_design(scores: pd.DataFrame) -> pd.DataFrame:
    """The blocks x methods sub-table with every cell present that the Friedman test uses.

    Methods are added best-covered first; a method joins only if more than half the blocks
    (and at least 2) stay complete: a method missing one failed run still gets ranked, a sweep
    variant run in one setting of two does not shrink the ranking of the others to that
    setting."""
    coverage = scores.notna().sum()
    thresholds = sorted(coverage.unique(), reverse=True)
    best = scores[coverage.index[coverage >= thresholds[0]]].dropna() if thresholds else scores
    for threshold in thresholds[1:]:
        design = scores[coverage.index[coverage >= threshold]].dropna()
        if len(design) >= 2 and 2 * len(design) > thresholds[0]:
            best = design
    return best


def choose_kind(scored: pd.DataFrame, metric: str, settings: dict) -> str:
    """`ranking.blocks`; auto = setting blocks from AUTO_MIN_SETTINGS complete settings on, else
    setting x seed blocks (seeds are independent replicates: with two settings, six blocks of
    three seeds say more than two blocks of means)."""
    kind = settings["ranking"]["blocks"]
    if kind != "auto":
        return kind
    design = complete_design(block_scores(scored, "setting", metric, settings))
    return "setting" if design.shape[0] >= AUTO_MIN_SETTINGS and design.shape[1] >= 2 else "seed"


# ---- pairwise and leaderboard ---------------------------------------------------------------
def pairwise_wilcoxon(scores: pd.DataFrame, alpha: float) -> pd.DataFrame:
    """Every pair of methods over the blocks both have: mean difference, Wilcoxon, Holm."""
    rows = []
    for a, b in itertools.combinations(scores.columns, 2):
        both = scores[[a, b]].dropna()
        rows.append({"method_a": a, "method_b": b, "blocks": len(both), "diffs": (both[a] - both[b]).to_numpy()})
    table = pd.DataFrame(rows, columns=["method_a", "method_b", "blocks", "diffs"])
    table["mean_diff"] = [d.mean() if len(d) else np.nan for d in table["diffs"]]
    table["w_plus"], table["p"], table["wilcoxon_method"] = np.nan, np.nan, ""
    for n, index in table.groupby("blocks").groups.items():
        if n == 0:
            continue
        w, p, how = wilcoxon(np.stack(table.loc[index, "diffs"].to_list()))
        table.loc[index, ["w_plus", "p"]] = np.column_stack([w, p])
        table.loc[index, "wilcoxon_method"] = how
    table["p_holm"] = holm(table["p"], members=table["blocks"] > 0)
    significant = table["p_holm"] <= alpha
    table["better"] = np.where(significant, np.where(table["mean_diff"] > 0, table["method_a"], table["method_b"]), "")
    return table.drop(columns="diffs")


def wins_ties_losses(scores: pd.DataFrame, method: str, reference: str, margin: float) -> tuple[int, int, int]:
    both = scores[[method, reference]].dropna()
    diff = both[method] - both[reference]
    margin += 1e-12  # 0.69 - 0.70 is -0.010000000000000009: a difference of the margin is a tie
    return int((diff > margin).sum()), int((diff.abs() <= margin).sum()), int((diff < -margin).sum())


def competition_ranks(average_rank: pd.Series, score: pd.Series) -> list[int]:
    """1-based ranks of rows sorted best first, where equal average ranks (or, for methods ranked
    on pairwise evidence only, equal scores) share the better rank: 1, 1, 3."""
    keys = [(round(a, 9), 0.0) if pd.notna(a) else (math.inf, round(s, 12)) for a, s in zip(average_rank, score)]
    return [keys.index(key) + 1 for key in keys]


def leaderboard(ranking: Ranking, references: list[str], metric: str, settings: dict) -> pd.DataFrame:
    """Rank, average rank, mean over blocks with its CI, wins/ties/losses vs references, and
    the verdict against the control with its probabilities and Holm-adjusted rank p."""
    scores, average = ranking.scores, ranking.ranks.mean() if not ranking.ranks.empty else pd.Series(dtype=float)
    raw = orient(scores, metric, settings).melt(var_name="method", value_name="value", ignore_index=False)  # the metric's own direction
    table = grouped_mean_ci(raw, ["method"], "value", **bootstrap_args(settings)).rename(columns={"n": "blocks"}).set_index("method").reindex(scores.columns)
    table = table.reset_index()[["method", "blocks", "mean", "ci_low", "ci_high", "ci_method"]]
    table.insert(1, "average_rank", table["method"].map(average))
    for ref in references:
        if ref in scores.columns:
            margin = settings["ranking"]["tie_margin"]
            table[f"vs {ref}"] = [None if m == ref else "{}/{}/{}".format(*wins_ties_losses(scores, m, ref, margin)) for m in table["method"]]
    table["ranked_on"] = np.where(table["average_rank"].notna(), "Friedman design", "pairwise evidence only")
    if not ranking.control.empty:
        verdicts = ranking.control[["method", "blocks", "decision", "p_worse", "p_equivalent", "p_better", "p_control_holm"]]
        table = table.merge(verdicts.rename(columns={"blocks": "blocks_with_control"}), on="method", how="left")
    table["_score"] = scores.mean().reindex(table["method"]).to_numpy()  # oriented: larger is better
    table = table.sort_values(["average_rank", "_score"], ascending=[True, False], na_position="last", ignore_index=True)
    table.insert(0, "rank", competition_ranks(table["average_rank"], table.pop("_score")))
    return table


def rank_methods(scored: pd.DataFrame, references: list[str], settings: dict, control: str | None = None) -> Ranking:
    """The whole ranking of the headline metric (see module doc), against `control` if given."""
    metric, alpha = settings["metric"], settings["alpha"]
    kind = choose_kind(scored, metric, settings)
    scores = block_scores(scored, kind, metric, settings)
    design = complete_design(scores)
    ranking = Ranking(kind, scores, design, pd.DataFrame(index=design.index, columns=design.columns, dtype=float))
    left_out = [m for m in scores.columns if m not in design.columns]
    if left_out:
        ranking.notes.append(f"not in every block of the Friedman design, ranked on pairwise evidence only: {', '.join(left_out)}")
    if design.shape[0] >= 1 and design.shape[1] >= 2:
        ranking.ranks = pd.DataFrame(block_ranks(design.to_numpy()), index=design.index, columns=design.columns)
        k, n = design.shape[1], design.shape[0]
        ranking.friedman = friedman(ranking.ranks.to_numpy())
        ranking.friedman.update(alpha=alpha, q_alpha=nemenyi_q(k, alpha), cd=critical_difference(k, n, alpha), kind=kind)
        if n < 2:
            ranking.notes.append(f"one {kind} block only: average ranks are that block's ranks and no test can reject")
    else:
        ranking.notes.append("fewer than two methods share a block: no Friedman test or critical difference")
    ranking.pairwise = pairwise_wilcoxon(scores, alpha)
    if control in scores.columns:
        ranking.control = against_control(scores, ranking.ranks, control, settings)
    ranking.leaderboard = leaderboard(ranking, references, metric, settings)
    return ranking
