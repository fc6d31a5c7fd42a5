"""Config validation and the CLI: one-line errors naming the key, exit code 2, nothing written."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from bench.cli import main
from bench.config import config_digest, expand_path, load_config, run_id
from bench.errors import UserError
from conftest import REPO, tiny_config


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["partition.beta=0"], "config key 'partition.beta'"),
        (["partition.beta=-0.5"], "config key 'partition.beta'"),
        (["method=fedlsc", "method.tau=0"], "config key 'method.tau'"),
        (["method=fedlsc", "method.per=1"], "config key 'method.per'"),
        (["method=fedlsc", "method.per=-0.01"], "config key 'method.per'"),
        (["method=nope"], "unknown method 'nope'"),
        (["data=nope"], "unknown dataset 'nope'"),
        (["model=nope"], "unknown model 'nope'"),
        (["model=timm:not_a_model"], "timm has no model 'not_a_model'"),
        (["model.depth=3"], "config key 'model.depth'"),
        (["train.lr_stepp=3"], "config key 'train'.*valid keys"),
        (["data=ham10000"], "config key 'data.root'"),
        (["data=ham10000", "data.root=/nonexistent/ham"], "/nonexistent/ham .*does not exist"),
        (["model.weights=/nonexistent/w.pth"], "never downloads"),
        (["seed"], "expected key=value"),
    ],
)
def test_bad_config_names_the_key(overrides, message):
    with pytest.raises(UserError, match=message):
        load_config(None, overrides)


def test_overrides_parse_yaml_and_replace_named_sections():
    cfg = load_config(None, ["method=fedprox", "method.mu=0.1", "partition.beta=0.3", "model.widths=[4, 8]"])
    assert cfg["method"] == {"name": "fedprox", "mu": 0.1}
    assert cfg["partition"]["beta"] == 0.3 and cfg["model"]["widths"] == [4, 8]
    assert load_config(None, ["method.name=fedlsc", "method.tau=2.5"])["method"]["tau"] == 2.5


def test_run_id_ignores_how_a_run_is_executed():
    a = tiny_config()
    b = tiny_config(runtime__threads=2, runtime__device="cpu", data__cache_dir="/elsewhere")
    assert run_id(a) == run_id(b)
    assert config_digest(a) != config_digest(tiny_config(seed=1))
    assert run_id(a).startswith("synthetic-fedavg-s0-")


def test_keys_added_later_change_the_run_id_only_when_set():
    from bench.config import HASHED_WHEN_SET, semantic_view

    a = tiny_config()
    for section, keys in HASHED_WHEN_SET.items():
        assert not set(keys) & set(semantic_view(a)[section])  # at the default: as if the key did not exist
    assert run_id(tiny_config(partition__val_fraction=0.2)) != run_id(a)
    assert run_id(tiny_config(eval__new_client_steps=3)) != run_id(a)


def test_paths_expand_environment_variables(monkeypatch):
    monkeypatch.setenv("FEDRANK_TEST_ROOT", "/data")
    monkeypatch.delenv("FEDRANK_UNSET", raising=False)
    assert expand_path("${FEDRANK_TEST_ROOT}/ham") == "/data/ham"
    assert expand_path("${FEDRANK_UNSET:-../shared/data}/ham") == "../shared/data/ham"
    assert expand_path("$FEDRANK_UNSET/x") == "$FEDRANK_UNSET/x"


def test_cli_bad_input_is_one_line_exit_2_and_writes_nothing(tmp_path):
    out = tmp_path / "run"
    proc = subprocess.run([sys.executable, "-m", "bench", "run", "--set", "partition.beta=-1", "--out", str(out)], cwd=REPO, capture_output=True, text=True)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("fedrank: error: config key 'partition.beta'")
    assert not out.exists()


def test_cli_missing_config_file(tmp_path, capsys):
    assert main(["run", "--config", str(tmp_path / "missing.yaml")]) == 2
    assert "missing.yaml not found" in capsys.readouterr().err


def test_cli_too_many_clients_writes_nothing(tmp_path, capsys):
    cfg = json.dumps(tiny_config(partition__clients=40, partition__min_samples=10))
    assert main(["run", "--config-json", cfg, "--out", str(tmp_path / "run"), "--quiet"]) == 2
    assert "config key 'partition.clients'" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_cli_runs_and_lists(tmp_path, capsys):
    assert main(["run", "--config-json", json.dumps(tiny_config(train__rounds=1)), "--set", "method=fedlsc", "--out", str(tmp_path / "r"), "-q"]) == 0
    assert json.loads((tmp_path / "r" / "run.json").read_text())["method"]["name"] == "fedlsc"
    assert main(["methods"]) == 0
    listing = capsys.readouterr().out
    assert "fedlsc" in listing and "tau = 0.2" in listing and "per = 0.01" in listing
    assert main(["methods", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["fedprox"]["properties"]["mu"]["default"] == 0.001
    assert main(["run", "--print-config", "--set", "seed=4"]) == 0
    assert json.loads(capsys.readouterr().out)["seed"] == 4


def test_help_answers_questions():
    proc = subprocess.run([sys.executable, "-m", "bench", "run", "--help"], cwd=REPO, capture_output=True, text=True)
    assert proc.returncode == 0 and "resumes from its last completed round" in proc.stdout and "--set" in proc.stdout
