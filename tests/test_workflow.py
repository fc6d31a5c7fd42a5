"""Workflow configs: study expansion, layering, dedup, report groups, DAG-build errors, the CLI,
and what Snakemake builds from them (dry runs, lint)."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pytest
import yaml

from bench.cli import main
from bench.config import fill_defaults
from bench.errors import UserError
from bench.methods import Method, hparam, register, registry
from bench.stats.settings import load_stats_settings
from bench.methods import _REGISTRY as METHODS
from bench.workflow import check_config, load_workflow_config, plan_workflow, workflow_schema
from conftest import REPO

SNAKEMAKE = [sys.executable, "-m", "snakemake"]


def plan(config: dict):
    check_config(config)
    return plan_workflow(fill_defaults(workflow_schema(), config))


def study(**fields) -> dict:
    return {"studies": {"s": {"datasets": ["synthetic"], **fields}}, "seeds": 2}


def methods_of(p) -> list[dict]:
    return [run.resolved["method"] for run in p.runs.values()]


def test_method_axes_expand_only_the_methods_that_declare_them():
    p = plan(study(methods="all", grid={"method.fedlsc.per": [0.0, 0.01]}, base={"data": {"public_fraction": 0.2}}))  # what the distillation methods need
    names = [name for name, cls in registry().items() if cls.in_all]  # `all` leaves out what needs a setting of its own
    assert len(p.runs) == (len(names) + 1) * 2  # fedlsc twice, every other method once, 2 seeds
    per = sorted(m["per"] for m in methods_of(p) if m["name"] == "fedlsc")
    assert per == [0.0, 0.0, 0.01, 0.01]
    assert all("per" not in m for m in methods_of(p) if m["name"] != "fedlsc")
    assert {r.resolved["seed"] for r in p.runs.values()} == {0, 1}


def test_layers_apply_in_order_and_method_options_only_where_declared():
    config = {
        "base": {"train": {"rounds": 5, "lr": 0.01}, "method": {"fedprox": {"mu": 0.5}, "fedlsc": {"mu": 0.25}}},
        "datasets": {"syn": {"data": {"name": "synthetic", "image_size": 8}, "train": {"rounds": 4}, "method": {"fedlsc": {"tau": 2.5}}}},
        "studies": {
            "s": {"datasets": ["syn"], "methods": ["fedavg", "fedprox", {"name": "fedlsc", "per": 0.2}],
                  "base": {"train": {"rounds": 3}}, "grid": {"train.local_epochs": [1, 2]}},
        },
        "seeds": [7],
    }
    runs = {(r.resolved["method"]["name"], r.resolved["train"]["local_epochs"]): r.resolved for r in plan(config).runs.values()}
    assert len(runs) == 6
    fedlsc = runs["fedlsc", 2]
    assert fedlsc["method"] == {"name": "fedlsc", "tau": 2.5, "mu": 0.25, "per": 0.2}  # dataset tau, base mu, entry per
    assert runs["fedprox", 1]["method"] == {"name": "fedprox", "mu": 0.5}
    assert runs["fedavg", 1]["method"] == {"name": "fedavg"}  # tau and mu are not FedAvg's
    assert fedlsc["train"]["rounds"] == 3 and fedlsc["train"]["lr"] == 0.01  # study base > dataset > base
    assert fedlsc["seed"] == 7 and fedlsc["data"]["name"] == "synthetic"


def test_a_grid_value_beats_a_dataset_setting():
    config = {"datasets": {"syn": {"data": {"name": "synthetic"}, "method": {"fedlsc": {"tau": 2.5}}}},
              "studies": {"tau": {"datasets": ["syn"], "methods": ["fedlsc"], "grid": {"method.fedlsc.tau": [0.1, 1.0]}}}, "seeds": 1}
    assert sorted(m["tau"] for m in methods_of(plan(config))) == [0.1, 1.0]


@dataclass(kw_only=True)
class SharesTau(Method):
    """Test method: declares `tau` like FedLSC, and a hyper-parameter of its own."""

    name = "sharestau_test"
    tau: float = hparam(1.0, "a temperature", exclusiveMinimum=0)
    only_mine: int = hparam(3, "declared by no other method", minimum=0)


@pytest.fixture
def shares_tau():
    register(SharesTau)
    yield
    METHODS.pop(SharesTau.name, None)


def test_a_scoped_setting_reaches_only_its_method(shares_tau):
    config = {"datasets": {"syn": {"data": {"name": "synthetic"}, "method": {"fedlsc": {"tau": 2.5}, "only_mine": 7}}},
              "studies": {"s": {"datasets": ["syn"], "methods": ["fedlsc", "sharestau_test"], "grid": {"method.sharestau_test.tau": [0.5, 4.0]}}},
              "seeds": 1}
    by_method = {}
    for m in methods_of(plan(config)):
        by_method.setdefault(m["name"], []).append(m)
    assert [m["tau"] for m in by_method["fedlsc"]] == [2.5]  # not swept by the other method's axis
    assert sorted(m["tau"] for m in by_method["sharestau_test"]) == [0.5, 4.0]  # FedLSC's tau never reaches it
    assert {m["only_mine"] for m in by_method["sharestau_test"]} == {7}  # unscoped: the one method declaring it


@pytest.mark.parametrize(
    "where, config",
    [
        ("datasets.syn.method.tau", {"datasets": {"syn": {"data": {"name": "synthetic"}, "method": {"tau": 2.5}}}, "studies": {"s": {"datasets": ["syn"]}}}),
        ("base.method.tau", {"base": {"method": {"tau": 2.5}}, "studies": {"s": {"datasets": ["synthetic"]}}}),
        ("studies.s.grid.method.tau", {"studies": {"s": {"datasets": ["synthetic"], "grid": {"method.tau": [0.1]}}}}),
    ],
)
def test_an_unscoped_setting_several_methods_declare_is_an_error_saying_how_to_scope(shares_tau, where, config):
    with pytest.raises(UserError, match=rf"config key '{re.escape(where)}': 'tau' is a hyper-parameter of several methods .*fedlsc.*sharestau_test.*scope it") as error:
        plan(config)
    owners = [name for name, cls in registry().items() if "tau" in cls.hparams()]
    assert any(f"method.{m}.tau" in str(error.value) or f"{{{m}: {{tau:" in str(error.value) for m in owners)


def test_a_scoped_setting_must_be_declared_by_its_method():
    with pytest.raises(UserError, match=r"config key 'base.method.fedavg.tau': method fedavg has no hyper-parameter 'tau'"):
        plan({"base": {"method": {"fedavg": {"tau": 1.0}}}, "studies": {"s": {"datasets": ["synthetic"]}}})


def test_runs_shared_by_studies_run_once_and_appear_in_each_in_the_manifest():
    config = {
        "seeds": 2,
        "studies": {
            "main": {"datasets": ["synthetic"], "methods": ["fedavg", "fedprox"]},
            "beta": {"datasets": ["synthetic"], "methods": ["fedavg", "fedprox"], "grid": {"partition.beta": [0.1, 0.5]}},
        },
    }
    p = plan(config)
    assert len(p.runs) == 8 and len(p.manifest()) == 12  # beta = 0.5 (the default) is the main comparison
    assert set(p.studies["main"]) < set(p.studies["beta"])
    assert sorted(p.groups) == ["beta/synthetic/partition.beta=0.1", "beta/synthetic/partition.beta=0.5", "main/synthetic/all"]
    assert p.groups["beta/synthetic/partition.beta=0.5"].runs.keys() == p.groups["main/synthetic/all"].runs.keys()


def test_groups_carry_variant_labels():
    config = {"seeds": 3, "studies": {"s": {"datasets": ["synthetic"], "description": "A test study.", "methods": ["fedavg", "fedlsc"],
                                           "grid": {"method.fedlsc.tau": [0.5, 1.0], "partition.clients": [2]}}}}
    p = plan(config)
    (group,) = p.groups.values()
    assert group.setting == "partition.clients=2"
    assert sorted(set(group.runs.values())) == ["fedavg", "fedlsc (tau=0.5)", "fedlsc (tau=1)"]
    assert len(group.runs) == 9  # 3 variants x 3 seeds


def test_run_studies_selects_studies():
    config = {**study(methods=["fedavg"]), "run_studies": ["t"]}
    config["studies"]["t"] = {"datasets": ["synthetic"], "methods": ["fedprox"]}
    assert list(plan(config).studies) == ["t"]


def test_methods_all_takes_every_registered_method_including_a_new_one():
    @register
    @dataclass(kw_only=True)
    class FedNew(Method):
        """A method added after the workflow was written."""

        name = "fednew_test"
        beta: float = hparam(0.9, "server momentum", minimum=0)

    try:
        p = plan(study(methods="all", grid={"method.fednew_test.beta": [0.5, 0.9]}, base={"data": {"public_fraction": 0.2}}))
        new = [m for m in methods_of(p) if m["name"] == "fednew_test"]
        assert sorted(m["beta"] for m in new) == [0.5, 0.5, 0.9, 0.9]
    finally:
        del METHODS["fednew_test"]


@pytest.mark.parametrize(
    "config, message",
    [
        ({"studies": {}}, r"config key 'studies'"),
        ({"studies": {"s": {"methods": ["fedavg"]}}}, r"config key 'studies.s'.*datasets"),
        (study(grdi={}), r"config key 'studies.s'.*grdi"),
        (study(methods=["fedavg", "fedsgd"]), r"config key 'studies.s.methods': unknown method 'fedsgd'"),
        (study(methods=[]), r"config key 'studies.s.methods'"),
        ({"studies": {"s": {"datasets": ["nope"]}}}, r"config key 'studies.s.datasets': unknown dataset 'nope'"),
        ({"studies": {"s": {"datasets": []}}}, r"config key 'studies.s.datasets'"),
        ({**study(), "run_studies": ["s", "typo"]}, r"config key 'run_studies': unknown study 'typo'"),
        (study(grid={"partition.beta": []}), r"config key 'studies.s.grid.partition.beta'"),
        (study(methods=["fedlsc"], grid={"method.fedlsc.tau": [0.5, 0.0]}), r"studies.s \(synthetic, fedlsc \(tau=0\)\): config key 'method.tau'"),
        (study(methods=["fedavg"], grid={"partition.beta": [0.5, -1]}), r"studies.s .*partition.beta=-1.*config key 'partition.beta'"),
        (study(methods=["fedavg"], grid={"method.fedlsc.tau": [0.5]}), r"'studies.s.grid.method.fedlsc.tau': no method of this study \(fedavg\)"),
        (study(methods=[{"name": "fedlsc", "per": 0}], grid={"method.fedlsc.per": [0.1]}), r"'studies.s.grid.method.fedlsc.per': the method entry fedlsc also fixes per"),
        (study(grid={"method.fedlsc.tau.x": [0.1]}), r"'studies.s.grid.method.fedlsc.tau.x': write method.<method>.<hyper-parameter>"),
        (study(grid={"seed": [1, 2]}), r"'studies.s.grid.seed': set it with studies.s.seeds"),
        (study(grid={"data.name": ["digits"]}), r"'studies.s.grid.data.name': set it with studies.s.datasets"),
        ({**study(), "base": {"method": {"name": "fedavg"}}}, r"config key 'base.method.name': choose methods with studies"),
        ({**study(), "datasets": {"synthetic": {"method": {"tua": 1.0}}}}, r"config key 'datasets.synthetic.method.tua': no method has"),
        ({**study(), "base": {"train": {"rouds": 3}}}, r"studies.s .*config key 'train'.*rouds"),
        ({"datasets": {"ham": {"data": {"name": "ham10000", "root": "/nonexistent/ham"}}}, "studies": {"s": {"datasets": ["ham"], "methods": ["fedavg"]}}},
         r"1 input\(s\) missing: config key 'data.root': folder /nonexistent/ham does not exist.*`fedrank plan CONFIG` lists them"),
        ({**study(), "seeds": 0}, r"config key 'seeds'"),
        ({**study(), "stats": {"targets": {"synthetic": 0.5}}}, r"config key 'stats.targets.synthetic': 0.5 is not of type 'object'"),
        ({"studies": {"tuning": study()["studies"]["s"]}}, r"config key 'studies'.*tables, figures, stats, logs and tuning"),
    ],
)
def test_bad_workflow_config_is_one_line_naming_the_key(config, message):
    with pytest.raises(UserError, match=message) as error:
        plan(config)
    assert "\n" not in str(error.value)


def write_config(tmp_path, config: dict) -> str:
    path = tmp_path / "workflow.yaml"
    path.write_text(yaml.safe_dump(config))
    return str(path)


def test_plan_cli_writes_the_manifest_and_stats_and_prints_run_configs(tmp_path, capsys):
    config = {**study(methods=["fedavg", "fedprox"]), "stats": {"targets": {"synthetic": {"value": 0.5}}}}
    path = write_config(tmp_path, config)
    manifest, stats = tmp_path / "studies.csv", tmp_path / "stats.yaml"
    assert main(["plan", path, "--write-manifest", str(manifest), "--write-stats", str(stats)]) == 0
    assert "4 distinct runs (0 shared between studies)" in capsys.readouterr().out
    rows = pd.read_csv(manifest)
    assert list(rows.columns) == ["study", "run_id"] and len(rows) == 4 and set(rows["study"]) == {"s"}
    assert yaml.safe_load(stats.read_text()) == {"stats": {"targets": {"synthetic": {"value": 0.5}}}}
    assert load_stats_settings(stats)["targets"]["synthetic"] == {"metric": "accuracy", "value": 0.5}  # what --stats-config reads
    assert main(["plan", path, "--runs"]) == 0
    first = capsys.readouterr().out.split()[0]
    assert main(["plan", path, "--config-of", first]) == 0
    assert json.loads(capsys.readouterr().out)["method"]["name"] in {"fedavg", "fedprox"}
    assert main(["plan", path, "--config-of", "nope"]) == 2


def test_status_cli_counts_runs_by_state_and_lists_failed_ones(tmp_path, capsys):
    results = tmp_path / "runs"
    path = write_config(tmp_path, {**study(methods=["fedavg"]), "results": str(results)})
    ids = list(plan(yaml.safe_load(open(path))).runs)
    (results / ids[0]).mkdir(parents=True)
    (results / ids[0] / "run.json").write_text(json.dumps({"status": "failed"}))
    (results / ids[1]).mkdir()
    (results / ids[1] / "checkpoint.pt").write_bytes(b"")
    assert main(["status", path]) == 0
    out = capsys.readouterr().out
    assert re.search(r"^s\s+0\s+0\s+1\s+1\s+0$", out, re.M), out
    assert main(["status", path, "--failed"]) == 0
    assert capsys.readouterr().out.strip() == str(results / ids[0] / "run.json")


def dry_run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([*SNAKEMAKE, "-n", "--forceall", "--cores", "1", "--quiet", "rules", *args], cwd=REPO, capture_output=True, text=True)


def job_counts(out: str) -> dict[str, int]:
    return {rule: int(n) for rule, n in re.findall(r"^(\w+)\s+(\d+)$", out, re.M)}


def demo_plan():
    return plan_workflow(load_workflow_config(REPO / "configs" / "default.yaml"))


def test_demo_dry_run_plans_the_demo_runs_and_a_configfile_replaces_the_demo(tmp_path):
    demo = demo_plan()
    proc = dry_run()
    assert proc.returncode == 0, proc.stderr
    runs, groups = len(demo.runs), len(demo.groups)
    assert job_counts(proc.stdout) == {"manifest": 1, "train": runs, "statistics": 1, "report": groups, "all": 1, "total": runs + groups + 3}
    other = write_config(tmp_path, study(methods=["fedavg"]))
    proc = dry_run("--configfile", other)
    assert proc.returncode == 0, proc.stderr
    assert job_counts(proc.stdout)["train"] == 2  # not 2 + the demo's runs


def test_the_demo_stays_small_whatever_methods_are_registered():
    """The demo lists its methods, so a new method module does not make it longer."""
    register(SharesTau)
    try:
        assert len(demo_plan().runs) == len(load_workflow_config(REPO / "configs" / "default.yaml")["studies"]["demo"]["methods"]) * 3 + 3
    finally:
        METHODS.pop(SharesTau.name, None)


def test_dag_build_fails_before_any_job_with_the_key(tmp_path):
    bad = write_config(tmp_path, study(methods=["fedlsc"], grid={"method.fedlsc.tau": [0.2, -1.0]}))
    proc = dry_run("--configfile", bad)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert "studies.s (synthetic, fedlsc (tau=-1)): config key 'method.tau'" in out
    assert "Traceback" not in out and not job_counts(out)


def test_dag_build_refuses_a_key_given_twice_in_the_configfile(tmp_path):
    # Snakemake's own YAML reader would keep the last `seeds` silently
    path = tmp_path / "workflow.yaml"
    path.write_text("seeds: 1\nstudies: {s: {datasets: [synthetic]}}\nseeds: 2\n")
    proc = dry_run("--configfile", str(path))
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0 and "line 3 is not valid YAML: fix it (key 'seeds' is given twice in one mapping: keep one)" in out
    assert "Traceback" not in out and not job_counts(out)


def shell_commands(out: str) -> list[list[str]]:
    """The shell commands a dry run prints (--printshellcmds), split into words as the shell does."""
    return [shlex.split(line.split("Shell command: ", 1)[1]) for line in out.splitlines() if "Shell command: fedrank " in line]


def test_folders_with_spaces_reach_every_shell_command_as_one_word(tmp_path):
    results, reports = tmp_path / "my runs", tmp_path / "my reports"
    config = write_config(tmp_path, {**study(methods=["fedavg"]), "results": str(results), "reports": str(reports)})
    proc = subprocess.run([*SNAKEMAKE, "-n", "--forceall", "--cores", "1", "--printshellcmds", "--configfile", config], cwd=REPO, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    commands = {tuple(words[:2]): words for words in shell_commands(proc.stdout)}
    assert set(commands) == {("fedrank", "run"), ("fedrank", "plan"), ("fedrank", "report")}
    assert str(tmp_path / "my") not in [word for words in shell_commands(proc.stdout) for word in words]
    train, manifest = commands["fedrank", "run"], commands["fedrank", "plan"]
    run_dir = train[train.index("--out") + 1]
    assert Path(run_dir).parent == results and train[train.index("2>") + 1] == f"{run_dir}/train.log"
    assert manifest[manifest.index("--write-manifest") + 1] == str(reports / "studies.csv")
    assert manifest[manifest.index(">") + 1] == str(reports / "logs" / "manifest.log")


def test_a_config_value_never_runs_as_a_shell_command(tmp_path):
    pwned = tmp_path / "pwned"
    config = {**study(methods=["fedavg"], seeds=1), "base": {"train": {"rounds": 1}}, "results": f"{tmp_path}/runs;touch {pwned};", "reports": str(tmp_path / "reports")}
    proc = subprocess.run([*SNAKEMAKE, "--cores", "1", "--configfile", write_config(tmp_path, config)], cwd=REPO, capture_output=True, text=True)
    assert proc.returncode != 0 and "config key 'results'" in proc.stdout + proc.stderr
    assert not pwned.exists() and [p.name for p in tmp_path.iterdir()] == ["workflow.yaml"]  # refused before any job


def test_snakemake_lint_is_clean():
    proc = subprocess.run([*SNAKEMAKE, "--lint"], cwd=REPO, capture_output=True, text=True)
    assert proc.returncode == 0 and "Congratulations" in proc.stdout + proc.stderr, proc.stdout + proc.stderr


def test_rule_files_are_snakefmt_clean():
    snakefmt = Path(sys.executable).parent / "snakefmt"  # the test extra pins it
    proc = subprocess.run([str(snakefmt), "--check", "--diff", "Snakefile", "workflows"], cwd=REPO, capture_output=True, text=True)
    assert proc.returncode == 0, f"run: snakefmt Snakefile workflows\n{proc.stdout[-3000:]}{proc.stderr[-2000:]}"


def test_slurm_profile_resolves_from_the_repo_root_with_account_and_partition_from_the_environment():
    env = {"FEDRANK_SLURM_ACCOUNT": "proj42", "FEDRANK_SLURM_PARTITION": "gpu"}
    proc = subprocess.run([*SNAKEMAKE, "-n", "--forceall", "--profile", "slurm", "--executor", "dryrun", "--printshellcmds"],
                          cwd=REPO, capture_output=True, text=True, env={**os.environ, **env})
    assert proc.returncode == 0, proc.stderr
    resources = re.findall(r"rule train:.*?resources: ([^\n]+)", proc.stdout, re.S)
    assert len(resources) == len(demo_plan().runs)
    for wanted in ("mem_mb=32000", "runtime=720", "slurm_account=proj42", "slurm_partition=gpu", "gres=gpu:1", "cpus_per_task=8", "attempt=1/3"):
        assert wanted in resources[0], resources[0]
    assert "--attempt 1/3" in proc.stdout and "Group job" not in proc.stdout


def test_the_slurm_profile_packs_runs_per_job_from_the_environment_each_with_its_share():
    env = {"FEDRANK_SLURM_RUNS_PER_JOB": "4", "FEDRANK_SLURM_GPU_MODEL": "h100"}
    proc = subprocess.run([*SNAKEMAKE, "-n", "--forceall", "--profile", "slurm", "--executor", "dryrun", "--cores", "8"],
                          cwd=REPO, capture_output=True, text=True, env={**os.environ, **env})
    assert proc.returncode == 0, proc.stderr
    runs = len(demo_plan().runs)
    assert proc.stdout.count("Group job train") == -(-runs // 4)
    resources = re.findall(r"rule train:.*?resources: ([^\n]+)", proc.stdout, re.S)
    assert len(resources) == runs
    for wanted in ("mem_mb=8000", "cpus_per_task=2", "gres=gpu:h100:1", "runtime=720"):
        assert wanted in resources[0], resources[0]


def test_a_slurm_group_job_runs_its_jobs_with_the_local_executor_and_nothing_else_does():
    from bench.workflow import concurrent_group_job

    def group(attempt: str, executor: str = "slurm-jobstep") -> list[str]:
        return ["snakemake", "--target-jobs", "train:run=a", "train:run=b", "--local-groupid", "7", "--cores", "8", "--force",
                "--attempt", attempt, "--executor", executor, *(["--jobs", "1"] if executor != "local" else []), "--mode", "remote"]

    finished = {"a"}.__contains__
    assert concurrent_group_job(group("1"), finished) == group("1", "local")
    # a retried group job leaves out its runs that finished before it was killed, or has nothing to do
    assert concurrent_group_job(group("2"), finished) == [arg for arg in group("2", "local") if arg != "train:run=a"]
    assert concurrent_group_job(group("3"), {"a", "b"}.__contains__) == []
    single = [arg for arg in group("1") if arg not in ("--local-groupid", "7")]
    assert concurrent_group_job(single, finished) is None  # one run per job: as the plugin runs it
    assert concurrent_group_job(["snakemake", "--cores", "all", "--profile", "slurm"], finished) is None


def load_bench_dag():
    spec = importlib.util.spec_from_file_location("bench_dag", REPO / "benchmarks" / "bench_dag.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


PAPER_DATASETS = ("ham10000", "isic2019", "msid", "modd")


@pytest.fixture
def paper_environment(tmp_path, monkeypatch):
    """configs/paper.yaml's data roots and weights file, stood in where missing (a plan only checks
    that they exist), and stand-in loaders for its datasets not registered yet."""
    from bench.data import DATASETS, import_loaders
    from bench.data.base import DatasetSpec

    import_loaders()
    for name in PAPER_DATASETS:
        if name not in DATASETS:
            monkeypatch.setitem(DATASETS, name, DatasetSpec(name, None, 224, True, "stand-in"))
    monkeypatch.setattr(os, "environ", os.environ.copy())
    load_bench_dag().stand_ins(REPO / "configs" / "paper.yaml", tmp_path)
    return tmp_path


def test_paper_config_expands_every_experiment_of_the_paper(paper_environment):
    config = load_workflow_config(REPO / "configs" / "paper.yaml")
    p = plan_workflow(config)
    methods = len(config["studies"]["main"]["methods"])  # the paper's method set
    variants = methods + 1  # FedLSC at two Per values
    seeds = 8
    assert {s: len(ids) for s, ids in p.studies.items()} == {
        "main": 2 * variants * seeds,
        "beta": 2 * 4 * methods * seeds,
        "clients": 2 * 3 * methods * seeds,
        "local_epochs": 2 * 4 * methods * seeds,
        "tau": 2 * 7 * seeds,
        "per": 2 * 4 * seeds,
        "cross_disease": 2 * variants * seeds,
    }
    shared = 3 * 2 * methods * seeds + 2 * seeds + 2 * 2 * seeds  # sweeps at the main setting, tau and Per at their defaults
    assert len(p.runs) == len(p.manifest()) - shared
    resolved = [r.resolved for r in p.runs.values()]
    assert {r["train"]["rounds"] for r in resolved} == {50} and {r["model"]["name"] for r in resolved} == {"res2net50_sa"}
    assert {r["data"]["image_size"] for r in resolved} == {224}
    main_fedlsc = {(r["data"]["name"], r["method"]["tau"], r["method"]["per"]) for r in (p.runs[i].resolved for i in p.studies["main"])
                   if r["method"]["name"] == "fedlsc"}
    assert main_fedlsc == {("ham10000", 0.2, 0.0), ("ham10000", 0.2, 0.01), ("isic2019", 2.5, 0.0), ("isic2019", 2.5, 0.01)}
    assert {p.runs[i].resolved["method"]["tau"] for i in p.studies["tau"]} == {0.1, 0.2, 0.5, 1.0, 1.5, 2.0, 2.5}
    assert {p.runs[i].resolved["data"]["name"] for i in p.studies["cross_disease"]} == {"msid", "modd"}


@pytest.mark.slow
def test_status_of_the_paper_config_reuses_its_stored_plan(paper_environment):
    """The second `fedrank status` reads the plan the first stored instead of expanding it again
    (its time, about 0.3 s against seconds, is measured by benchmarks/bench_dag.py, not asserted)."""
    env = {**os.environ, "FEDRANK_CACHE_DIR": str(paper_environment / "cache"), "PYTHONPATH": str(REPO)}
    command = [sys.executable, "-m", "bench", "status", "configs/paper.yaml"]
    first = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True)  # expands and stores the plan
    stored = {p: p.stat().st_mtime_ns for p in (paper_environment / "cache").rglob("*") if p.is_file()}
    second = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True)
    assert first.returncode == second.returncode == 0 and first.stdout == second.stdout, first.stderr + second.stderr
    assert stored and {p: p.stat().st_mtime_ns for p in (paper_environment / "cache").rglob("*") if p.is_file()} == stored


@pytest.mark.slow
def test_paper_dry_run_benchmark(paper_environment):
    from bench.data import DATASETS

    missing = [n for n in PAPER_DATASETS if DATASETS[n].load is None]
    if missing:
        pytest.skip(f"datasets {', '.join(missing)} are not registered yet (the datasets issue adds them)")
    proc = subprocess.run([sys.executable, "benchmarks/bench_dag.py", "--config", "configs/paper.yaml"], cwd=REPO, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    jobs = int(re.search(r"^jobs: (\d+)", proc.stdout, re.M).group(1))
    seconds = float(re.search(r"median ([\d.]+)", proc.stdout).group(1))
    assert jobs > 1000 and seconds > 0, proc.stdout  # the time is the benchmark's to report, not a test's to assert


def run_job(tmp_path, attempt: str | None, **overrides) -> int:
    cfg = {"data": {"name": "synthetic"}, "model": {"name": "small_cnn", "widths": [8, 16]}, "train": {"rounds": 2}, **overrides}
    return main(["run", "--config-json", json.dumps(cfg), "--out", str(tmp_path / "run"), "--quiet", *(["--attempt", attempt] if attempt else [])])


def test_a_job_records_bad_input_found_at_run_time_as_a_failed_run_at_once(tmp_path):
    tight = {"partition": {"min_samples": 200}}
    assert run_job(tmp_path, None, **tight) == 2 and not (tmp_path / "run").exists()  # by hand: an error, nothing written
    assert run_job(tmp_path, "1/3", **tight) == 0  # in the workflow: recorded, no retry
    record = json.loads((tmp_path / "run" / "run.json").read_text())
    assert record["status"] == "failed" and "min_samples" in record["error"] and record["rounds_completed"] == 0
    assert pd.read_parquet(tmp_path / "run" / "metrics.parquet").empty and (tmp_path / "run" / "diagnostics.parquet").is_file()
    assert run_job(tmp_path, "1-3") == 2


def test_a_job_error_fails_the_attempt_until_the_last_which_records_it(tmp_path, monkeypatch):
    import bench.engine.run as engine_run

    def crash(exp, progress, *beat):
        raise RuntimeError("simulated CUDA error")

    monkeypatch.setattr(engine_run, "play_round", crash)
    with pytest.raises(RuntimeError, match="simulated CUDA error"):
        run_job(tmp_path, "1/2")  # fails the job: Snakemake retries it
    assert run_job(tmp_path, "2/2") == 0
    record = json.loads((tmp_path / "run" / "run.json").read_text())
    assert record["status"] == "failed" and "simulated CUDA error" in record["error"] and "environment" in record  # the engine's own record


def test_a_finished_workflow_ends_with_where_the_results_are_and_the_report_command():
    from bench.workflow import closing_lines

    demo = closing_lines(plan_workflow(load_workflow_config(REPO / "configs/default.yaml")), ["configs/default.yaml"], "configs/default.yaml")
    assert demo[0].startswith("Results: reports/results.md") and demo[-1] == "HTML report: snakemake --report reports/report.html"
    tuned = closing_lines(plan_workflow(load_workflow_config(REPO / "configs/test/tune.yaml")), ["configs/test/my tune.yaml"], "configs/default.yaml")
    assert any(line.startswith("Tuning: ") for line in tuned)
    assert tuned[-1].endswith("report.html --configfile 'configs/test/my tune.yaml'")  # quoted for the shell


def test_a_plan_without_the_data_lists_every_missing_input_and_snakemake_refuses_to_start(tmp_path, capsys):
    roots = {name: {"data": {"name": name, "root": str(tmp_path / name)}} for name in ("ham10000", "msid", "modd")}
    config = {"datasets": roots, "studies": {"s": {"datasets": list(roots), "methods": ["fedavg", "fedprox"]}}, "seeds": 2,
              "results": str(tmp_path / "runs"), "reports": str(tmp_path / "reports")}
    assert main(["plan", write_config(tmp_path, config)]) == 0
    out = capsys.readouterr().out
    checklist = [line for line in out.splitlines() if line.startswith("  [ ] ")]
    assert len(checklist) == len(roots) and all(str(tmp_path / name) in out for name in roots)
    assert re.search(r"^s +12 +3 +\? ", out, re.M)  # modd has no published size: its hours are unknown, not 0
    assert "at least " in out  # ham10000 and msid are estimated from their published sizes
    with pytest.raises(UserError, match=r"^3 input\(s\) missing: .*ham10000.*msid.*modd"):
        plan(config)
