"""Search spaces, recipes and equal-budget tuning: draws, plans, selection on validation data only."""

from __future__ import annotations

import copy
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pytest

from bench.config import resolve
from bench.errors import UserError
from bench.methods import Method, Recipe, check_declared_search, hparam, registry
from bench.search import check_recipe, choices, intuniform, loguniform, shared_space, space_from_json, uniform
from bench.stats.settings import resolve_stats
from bench.stats.synthetic import grid_configs, record_metrics_sha256, write_run
from bench.tuning import draw_trials, select, slug
from bench.workflow import plan_workflow, prepare_workflow_config

# ---- spaces --------------------------------------------------------------------------------------


def test_spaces_map_the_unit_interval_as_computed_by_hand():
    assert loguniform(1e-3, 1.0).at(0.5) == pytest.approx(10**-1.5, rel=1e-3)  # exp of the mean log: 0.0316
    assert loguniform(1e-3, 1.0).at(0.0) == 1e-3
    assert uniform(0.0, 2.0).at(0.25) == 0.5
    assert [intuniform(1, 5).at(u) for u in (0.0, 0.19, 0.2, 0.99)] == [1, 1, 2, 5]  # five equal shares
    assert [choices("adam", "sgd").at(u) for u in (0.0, 0.49, 0.5, 0.999)] == ["adam", "adam", "sgd", "sgd"]
    assert uniform(0.0, 1.0).at(1 / 3) == 0.333  # 3 significant digits


@pytest.mark.parametrize("spec", [{"choices": []}, {"loguniform": [0, 1]}, {"uniform": [1, 1]}, {"int": [1.5, 3]}, {"normal": [0, 1]}, [1, 2]])
def test_bad_spaces_are_one_line_errors(spec):
    with pytest.raises(UserError, match="config key 'x'"):
        space_from_json(spec, "x")


def test_a_declared_space_outside_the_bounds_is_refused_when_the_method_is_checked():
    @dataclass(kw_only=True)
    class Broken(Method):
        name = "broken_space"
        rate: float = hparam(0.1, "a rate", exclusiveMinimum=0, search=uniform(0.0, 1.0))

    with pytest.raises(UserError, match="hyper-parameter rate: search space uniform\\(0, 1\\) gives 0.0"):
        check_declared_search(Broken)


@pytest.mark.parametrize("recipe, problem", [
    (Recipe(settings={"partition.beta": 0.1}), "training settings"),
    (Recipe(settings={"train.optimizer": "rmsprop"}), "train.optimizer='rmsprop'"),
    (Recipe(space={"train.batch_size": intuniform(8, 64)}), "not a shared setting"),
    (Recipe(settings={"train.lr": 0.1}, space={"train.lr": loguniform(0.01, 1.0)}), "both fixes and searches"),
])
def test_bad_recipes_are_refused(recipe, problem):
    with pytest.raises(TypeError, match=problem):
        check_recipe(recipe, "method m")


def test_every_registered_space_and_recipe_is_valid():
    for cls in registry().values():
        check_declared_search(cls)  # raises on a bad declaration
    assert {"train.lr", "train.optimizer", "train.momentum", "train.local_epochs"} <= set(shared_space())


# ---- trials --------------------------------------------------------------------------------------
DIMS = {"method.mu": loguniform(1e-3, 1.0), "train.lr": loguniform(1e-4, 1e-1), "train.optimizer": choices("adam", "sgd")}


def test_trials_are_seeded_and_a_larger_budget_extends_a_smaller_one():
    eight = draw_trials(DIMS, 8, seed=0, defaults_first=True)
    assert eight == draw_trials(DIMS, 8, seed=0, defaults_first=True)
    assert draw_trials(DIMS, 5, seed=0, defaults_first=True) == eight[:5]  # raising N reuses the first trials
    assert eight[0] == {} and all(set(t) == set(DIMS) for t in eight[1:])  # trial 0: the untuned configuration
    assert draw_trials(DIMS, 8, seed=1, defaults_first=True) != eight
    assert draw_trials({}, 4, seed=0, defaults_first=False) == [{}] * 4  # nothing to tune


def test_sobol_trials_cover_each_dimension_evenly():
    trials = draw_trials({"x": uniform(0.0, 1.0)}, 16, seed=3, defaults_first=False)
    counts = np.histogram([t["x"] for t in trials], bins=4, range=(0, 1))[0]
    assert list(counts) == [4, 4, 4, 4]  # a scrambled Sobol prefix of 2^k points is balanced


# ---- plans ---------------------------------------------------------------------------------------
def tuned_config(**tune) -> dict:
    return prepare_workflow_config({
        "results": "results/runs", "reports": "reports", "seeds": [0, 1],
        "base": {"partition": {"clients": 3, "val_fraction": 0.2}, "model": {"name": "small_cnn", "widths": [8, 16]}, "train": {"rounds": 2}},
        "studies": {"tiny": {"datasets": ["digits"], "methods": ["fedavg", "fedprox", "scaffold"], "recipes": "paper",
                             "tune": {"trials": 4, "seeds": [100], **tune}}},
    })


def test_every_pair_gets_the_same_trials_on_the_tuning_seeds():
    config = tuned_config(seeds=[100, 101])
    plan = plan_workflow(config)
    methods = config["studies"]["tiny"]["methods"]
    assert len(plan.pairs) == len(methods)
    for pair in plan.pairs.values():
        assert len(pair.trials) == 4 and pair.trials[0] == {}
        assert all(len(runs) == 2 for runs in pair.trial_runs)
        assert {plan.runs[r].resolved["seed"] for runs in pair.trial_runs for r in runs} == {100, 101}
    assert set(plan.studies) == {"tiny", "tiny-untuned"}
    assert not plan.studies["tiny"]  # test runs wait for the selection
    assert not set(plan.trials) & {r for ids in plan.studies.values() for r in ids}  # trials are never ranked
    fedprox = plan.pairs["tiny/digits/all/fedprox"]
    assert set(fedprox.dims) == {"method.mu", "train.lr"}


def test_paper_recipes_set_and_record_the_training_settings():
    plan = plan_workflow(tuned_config())
    scaffold = next(r.resolved for r in plan.runs.values() if r.resolved["method"]["name"] == "scaffold")
    assert scaffold["train"]["optimizer"] == "sgd" and scaffold["train"]["momentum"] == 0.0
    assert scaffold["train"]["recipe"] == {"train.optimizer": "sgd", "train.momentum": 0.0}
    shared = copy.deepcopy(tuned_config())
    shared["studies"]["tiny"]["recipes"] = "shared"
    runs = plan_workflow(shared).runs.values()
    assert all(r.resolved["train"]["recipe"] == {} and r.resolved["train"]["optimizer"] == "adam" for r in runs)


def test_a_grid_axis_overrides_the_recipe_and_leaves_its_record():
    config = tuned_config()
    config["studies"]["tiny"]["grid"] = {"train.momentum": [0.5]}
    scaffold = next(r.resolved for r in plan_workflow(config).runs.values() if r.resolved["method"]["name"] == "scaffold")
    assert scaffold["train"]["momentum"] == 0.5 and scaffold["train"]["recipe"] == {"train.optimizer": "sgd"}


def test_a_recipe_record_that_the_run_contradicts_is_refused():
    with pytest.raises(UserError, match="records train.optimizer='sgd' but the run sets train.optimizer='adam'"):
        resolve({"train": {"recipe": {"train.optimizer": "sgd"}}})


@pytest.mark.parametrize("tune, problem", [
    ({"trials": 0}, "trials"),
    ({"seeds": [1]}, r"tuning seeds \[1\] are also test seeds"),
    ({"space": {"train.lr": {"loguniform": [-1, 1]}}}, "loguniform space needs low > 0"),
    ({"space": {"train.lr": {"uniform": [0, 1]}}}, "gives 0.0, outside the allowed values"),
    ({"space": {"train.momentum": {"uniform": [0, 0.5]}}}, "not a tuned shared setting"),
    ({"shared": ["train.batch_size"]}, "'train.batch_size' has no search space"),
])
def test_bad_tuning_input_is_one_line(tune, problem):
    with pytest.raises(UserError, match=problem):
        plan_workflow(tuned_config(**tune))


# ---- selection: validation only ------------------------------------------------------------------
def trial_study(root, val_scores: list[float], statuses: list[str] | None = None) -> dict:
    """A pair's spec over synthetic trial runs whose validation accuracy peaks at `val_scores`."""
    statuses = statuses or ["completed"] * len(val_scores)
    lrs = [0.001 * (i + 1) for i in range(len(val_scores))]
    configs = grid_configs({"train.lr": lrs, "partition.val_fraction": [0.2], "seed": [100], "method.name": ["fedavg"], "train.rounds": [6]})
    trials = []
    for i, (cfg, score, status) in enumerate(zip(configs, val_scores, statuses)):
        record = write_run(root, cfg, status, None if status == "completed" else 3)
        metrics = pd.read_parquet(record.parent / "metrics.parquet")
        val = (metrics["scope"] == "val") & (metrics["metric"] == "accuracy")
        metrics.loc[val, "value"] = score * np.linspace(0.5, 1.0, val.sum())  # the last round is the best
        metrics.to_parquet(record.parent / "metrics.parquet", index=False)
        record_metrics_sha256(record)
        trials.append({"trial": i, "values": {"train.lr": lrs[i]}, "runs": [record.parent.name]})
    return {"key": "s/digits/all/fedavg", "label": "fedavg", "results": str(root), "dims": {}, "trials": trials}


SETTINGS = resolve_stats({"selection": "best_val", "metric": "accuracy"})


def test_the_best_validation_trial_is_selected_and_failures_never_win(tmp_path):
    spec = trial_study(tmp_path, [0.6, 0.8, 0.9, 0.8], ["completed", "completed", "diverged", "completed"])
    chosen = select(spec, SETTINGS)
    assert chosen["selected"]["trial"] == 1 and chosen["selected"]["score"] == pytest.approx(0.8)
    assert chosen["trials"][2]["score"] is None and chosen["trials"][2]["status"].startswith("failed: diverged")
    assert not chosen["all_failed"]


def test_equal_scores_select_the_earliest_trial(tmp_path):
    assert select(trial_study(tmp_path, [0.7, 0.9, 0.9]), SETTINGS)["selected"]["trial"] == 1


def test_every_trial_failed_keeps_the_defaults(tmp_path):
    chosen = select(trial_study(tmp_path, [0.7, 0.9], ["failed", "diverged"]), SETTINGS)
    assert chosen["all_failed"] and chosen["selected"]["trial"] == 0


def test_the_test_set_never_chooses(tmp_path):
    """Permuting the test scores (the test labels' only trace in a run) changes no selection."""
    spec = trial_study(tmp_path, [0.6, 0.85, 0.7, 0.8])
    before = select(spec, SETTINGS)
    rng = np.random.default_rng(0)
    for trial in spec["trials"]:
        path = tmp_path / trial["runs"][0] / "metrics.parquet"
        metrics = pd.read_parquet(path)
        test = metrics["scope"].isin(["global", "local", "personal"])
        metrics.loc[test, "value"] = rng.permutation(metrics.loc[test, "value"].to_numpy())[::-1] * rng.uniform(0, 1)
        metrics.to_parquet(path, index=False)
        record_metrics_sha256(path.parent / "run.json")
    after = select(spec, SETTINGS)
    assert after["selected"] == before["selected"] and [t["score"] for t in after["trials"]] == [t["score"] for t in before["trials"]]


def test_slugs_are_file_names():
    assert slug("fedlsc (per=0.01)") == "fedlsc_per=0.01"
    assert slug("mdhfl (architectures=[\"a\",\"b\"])") == "mdhfl_architectures=_a_,_b"


def test_recipe_and_tuned_values_belong_to_the_treatment_not_the_setting(tmp_path):
    """Tuned test runs differ in lr (and mu) by method: still one setting, ranked as 'fedavg', 'fedprox'."""
    from bench.stats.collect import load_results

    for cfg in grid_configs({"method.name": ["fedavg", "fedprox"], "seed": [0, 1], "partition.val_fraction": [0.2]}):
        tuned = {"train.lr": 0.01 if cfg["method"]["name"] == "fedavg" else 0.2}
        if cfg["method"]["name"] == "fedprox":
            cfg["method"]["mu"] = tuned["method.mu"] = 0.05 + cfg["seed"]  # even a value per seed stays one treatment
        else:
            cfg["train"]["optimizer"], cfg["train"]["recipe"] = "sgd", {"train.optimizer": "sgd"}
        cfg["train"]["lr"], cfg["train"]["tuned"] = tuned["train.lr"], tuned
        write_run(tmp_path, resolve(cfg))
    runs = load_results(tmp_path, resolve_stats({}), progress=False).runs
    assert runs["setting"].nunique() == 1 and sorted(runs["label"].unique()) == ["fedavg", "fedprox"]


def test_fedrank_methods_shows_every_space_and_recipe_in_aligned_columns(capsys):
    from bench.cli import main

    assert main(["methods"]) == 0
    out = capsys.readouterr().out
    for cls in registry().values():
        for space in cls.search_space().values():
            assert f"search: {space.describe()}" in out
        if cls.recipe is not None:
            assert f"recipe (recipes: paper): {cls.recipe.describe()}" in out
    lines = out.splitlines()
    for cls in registry().values():
        for hp, field in cls.hparams().items():
            left = f"    {hp} = {field.default!r}"
            line = next(line for line in lines if line.startswith(left))
            text = line if len(left) < 32 else lines[lines.index(line) + 1]  # a long default: its help on the next line
            assert text[:32].strip() in ("", left.strip()) and text[32] != " ", (hp, text)
    assert "shared settings tuning searches" in out and "train.lr loguniform" in out


def test_a_study_named_like_a_tuned_studys_untuned_runs_is_refused():
    config = tuned_config()
    config["studies"]["tiny-untuned"] = {**config["studies"]["tiny"], "tune": None}
    del config["studies"]["tiny-untuned"]["tune"]
    with pytest.raises(UserError, match="studies.tiny-untuned': the tuned study tiny runs its untuned configurations under that name"):
        plan_workflow(prepare_workflow_config(config))
