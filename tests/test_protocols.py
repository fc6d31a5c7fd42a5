"""Evaluation protocols: clinical metrics against scikit-learn, validation and held-out splits,
the engine's new scopes (with exact resume), study kinds, and the statistics (model selection,
fairness, unseen centres, communication frequency, aggregate scores) on hand-made results."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
from scipy.stats import trim_mean
from sklearn.calibration import calibration_curve
from sklearn.metrics import roc_auc_score

from bench.data.partition import make_partition
from bench.engine.evaluate import classification_metrics, expected_calibration_error, macro_auroc
from bench.engine.run import execute
from bench.errors import UserError
from bench.io import write_parquet
from bench.methods import registry
from bench.stats.aggregate import aggregate_scores
from bench.stats.analysis import analyse
from bench.stats.collect import load_results
from bench.stats.settings import resolve_stats
from bench.stats.synthetic import grid_configs, record_metrics_sha256, write_run
from bench.workflow import plan_workflow, prepare_workflow_config
from conftest import assert_resume_is_exact, tiny_config
from bench.testing import needs

PROTOCOL = {"partition__scheme": "natural", "partition__holdout": "east", "partition__val_fraction": 0.25, "eval__new_client_steps": 4}


# ---- clinical metrics ---------------------------------------------------------------------------
def test_auroc_and_ece_equal_scikit_learn():
    rng = np.random.default_rng(0)
    labels = np.arange(300) % 5
    weights = rng.integers(1, 6, (300, 5)) + 4 * np.eye(5, dtype=int)[labels] * rng.integers(0, 2, (300, 1))  # ties, some signal
    probabilities = weights / weights.sum(1, keepdims=True)
    assert macro_auroc(labels, probabilities) == pytest.approx(roc_auc_score(labels, probabilities, multi_class="ovr", average="macro"), abs=1e-12)
    present = labels < 3  # classes 3 and 4 absent: the mean over the classes that have positives and negatives
    binary = np.mean([roc_auc_score(labels[present] == c, probabilities[present, c]) for c in range(3)])
    assert macro_auroc(labels[present], probabilities[present]) == pytest.approx(binary, abs=1e-12)

    logits = rng.normal(0, 2, (300, 5)) + 2 * np.eye(5)[labels]
    probabilities = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)  # continuous: no confidence on a bin edge
    confidence = probabilities.max(1)
    correct = probabilities.argmax(1) == labels
    accuracy, mean_confidence = calibration_curve(correct, confidence, n_bins=15, strategy="uniform")
    counts = np.histogram(confidence, bins=np.linspace(0, 1, 16))[0]
    expected = np.sum(counts[counts > 0] / len(labels) * np.abs(accuracy - mean_confidence))
    assert expected_calibration_error(labels, probabilities) == pytest.approx(expected, abs=1e-12)
    perfect = np.eye(5)[labels]
    assert expected_calibration_error(labels, perfect) == 0.0 and macro_auroc(labels, perfect) == 1.0


def test_specificity_and_melanoma_sensitivity_by_hand():
    confusion = np.array([[6, 3, 1],   # mel: 10 images, 6 found
                          [2, 17, 1],  # nv
                          [0, 0, 0]])  # bcc: absent from the set, predicted twice
    m = classification_metrics(confusion, 0.0, ["mel", "nv", "bcc"])
    assert m["melanoma_sensitivity"] == m["recall/mel"] == 0.6
    assert m["specificity/mel"] == pytest.approx(18 / 20)  # 20 negatives, 2 called mel
    assert m["specificity/nv"] == pytest.approx(7 / 10)
    assert m["specificity/bcc"] == pytest.approx(28 / 30) and "recall/bcc" not in m
    assert "melanoma_sensitivity" not in classification_metrics(confusion, 0.0, ["a", "b", "c"])


# ---- splits ------------------------------------------------------------------------------------------
LABELS = np.repeat(np.arange(4), 250)
GROUPS = np.arange(1000) // 4
SITES = np.repeat([0, 1, 2, 3], 250)
PART = {"scheme": "dirichlet", "clients": 4, "beta": 1.0, "classes_per_client": 2, "min_samples": 10, "max_retries": 100,
        "local_test_fraction": 0.2, "val_fraction": 0.0, "holdout": None, "sites": None}


def test_validation_splits_are_grouped_seeded_and_leave_the_train_test_splits_alone():
    pool = np.arange(1000)
    plain = make_partition(pool, LABELS, PART, 3, groups=GROUPS)
    part = make_partition(pool, LABELS, {**PART, "val_fraction": 0.25}, 3, groups=GROUPS)
    again = make_partition(pool, LABELS, {**PART, "val_fraction": 0.25}, 3, groups=GROUPS)
    assert all(np.array_equal(a, b) for a, b in zip(part.val + part.train, again.val + again.train))
    for before, train, test, val in zip(plain.train, part.train, part.test, part.val):
        assert np.array_equal(np.sort(np.concatenate([train, val])), before)
        assert not set(GROUPS[train]) & set(GROUPS[val]) and not set(GROUPS[val]) & set(GROUPS[test])
        assert abs(len(val) - 0.25 * len(before)) <= 4
    assert all(np.array_equal(a, b) for a, b in zip(plain.test, part.test)) and all(len(v) == 0 for v in plain.val)


def test_a_held_out_centre_trains_nothing_and_keeps_its_own_split():
    names = ["north", "south", "east", "west"]
    natural = {**PART, "scheme": "natural", "holdout": "south", "val_fraction": 0.2}
    part = make_partition(np.arange(1000), LABELS, natural, 0, groups=GROUPS, sites=SITES, site_names=names)
    assert part.names == ["north", "east", "west"] and part.holdout.name == "south"
    held = np.concatenate([part.holdout.train, part.holdout.test])
    assert (SITES[held] == 1).all() and len(held) == 250 and not (SITES[np.concatenate(part.train + part.test + part.val)] == 1).any()
    with pytest.raises(UserError, match="'partition.holdout': 'nowhere' is not among the centres"):
        make_partition(np.arange(1000), LABELS, {**natural, "holdout": "nowhere"}, 0, groups=GROUPS, sites=SITES, site_names=names)
    with pytest.raises(UserError, match="needs partition.scheme=natural"):
        make_partition(np.arange(1000), LABELS, {**PART, "holdout": "south"}, 0)


# ---- the engine --------------------------------------------------------------------------------------
def scopes(folder) -> set[str]:
    return set(pd.read_parquet(folder / "metrics.parquet")["scope"])


@pytest.mark.slow
def test_a_held_out_centre_run_records_every_protocol_scope_and_resumes_exactly(tmp_path, monkeypatch):
    cfg = tiny_config(method="fedavg_fc", **PROTOCOL)
    record = assert_resume_is_exact(cfg, tmp_path, monkeypatch, crash_round=2)
    metrics = pd.read_parquet(tmp_path / "resumed" / "metrics.parquet")
    assert {"val", "local_val", "heldout", "heldout_tuned"} <= set(metrics["scope"])
    assert record["data"]["holdout"]["name"] == "east" and record["data"]["validation"] == sum(c["validation"] for c in record["data"]["clients"]) > 0
    bacc = metrics[metrics["client"].isna() & (metrics["metric"] == "balanced_accuracy")].pivot(index="round", columns="scope", values="value")
    assert not np.allclose(bacc["heldout"], bacc["heldout_tuned"])  # fine-tuned for 4 steps on the new centre
    execute(tiny_config(method="fedavg", **PROTOCOL), tmp_path / "global", show_progress=False)
    assert "heldout" in scopes(tmp_path / "global") and "heldout_tuned" not in scopes(tmp_path / "global")  # a global model is its own new-client model


@pytest.mark.slow
def test_the_protocols_run_for_every_registered_method(tmp_path):
    for name in registry():
        execute(tiny_config(method=name, train__rounds=2, data__public_fraction=0.2, **needs(name), **PROTOCOL), tmp_path / name, show_progress=False)
    settings = resolve_stats({"selection": "best_val", "metric": "balanced_accuracy"})
    analysis = analyse(load_results(tmp_path, settings, progress=False), settings)
    finals = analysis.finals.assign(run_id=analysis.finals["run_id"].astype(str))
    runs = analysis.results.runs.set_index("run_id")
    for run_id, row in runs.iterrows():
        mine = set(finals.loc[finals["run_id"] == run_id, "metric"])
        assert {"balanced_accuracy", "auroc", "ece", "worst_client_balanced_accuracy", "in_federation_balanced_accuracy"} <= mine, row["method"]
        has_global = registry()[json.loads(row["method_config"])["name"]].has_global_model
        assert ("heldout_balanced_accuracy" in mine) == has_global, row["method"]
    assert np.isfinite(finals["value"]).all()


# ---- study kinds ---------------------------------------------------------------------------------------
def workflow(**studies) -> dict:
    return prepare_workflow_config({"seeds": [0], "base": {"data": {"name": "synthetic"}, "partition": {"scheme": "natural", "sites": ["north", "south", "east"]}},
                                    "studies": studies})


def test_study_kinds_expand_to_their_protocol_points():
    plan = plan_workflow(workflow(freq={"kind": "communication_frequency", "datasets": ["synthetic"], "methods": ["fedavg"], "budget": 8, "local_epochs": [1, 2, 8]},
                                  loco={"kind": "leave_one_centre_out", "datasets": ["synthetic"], "methods": ["fedavg", "fedprox"]}))
    frequency = sorted((r.resolved["train"]["rounds"], r.resolved["train"]["local_epochs"]) for r in map(plan.runs.get, plan.studies["freq"]))
    assert frequency == [(1, 8), (4, 2), (8, 1)]
    held = sorted((r.resolved["method"]["name"], r.resolved["partition"]["holdout"]) for r in map(plan.runs.get, plan.studies["loco"]))
    assert held == [(m, c) for m in ("fedavg", "fedprox") for c in sorted(["north", "south", "east"])]


@pytest.mark.parametrize("study, message", [
    ({"kind": "communication_frequency", "budget": 10, "local_epochs": [1, 4]}, r"\[4\] do not divide the budget 10"),
    ({"kind": "communication_frequency", "local_epochs": [1, 2]}, "studies.s.budget': a communication_frequency study needs it"),
    ({"kind": "communication_frequency", "budget": 4, "local_epochs": [1], "grid": {"train.rounds": [2]}}, "sets train.rounds itself"),
    ({"budget": 4}, "only a communication_frequency study takes it"),
    ({"kind": "leave_one_centre_out", "base": {"partition": {"scheme": "dirichlet"}}}, "needs partition.scheme: natural and the centres listed"),
])
def test_study_kind_mistakes_are_one_line_errors(study, message):
    with pytest.raises(UserError, match=message):
        plan_workflow(workflow(s={"datasets": ["synthetic"], "methods": ["fedavg"], **study}))


# ---- statistics on hand-made results ---------------------------------------------------------------------
def hand_made(root, method: str, rows: list[tuple], **config) -> str:
    """A run folder in the engine's format whose metrics.parquet holds exactly `rows`
    (round, scope, client or None, metric, value); returns its run id."""
    cfg = grid_configs({"method": [method], "train.rounds": [4], "partition.clients": [4], "partition.val_fraction": [0.2], "seed": [0],
                        **{k: [v] for k, v in config.items()}})[0]
    path = write_run(root, cfg)
    frame = pd.DataFrame(rows, columns=["round", "scope", "client", "metric", "value"])
    frame["client"] = frame["client"].astype("Int64")
    write_parquet(path.parent / "metrics.parquet", frame)
    record_metrics_sha256(path)
    return json.loads(path.read_text())["run_id"]


def curve(scope: str, values: list[float], client: int | None = None, metric: str = "balanced_accuracy") -> list[tuple]:
    return [(r + 1, scope, client, metric, v) for r, v in enumerate(values)]


def test_selection_fairness_and_unseen_centres_on_a_hand_made_results_folder(tmp_path):
    local = [[0.1, 0.1, 0.2, 0.3], [0.1, 0.2, 0.5, 0.6], [0.3, 0.3, 0.8, 0.1], [0.2, 0.4, 0.9, 0.9]]  # clients x rounds
    fedavg = (curve("global", [0.40, 0.50, 0.55, 0.60]) + curve("val", [0.99, 0.60, 0.90, 0.70])  # round 1 is before half the budget
              + curve("heldout", [0.1, 0.2, 0.33, 0.4]) + [row for c, v in enumerate(local) for row in curve("local", v, c)])
    glob = hand_made(tmp_path, "fedavg", fedavg, **{"partition.scheme": "natural", "partition.holdout": "east"})
    own_val = [[0.5, 0.9, 0.6, 0.7], [0.5, 0.5, 0.5, 0.8]]  # client 0 picks round 2, client 1 round 4
    personal = [[0.30, 0.70, 0.10, 0.20], [0.10, 0.20, 0.30, 0.50]]
    fc = (curve("global", [0.4] * 4) + curve("val", [0.5] * 4) + curve("personal", [0.2, 0.45, 0.2, 0.35])
          + [row for c in range(2) for row in curve("local_val", own_val[c], c) + curve("personal", personal[c], c) + curve("local", personal[c], c)])
    pers = hand_made(tmp_path, "fedavg_fc", fc, **{"partition.clients": 2})

    settings = resolve_stats({"selection": "best_val", "metric": "balanced_accuracy", "references": ["fedavg"]})
    analysis = analyse(load_results(tmp_path, settings, progress=False), settings)
    score = analysis.finals.assign(run_id=analysis.finals["run_id"].astype(str)).set_index(["run_id", "metric"])["value"]
    assert score[(glob, "balanced_accuracy")] == 0.55  # round 3: best validation from round 2 on; the test set's best (0.60) is not chosen
    assert score[(pers, "balanced_accuracy")] == pytest.approx((0.70 + 0.50) / 2)  # each client at its own round
    at3 = np.array([0.2, 0.5, 0.8, 0.9])
    assert score[(glob, "client_mean_balanced_accuracy")] == pytest.approx(0.6)
    assert score[(glob, "client_sd_balanced_accuracy")] == pytest.approx(math.sqrt(0.1))  # ((.4² + .1² + .2² + .3²) / 3)^½
    assert score[(glob, "worst_client_balanced_accuracy")] == 0.2
    assert score[(glob, "client_p10_balanced_accuracy")] == pytest.approx(0.2 + 0.3 * (0.5 - 0.2))  # 10% of the way from the 1st to the 4th value
    assert score[(glob, "client_gap_balanced_accuracy")] == pytest.approx(0.7)
    assert np.percentile(at3, 10) == pytest.approx(0.29)
    assert score[(pers, "worst_client_balanced_accuracy")] == 0.5  # client 0 at round 2: 0.70, client 1 at round 4: 0.50
    assert score[(glob, "heldout_balanced_accuracy")] == 0.33 and score[(glob, "in_federation_balanced_accuracy")] == pytest.approx(0.6)

    last = analysis.last_round_scores.assign(run_id=lambda f: f["run_id"].astype(str)).set_index(["run_id", "metric"])["value"]
    assert last[(glob, "balanced_accuracy")] == 0.60 and last[(pers, "balanced_accuracy")] == 0.35
    hand_made(tmp_path, "fedprox", curve("global", [0.5] * 4))
    with pytest.raises(UserError, match="1 run.s. have no validation balanced_accuracy"):
        analyse(load_results(tmp_path, settings, progress=False), settings)


def test_aggregate_scores_by_hand():
    scored = pd.DataFrame({"block": ["a"] * 6 + ["b"] * 6, "method": (["x"] * 3 + ["y"] * 3) * 2, "method_order": 0, "run_id": [str(i) for i in range(12)],
                           "value": [1, 2, 3, 2, 2, 2, 5, 6, 7, 8, 9, 10]})
    settings = resolve_stats({"metric": "accuracy", "bootstrap": {"resamples": 2000, "seed": 1}})
    table = aggregate_scores(scored, ["y"], settings, ["a", "b"]).set_index("method")
    assert table.loc["x", "iqm"] == pytest.approx(trim_mean([1, 2, 3, 5, 6, 7], 0.25)) == pytest.approx((2 + 3 + 5 + 6) / 4)  # one value cut at each end
    # a: x > y for 3 of 9 pairs, equal for 3: 0.5; b: x never beats y: 0
    assert table.loc["x", "poi_vs_y"] == pytest.approx(0.25)
    assert table.loc["x", "poi_vs_y_ci_low"] <= 0.25 <= table.loc["x", "poi_vs_y_ci_high"]
    assert table.loc["x", "iqm_ci_low"] <= table.loc["x", "iqm"] <= table.loc["x", "iqm_ci_high"]
    pd.testing.assert_frame_equal(aggregate_scores(scored, ["y"], settings, ["a", "b"]).set_index("method"), table)  # seeded


def test_resampled_improvement_equals_comparing_every_drawn_pair():
    from bench.stats.aggregate import improvement, resampled, resampled_improvement

    x, y = np.array([0.5, 0.7, 0.7, 0.9]), np.array([0.6, 0.7, 0.2])  # ties within and across
    direct = improvement(resampled([x], 500, np.random.default_rng(3)), resampled([y], 500, np.random.default_rng(4)))
    rngs = iter([np.random.default_rng(3), np.random.default_rng(4)])

    class Draws:  # x's draws from the first generator, y's from the second, as above
        def integers(self, *args):
            return next(rngs).integers(*args)

    assert np.array_equal(resampled_improvement(x, y, 500, Draws()), direct)


def test_trimmed_mean_is_scipys_bit_for_bit():
    from scipy.stats import trim_mean

    from bench.stats.aggregate import trimmed_mean

    draws = np.random.default_rng(0).normal(size=(200, 37))
    draws[3, 5] = np.nan  # a row with a NaN is NaN, as scipy's default policy
    expected = trim_mean(draws, 0.25, axis=1)
    assert np.array_equal(trimmed_mean(draws.copy(), 0.25), expected, equal_nan=True) and np.isnan(expected[3])
    assert trimmed_mean(np.array([1.0, 2.0, 3.0, 100.0]), 0.25) == 2.5  # the middle half of 4 values: (2 + 3) / 2
    with pytest.raises(ValueError, match="cannot trim"):
        trimmed_mean(np.array([1.0, 2.0]), 0.5)  # nothing left in the middle


def test_draw_counts_counts_each_seed_per_resample():
    from bench.stats.aggregate import draw_counts

    assert draw_counts(np.array([[0, 0, 2], [1, 2, 2], [1, 1, 1]]), 3).tolist() == [[2, 0, 1], [0, 1, 2], [0, 3, 0]]


def test_communication_frequency_and_leave_one_centre_out_tables(tmp_path):
    from bench.stats.report import produce

    frequency = [{"train.local_epochs": e, "train.rounds": 8 // e} for e in (1, 2, 8)]
    for point in frequency:
        for cfg in grid_configs({"method": ["fedavg", "fedprox"], "seed": [0, 1], "partition.val_fraction": [0.2], **{k: [v] for k, v in point.items()}}):
            write_run(tmp_path / "runs", cfg)
    for cfg in grid_configs({"method": ["fedavg", "fedprox"], "seed": [0, 1], "partition.val_fraction": [0.2], "partition.scheme": ["natural"],
                             "partition.holdout": ["north", "south", "east"]}):
        write_run(tmp_path / "runs", cfg)
    settings = resolve_stats({"selection": "best_val", "metric": "balanced_accuracy", "targets": {"digits": {"metric": "balanced_accuracy", "value": 0.5}}})
    produce(tmp_path / "runs", tmp_path / "out", settings, None, ("tables", "figures"), progress=False)
    freq = pd.read_csv(tmp_path / "out" / "tables" / "communication_frequency.csv")
    assert sorted(freq["value"].unique()) == [1, 2, 8] and (freq["n"] == 2).all()
    loco = pd.read_csv(tmp_path / "out" / "tables" / "leave_one_centre_out.csv")
    assert set(loco["value"]) == {"north", "south", "east", "mean over centres"}
    assert "mean over centres" in (tmp_path / "out" / "tables" / "leave_one_centre_out.md").read_text()
    assert (tmp_path / "out" / "tables" / "loco_correlation.csv").is_file() and (tmp_path / "out" / "tables" / "communication_frequency_mb.csv").is_file()
    for kind in ("fairness", "communication_frequency", "leave_one_centre_out"):
        assert list((tmp_path / "out" / "figures" / kind).glob("*.png")), kind
    assert "stats.selection=best_val" in (tmp_path / "out" / "tables" / "main_comparison.md").read_text()
    # every caption states the protocol: the validation split, the held-out centres, the selection rule
    captions = json.loads((tmp_path / "out" / "report.json").read_text())["captions"]
    fairness = next(text for path, text in captions.items() if path.startswith("figures/fairness/") and path.endswith(".png"))
    for phrase in ("validation split of 20%", "leave-one-centre-out: each of east, north and south held out", "best validation"):
        assert phrase in fairness, (phrase, fairness)


def test_runs_made_before_the_clinical_metrics_existed_still_report(tmp_path):
    """Runs recorded without specificity (older fedrank) keep their per-class sensitivity; the
    missing half shows as absent instead of failing the report."""
    from bench.stats.report import produce

    for cfg in grid_configs({"method": ["fedavg", "fedprox"], "seed": [0, 1]}):
        path = write_run(tmp_path / "runs", cfg)
        metrics = pd.read_parquet(path.parent / "metrics.parquet")
        write_parquet(path.parent / "metrics.parquet", metrics[~metrics["metric"].astype(str).str.startswith("specificity/")])
        record_metrics_sha256(path)
    produce(tmp_path / "runs", tmp_path / "out", resolve_stats({}), None, ("tables",), progress=False)
    table = pd.read_csv(tmp_path / "out" / "tables" / "per_class.csv")
    shown = (tmp_path / "out" / "tables" / "per_class.md").read_text()
    assert len(table) == 2 and " / –" in shown
