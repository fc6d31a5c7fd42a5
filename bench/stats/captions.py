"""Caption sentences built from what was computed: the metric, the interval, the scoring rule
and the protocol the runs followed, in words.

Every table and figure gets a caption (report.json `captions`, keyed by its path), which the
HTML report shows; tables and figures assemble theirs from these phrases, so a caption never
claims a band that was not drawn or an interval that was not computed.
"""

from __future__ import annotations

import math
from collections import Counter

import pandas as pd

from bench.stats.collect import Results, format_value
from bench.stats.render import is_percent, p_text


def metric_name(metric: str) -> str:
    """'balanced accuracy', 'recall/mel', 'loss'."""
    return metric.replace("_", " ")


def axis_label(metric: str) -> str:
    """'accuracy (%)', 'loss': the metric as figures plot it."""
    return metric_name(metric) + (" (%)" if is_percent(metric) else "")


def final_phrase(settings: dict) -> str:
    """How a run's final score is taken: the selection rule (stats.selection) in words."""
    from bench.stats.selection import rule_text

    if settings["selection"] == "best_val":
        return f"at {rule_text(settings)}"
    k = settings["last_k"]
    return "at its last evaluated round" if k == 1 else f"as the mean of its last {k} evaluated rounds"


def interval_phrase(ci_methods, confidence: float, over: str = "seeds") -> str:
    """What the intervals are, from the ci_method of each interval shown ('BCa', 'percentile',
    't' below `bootstrap.min_values` values, 'n<2')."""
    counts = Counter(ci_methods)
    if not counts or set(counts) == {"n<2"}:
        return f"no interval (one value per {over[:-1]})"
    if not counts["BCa"] + counts["percentile"]:
        text = f"{confidence:.0%} Student t interval over {over} (too few {over} for a bootstrap interval)"
    else:
        asides = [f"the Student t interval for {counts['t']} with too few {over} for the bootstrap"] * bool(counts["t"])
        asides += [f"the percentile interval for {counts['percentile']} where BCa is degenerate, e.g. all values equal"] * bool(counts["percentile"])
        text = f"{confidence:.0%} BCa bootstrap interval over {over}" + (f" ({'; '.join(asides)})" if asides else "")
    if counts["n<2"]:
        text += f"; none for {counts['n<2']} with a single value"
    return text


def intervals_rule(settings: dict) -> str:
    """The interval rule of a report, for its front page: which interval from how many values."""
    boot = settings["bootstrap"]
    return (f"{settings['confidence']:.0%} BCa bootstrap from {boot['min_values']} values on ({boot['resamples']} resamples, seed {boot['seed']}), "
            f"Student's t interval below (bootstrap.min_values: from few values the bootstrap under-covers)")


def friedman_phrase(friedman: dict) -> str:
    """'Friedman chi2 = 4.00 (k = 3, N = 2), p = 0.135; Iman-Davenport F undefined: ...': the
    Friedman and Iman-Davenport tests in words; F's p below alpha where chi2's is not is
    flagged, not claimed (the F approximation is optimistic with few blocks)."""
    size = f"k = {friedman['methods']}, N = {friedman['blocks']}"
    if math.isnan(friedman["chi2"]):
        return f"Friedman test ({size}) {friedman['undefined']}"
    text = f"Friedman chi2 = {friedman['chi2']:.2f} ({size}), {p_text(friedman['p'])}; "
    if math.isnan(friedman["iman_davenport_f"]):
        return text + friedman["undefined"]
    text += f"Iman-Davenport F = {friedman['iman_davenport_f']:.2f}, {p_text(friedman['p_f'])}"
    if friedman["p_f"] <= friedman["alpha"] < friedman["p"]:
        text += " (below alpha where the Friedman chi2 is not: no difference is claimed, the F approximation is optimistic with few blocks)"
    return text


def joined(items: list[str], last: str) -> str:
    """'a', 'a and b', 'a, b and c' (`last` is 'and' or 'or')."""
    return ", ".join(items[:-1]) + f" {last} " + items[-1] if len(items) > 1 else "".join(items)


def listing(names) -> str:
    return joined(list(dict.fromkeys(names)), "and")


def choices(values, unit: str = "") -> str:
    """'3' or '3, 5 or 10 (by setting)' (sorted, numbers as numbers) for the values a field takes."""
    distinct = sorted(pd.Series(list(values)).dropna().unique(), key=lambda v: (isinstance(v, str), v))
    shown = [format_value(v) + unit for v in distinct]
    if len(shown) < 2:
        return "".join(shown) or "–"
    return joined(shown, "or") + " (by setting)"


def headline_scopes(results: Results) -> dict[str, str]:
    """Per method, the model its headline score is of: 'global' or 'personal'."""
    return results.runs.drop_duplicates("method").set_index("method")["headline_scope"].to_dict()


def scope_phrase(results: Results, methods=None) -> str:
    """Which model each method is scored by (its runs' headline scope)."""
    runs = results.runs.drop_duplicates("method")
    if methods is not None:
        runs = runs[runs["method"].isin(list(methods))]
    by_scope = runs.groupby("headline_scope", sort=False)["method"].agg(list)
    parts = []
    if "global" in by_scope:
        parts.append(f"the global model for {listing(by_scope['global'])}")
    if "personal" in by_scope:
        parts.append(f"the mean over clients of each client's own model for {listing(by_scope['personal'])}")
    return "scored on the global test set: " + "; ".join(parts) if parts else ""


def family_name(method: str, paper_names: list[dict]) -> str:
    """A method's name as the paper writes it, without hyper-parameters: the words its paper
    names share ('FedLSC Per=0%', 'FedLSC Per=1%' -> 'FedLSC'); the method name without any."""
    names = [entry["name"].split() for entry in paper_names if entry["method"]["name"] == method]
    shared = []
    for words in zip(*names):
        if len(set(words)) > 1:
            break
        shared.append(words[0])
    return " ".join(shared) or method


def seeds_phrase(seeds) -> str:
    seeds = sorted({int(s) for s in seeds})
    contiguous = len(seeds) > 2 and seeds == list(range(seeds[0], seeds[-1] + 1))
    shown = f"{seeds[0]}-{seeds[-1]}" if contiguous else ", ".join(map(str, seeds))
    return f"{len(seeds)} seed{'s' if len(seeds) > 1 else ''} ({shown})"


def split_phrase(runs: pd.DataFrame) -> str:
    """Each dataset's global test set, in words and numbers."""
    sizes = runs.dropna(subset=["global_test"]).drop_duplicates("data.name")
    counts = "; ".join(f"{row['data.name']}: {int(row['global_test']):,} test and {int(row['train_pool']):,} training images" for _, row in sizes.iterrows())
    return ("a global test set held out before partitioning, the same for every method and seed (drawn by group, so that no patient, "
            "lesion or group of copies is on both sides, or the dataset's official test split where it has one and data.official_split "
            "is on)" + (f" ({counts})" if counts else ""))


def partition_phrase(runs: pd.DataFrame) -> str:
    """The clients: how many there actually were, and how the training pool was split."""
    schemes = []
    for scheme, group in runs.groupby("partition.scheme", sort=False):
        if scheme in ("dirichlet", "quantity"):
            kind = "label" if scheme == "dirichlet" else "quantity"
            schemes.append(f"Dirichlet {kind} skew (beta = {choices(group['partition.beta'])})")
        else:
            schemes.append(f"{scheme} partition")
    clients = runs["class_counts"].map(len)
    return f"{choices(clients[clients > 0])} clients, {listing(schemes)}"


def model_phrase(runs: pd.DataFrame) -> str:
    init = runs["model.weights"].notna() if "model.weights" in runs else pd.Series(False, index=runs.index)
    start = listing(["pretrained weights"] * bool(init.any()) + ["random init"] * bool((~init).any()))
    return f"model {choices(runs['model.name'])} ({start}) on {choices(runs['data.image_size'], ' px')} images"


def training_phrase(runs: pd.DataFrame) -> str:
    epochs, every = choices(runs["train.local_epochs"]), choices(runs["eval.every"])
    evaluated = "every round" if every == "1" else f"every {every} rounds and at the last"
    return f"{choices(runs['train.rounds'])} rounds of {epochs} local epoch{'' if epochs == '1' else 's'}, evaluated {evaluated}"


def validation_phrase(runs: pd.DataFrame) -> str:
    """Each client's validation split (partition.val_fraction), or that there is none."""
    shares = runs["partition.val_fraction"].dropna() if "partition.val_fraction" in runs else pd.Series(dtype=float)
    if not (shares > 0).any():
        return "no validation split"
    return (f"a validation split of {choices(shares * 100, '%')} of each client's training data (whole groups; their union is the "
            "global validation set)")


def unseen_phrase(runs: pd.DataFrame) -> str:
    """The centres held out of the federation (leave-one-centre-out), if any."""
    held = sorted(runs["partition.holdout"].dropna().unique()) if "partition.holdout" in runs else []
    return f"; leave-one-centre-out: each of {listing(held)} held out in turn, trained on by no client and scored on its own test split" if held else ""


def participation_phrase(runs: pd.DataFrame) -> str:
    """Clients per round, when not every client takes part."""
    if "train.participation" not in runs or (runs["train.participation"].dropna() == 1).all():
        return ""
    return f"; {choices(runs['train.participation'])} of the clients taking part per round (the same clients for every method of a seed)"


def protocol(results: Results, settings: dict) -> str:
    """The protocol of the runs behind a report, in words."""
    runs = results.runs.drop_duplicates("run_id")
    return (
        f"Protocol: {split_phrase(runs)}, {validation_phrase(runs)}{unseen_phrase(runs)}; {partition_phrase(runs)}"
        f"{participation_phrase(runs)}; {model_phrase(runs)}; {training_phrase(runs)}; "
        f"each run is scored {final_phrase(settings)} (the test set chooses no round and stops nothing); "
        f"{seeds_phrase(runs['seed'])}, paired across methods (same partition, initial model and batch order per seed)."
    )


def coinciding(curves: dict[str, pd.Series], tolerance: float) -> list[list[str]]:
    """Groups of methods whose curves (indexed alike, e.g. by round) never differ by more than
    `tolerance`: drawn on top of each other, one would hide the other."""
    groups: list[list[str]] = []
    for method, curve in curves.items():
        for group in groups:
            other = curves[group[0]]
            common = curve.index.intersection(other.index)
            if len(common) == len(curve) == len(other) and (curve[common] - other[common]).abs().max() <= tolerance:
                group.append(method)
                break
        else:
            groups.append([method])
    return [g for g in groups if len(g) > 1]


def coinciding_note(groups: list[list[str]]) -> str:
    if not groups:
        return ""
    pairs = "; ".join(listing(g) for g in groups)
    return f" Curves that coincide (never more than a line width apart): {pairs}; drawn with different line styles and markers."
