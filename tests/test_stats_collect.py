"""Collecting run directories: the engine's format, statuses, studies, treatments, settings."""

from __future__ import annotations

import json

import pandas as pd
import pyarrow.parquet as pq
import pytest

from bench.engine.run import execute
from bench.errors import UserError
from bench.methods import registry
from bench.stats.collect import load_results, method_defaults, paper_entry, read_studies, treatment_labels
from bench.stats.settings import load_stats_settings, resolve_stats
from bench.stats.synthetic import grid_configs, write_run, write_study
from bench.stats.tidy import write_tidy
from conftest import tiny_config

SETTINGS = resolve_stats({})


def key_tree(value):
    """The nested key structure of a JSON value (what the statistics code relies on)."""
    if isinstance(value, dict):
        return {k: key_tree(v) for k, v in value.items()}
    if isinstance(value, list) and value and isinstance(value[0], dict):
        return [key_tree(value[0])]
    return None


@pytest.mark.slow
def test_synthetic_runs_have_the_engine_format(tmp_path):
    protocol = {"partition.scheme": "natural", "partition.holdout": "east", "partition.val_fraction": 0.2, "eval.new_client_steps": 3}
    cfg = tiny_config(method="fedlsc", method__per=0.2, train__rounds=2, **{k.replace(".", "__"): v for k, v in protocol.items()})
    execute(cfg, tmp_path / "real", show_progress=False)
    fake = write_run(tmp_path / "fake", grid_configs({"method": [{"name": "fedlsc", "per": 0.2}], "train.rounds": [2], **{k: [v] for k, v in protocol.items()}})[0])
    real_record, fake_record = json.loads((tmp_path / "real" / "run.json").read_text()), json.loads(fake.read_text())
    assert key_tree(fake_record) == key_tree(real_record)
    for name in ("metrics.parquet", "diagnostics.parquet"):
        assert pq.read_schema(fake.parent / name).remove_metadata() == pq.read_schema(tmp_path / "real" / name).remove_metadata()
    real, made = pd.read_parquet(tmp_path / "real" / "metrics.parquet"), pd.read_parquet(fake.parent / "metrics.parquet")
    per_class = "~metric.str.contains('/')"  # recall/<class>, specificity/<class>: the class names differ
    assert set(map(tuple, real[["scope", "metric"]].drop_duplicates().query(per_class).to_numpy())) == \
        set(map(tuple, made[["scope", "metric"]].drop_duplicates().query(per_class).to_numpy()))
    real_diag, made_diag = (pd.read_parquet(p / "diagnostics.parquet") for p in (tmp_path / "real", fake.parent))
    assert set(real_diag["name"]) == set(made_diag["name"])


def test_every_status_is_kept_and_broken_folders_are_reported(tmp_path):
    runs = tmp_path / "runs"
    write_study(runs, {"method": ["fedavg", "fedprox"], "seed": [0, 1], "train.rounds": [4]})
    failed = write_run(runs, grid_configs({"method": ["fedavg"], "seed": [2], "train.rounds": [4]})[0], "failed", stop=0)
    write_run(runs, grid_configs({"method": ["fedprox"], "seed": [2], "train.rounds": [4]})[0], "diverged", stop=3)
    (runs / "running").mkdir()
    (runs / "half").mkdir()
    (runs / "half" / "run.json").write_text('{"run_id": "x", "sta')
    (runs / "foreign").mkdir()
    (runs / "foreign" / "run.json").write_text('{"hello": 1}')
    (runs / "no_method").mkdir()
    (runs / "no_method" / "run.json").write_text('{"run_id": "y", "status": "completed", "seed": 0, "headline_scope": "global", "config": {"data": {"name": "d"}}}')
    results = load_results(runs, SETTINGS, progress=False)
    assert results.runs["status"].value_counts().to_dict() == {"completed": 4, "failed": 1, "diverged": 1}
    assert len(results.problems) == 4
    assert any("running" in p and "no run.json" in p for p in results.problems)
    assert any("half" in p and "unreadable" in p for p in results.problems)
    assert any("foreign" in p and "not a fedrank run record" in p for p in results.problems)
    assert any("no_method" in p and "no config.method.name" in p for p in results.problems)
    rows = write_tidy(tmp_path / "tidy.parquet", results)
    tidy = pd.read_parquet(tmp_path / "tidy.parquet")
    assert len(tidy) == rows and tidy["run_id"].nunique() == 6
    empty = tidy[tidy["run_id"] == failed.parent.name]
    assert len(empty) == 1 and empty["status"].item() == "failed" and empty[["round", "scope", "accuracy"]].isna().all(axis=None)  # no evaluation, still shown
    assert {"partition.beta", "method.name", "train.rounds", "seed", "setting", "method", "round", "scope", "accuracy", "recall/c0", "bytes"} <= set(tidy.columns)
    assert set(tidy["scope"].dropna()) == {"global", "local", "comm"}


def test_run_json_files_given_explicitly(tmp_path):
    paths = write_study(tmp_path, {"method": ["fedavg"], "seed": [0, 1], "train.rounds": [3]})
    results = load_results(paths[:1], SETTINGS, progress=False)
    assert results.runs["run_id"].tolist() == [paths[0].parent.name]


def test_study_manifest_membership_and_missing_runs(tmp_path):
    paths = write_study(tmp_path / "runs", {"method": ["fedavg", "fedprox"], "seed": [0], "train.rounds": [3]})
    ids = [p.parent.name for p in paths]
    manifest = tmp_path / "studies.csv"
    manifest.write_text(f"study,run_id\nmain,{ids[0]}\nmain,{ids[1]}\nablation,{ids[0]}\nablation,never-run-s0-0000\n")
    results = load_results(tmp_path / "runs", SETTINGS, manifest, progress=False)
    assert sorted(map(tuple, results.runs[["study", "run_id"]].to_numpy())) == sorted([("main", ids[0]), ("main", ids[1]), ("ablation", ids[0])])
    assert results.missing.to_dict("records") == [{"study": "ablation", "run_id": "never-run-s0-0000"}]
    assert any("never-run-s0-0000" in p for p in results.problems)


@pytest.mark.parametrize("text, message", [
    ("run_id,study\nx,y\n", None), ("study\nmain\n", r"lacks column\(s\) run_id"), ("study,run_id\nmain,\n", "empty study or run_id")])
def test_bad_study_manifests_are_one_line_errors(tmp_path, text, message):
    path = tmp_path / "s.csv"
    path.write_text(text)
    if message is None:
        assert read_studies(path).to_dict("records") == [{"study": "y", "run_id": "x"}]
        return
    with pytest.raises(UserError, match=message):
        read_studies(path)
    with pytest.raises(UserError, match="not found"):
        read_studies(tmp_path / "absent.csv")


def test_treatment_labels_show_varying_and_non_default_hyper_parameters():
    defaults = method_defaults()
    base = {name: dict(values) for name, values in defaults.items()}
    configs = [base["fedavg"], {**base["fedlsc"], "per": 0.0}, base["fedlsc"], {**base["fedprox"], "mu": 0.01}]
    assert treatment_labels(configs, defaults) == ["fedavg", "fedlsc (per=0)", "fedlsc (per=0.01)", "fedprox (mu=0.01)"]


def test_paper_names_match_exact_method_configurations():
    defaults, names = method_defaults(), SETTINGS["paper_names"]
    fedlsc = defaults["fedlsc"]
    assert names[paper_entry({**fedlsc, "per": 0.0}, names, defaults)]["name"] == "FedLSC Per=0%"
    assert names[paper_entry(fedlsc, names, defaults)]["name"] == "FedLSC Per=1%"
    assert paper_entry({**fedlsc, "tau": 0.5}, names, defaults) is None  # a tau variant keeps its own label
    assert paper_entry({"name": "unregistered", "x": 1}, [{"method": {"name": "unregistered"}, "name": "U"}], defaults) == 0
    # a list-valued hyper-parameter left at its default ([], a tuple in the class) matches a name that omits it
    feddf = [{"method": {"name": "feddf"}, "name": "FedDF"}]
    assert paper_entry({**defaults["feddf"], "architectures": []}, feddf, defaults) == 0
    assert paper_entry({**defaults["feddf"], "architectures": ["resnet10"]}, feddf, defaults) is None


def test_settings_are_what_varies_besides_method_and_seed(tmp_path):
    write_study(tmp_path, {"data.name": ["ham10000", "isic2019"], "partition.beta": [0.1, 0.5], "method": ["fedavg", {"name": "fedlsc", "tau": 0.5}],
                           "seed": [0, 1], "train.rounds": [3]})
    results = load_results(tmp_path, SETTINGS, progress=False)
    assert results.setting_columns == ["data.name", "partition.beta"]
    assert sorted(results.runs["setting"].unique()) == ["ham10000, beta=0.1", "ham10000, beta=0.5", "isic2019, beta=0.1", "isic2019, beta=0.5"]
    assert results.methods == ["FedAvg", "fedlsc (tau=0.5)"]
    assert set(results.runs["block"]) == set(results.runs["setting"])


def test_a_setting_field_that_only_differs_between_datasets_is_left_out_of_setting_names(tmp_path):
    common = {"partition.beta": [0.1, 0.5], "method": ["fedavg"], "seed": [0], "train.rounds": [3]}
    write_study(tmp_path, {**common, "data.name": ["ham10000"]})
    write_study(tmp_path, {**common, "data.name": ["isic2019"], "data.sites_file": ["sites.csv"]})
    results = load_results(tmp_path, SETTINGS, progress=False)
    assert "data.sites_file" in results.setting_columns  # still a setting: runs are paired within it
    assert sorted(results.runs["setting"].unique()) == ["ham10000, beta=0.1", "ham10000, beta=0.5", "isic2019, beta=0.1", "isic2019, beta=0.5"]
    from bench.stats.analysis import analyse

    beta = analyse(results, SETTINGS).setting_sweep_rows["beta"]
    assert sorted(beta["context"].unique()) == ["ham10000", "isic2019"]  # what a beta sweep keeps fixed, in the same words


def test_a_partition_field_the_scheme_ignores_is_left_out_of_its_setting_names(tmp_path):
    """beta means nothing to a pathological partition: its runs' setting is not 'beta=0.5'; a
    grid that runs it at two (ignored) betas runs one experiment twice, which is an error."""
    common = {"data.name": ["ham10000"], "method": ["fedavg"], "seed": [0], "train.rounds": [3]}
    write_study(tmp_path, {**common, "partition.scheme": ["dirichlet"], "partition.beta": [0.1, 0.5]})
    write_study(tmp_path, {**common, "partition.scheme": ["pathological"], "partition.beta": [0.5], "partition.classes_per_client": [2, 3]})
    results = load_results(tmp_path, SETTINGS, progress=False)
    assert results.setting_columns == ["data.name", "partition.beta", "partition.classes_per_client", "partition.scheme"]
    assert sorted(results.runs["setting"].unique()) == [
        "ham10000, beta=0.1, scheme=dirichlet", "ham10000, beta=0.5, scheme=dirichlet",
        "ham10000, classes_per_client=2, scheme=pathological", "ham10000, classes_per_client=3, scheme=pathological"]
    write_study(tmp_path, {**common, "partition.scheme": ["pathological"], "partition.beta": [2.0], "partition.classes_per_client": [3]})
    with pytest.raises(UserError, match="'ham10000, classes_per_client=3, scheme=pathological' was run with several values of partition.beta"):
        load_results(tmp_path, SETTINGS, progress=False)


def test_one_name_for_a_per_dataset_tuned_configuration_but_never_two_in_one_setting(tmp_path):
    """FedLSC at tau 0.2 on HAM10000 and at its tuned 2.5 on ISIC2019 is one method; both tau in
    one setting under one name would be averaged together, so that is an error."""
    tuned = [{"method": {"name": "fedlsc", "per": 0.01, "tau": 2.5}, "name": "FedLSC Per=1%"}]
    settings = {**SETTINGS, "paper_names": SETTINGS["paper_names"] + tuned}
    common = {"method": ["fedavg"], "seed": [0, 1], "train.rounds": [3]}
    write_study(tmp_path, {**common, "data.name": ["ham10000"], "method": ["fedavg", {"name": "fedlsc", "per": 0.01}]})
    write_study(tmp_path, {**common, "data.name": ["isic2019"], "method": ["fedavg", {"name": "fedlsc", "per": 0.01, "tau": 2.5}]})
    runs = load_results(tmp_path, settings, progress=False).runs
    assert sorted(runs["method"].unique()) == ["FedAvg", "FedLSC Per=1%"]
    assert runs.groupby("method")["method_order"].nunique().eq(1).all()
    assert runs.groupby("method")["setting"].nunique().to_dict() == {"FedAvg": 2, "FedLSC Per=1%": 2}
    write_study(tmp_path, {**common, "data.name": ["ham10000"], "method": [{"name": "fedlsc", "per": 0.01, "tau": 2.5}]})
    with pytest.raises(UserError, match="names two method configurations 'FedLSC Per=1%'.*ham10000"):
        load_results(tmp_path, settings, progress=False)


def test_runs_made_before_later_keys_existed_share_the_setting_of_runs_made_after(tmp_path):
    from bench.config import HASHED_WHEN_SET

    paths = [write_run(tmp_path, cfg) for cfg in grid_configs({"method": ["fedavg", "fedprox"], "seed": [0, 1], "train.rounds": [3]})]
    for path in paths[:2]:  # as an older fedrank recorded them: without the keys added since
        record = json.loads(path.read_text())
        for section, keys in HASHED_WHEN_SET.items():
            for key in keys:
                del record["config"][section][key]
        path.write_text(json.dumps(record))
    results = load_results(tmp_path, SETTINGS, progress=False)
    assert results.runs["setting"].nunique() == 1 and not results.problems


def test_stats_settings_from_a_workflow_config_and_overrides(tmp_path):
    path = tmp_path / "study.yaml"
    path.write_text("base: {}\ngrid: {seed: [0]}\nstats:\n  metric: f1\n  targets: {msid: {value: 0.8}}\n")
    settings = load_stats_settings(path, ["alpha=0.01"])
    assert settings["metric"] == "f1" and settings["alpha"] == 0.01
    assert settings["targets"]["msid"] == {"metric": "accuracy", "value": 0.8}
    assert settings["targets"]["ham10000"]["value"] == 0.9  # the paper's targets stay
    (tmp_path / "bare.yaml").write_text("metric: balanced_accuracy\n")
    assert load_stats_settings(tmp_path / "bare.yaml")["metric"] == "balanced_accuracy"
    (tmp_path / "bad.yaml").write_text("stats: {alpah: 0.1}\n")
    with pytest.raises(UserError, match="stats"):
        load_stats_settings(tmp_path / "bad.yaml")
    with pytest.raises(UserError, match="stats.alpha"):
        resolve_stats({"alpha": 2})


def test_every_registered_method_has_a_label():
    defaults = method_defaults()
    assert set(defaults) == set(registry())
    assert treatment_labels(list(defaults.values()), defaults) == list(defaults)


def test_runs_of_an_older_config_schema_are_not_paired_with_newer_ones(tmp_path):
    paths = write_study(tmp_path, {"method": ["fedavg", "fedprox"], "seed": [0, 1], "train.rounds": [3]})
    for path in paths[:2]:  # fedavg's runs predate a field the newer runs have
        record = json.loads(path.read_text())
        del record["config"]["partition"]["min_samples"]
        path.write_text(json.dumps(record))
    results = load_results(tmp_path, SETTINGS, progress=False)
    assert results.setting_columns == ["data.name", "absent_config_keys"]
    assert sorted(results.runs["setting"].unique()) == ["digits", "digits, config without partition.min_samples"]


def test_a_corrupt_metrics_file_is_reported_and_its_run_kept(tmp_path):
    paths = write_study(tmp_path, {"method": ["fedavg"], "seed": [0, 1, 2], "train.rounds": [3]})
    (paths[1].parent / "metrics.parquet").write_bytes(b"PAR1 not really parquet")
    (paths[2].parent / "diagnostics.parquet").write_text("garbage")
    results = load_results(tmp_path, SETTINGS, progress=False)
    assert len(results.runs) == 3 and set(results.metrics["run_id"]) == {paths[0].parent.name, paths[2].parent.name}
    assert any(paths[1].parent.name in p and "metrics.parquet: unreadable" in p for p in results.problems)


def test_a_list_valued_hyper_parameter_is_swept_as_exact_text(tmp_path):
    """MDH-FL's client architectures (a list of model settings) against the configured model
    (an empty list): a sensitivity sweep whose two values read in full and group as text."""
    from bench.stats.analysis import analyse
    from bench.stats.tables import sensitivity_tables

    zoo = [{"name": "resnet10", "stem_stride": 2}, {"name": "shufflenet_v2", "widths": [8, 16]}]
    write_study(tmp_path, {"data.name": ["ham10000"], "seed": [0, 1], "train.rounds": [3],
                           "method": ["fedavg", {"name": "mdhfl", "architectures": zoo}, {"name": "mdhfl", "architectures": []}]})
    analysis = analyse(load_results(tmp_path, SETTINGS, progress=False), SETTINGS)
    rows = analysis.hparam_sweep_rows[("mdhfl", "architectures")]
    assert sorted(rows["value"].unique()) == ["[]", "[resnet10(stem_stride=2), shufflenet_v2(widths=[8, 16])]"]
    (table,) = sensitivity_tables(analysis)
    assert list(table.display.columns[1:]) == ["architectures=[]", "architectures=[resnet10(stem_stride=2), shufflenet_v2(widths=[8, 16])]"]
