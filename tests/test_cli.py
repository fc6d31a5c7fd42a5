"""The command line as a newcomer meets it: --version, a description per subcommand, the model
list, quiet output, a closed pipe, and `fedrank status` answering from the stored plan."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tomllib

import pytest
import yaml

import bench
from bench.cli import build_parser, main
from bench.models import FAMILIES, options_of
from conftest import REPO, tiny_config


def subcommands(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()):
    """(command path, parser) of every subcommand, nested ones included."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, child in action.choices.items():
                yield (*path, name), child
                yield from subcommands(child, (*path, name))


def test_version_is_the_one_in_the_package(capsys):
    with pytest.raises(SystemExit) as stop:
        main(["--version"])
    assert stop.value.code == 0 and capsys.readouterr().out.strip() == f"fedrank {bench.__version__}"
    project = tomllib.loads((REPO / "pyproject.toml").read_text())
    assert "version" in project["project"]["dynamic"] and project["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "bench.__version__"}


def test_every_subcommand_says_what_it_does():
    commands = dict(subcommands(build_parser()))
    assert {"run", "methods", "models", "datasets", "data", "report", "export", "plan", "status"} <= {path[0] for path in commands}
    for path, parser in commands.items():
        assert parser.description and len(parser.description) > 40, f"fedrank {' '.join(path)} has no description"


def test_models_lists_every_model_with_its_options_and_how_to_make_its_weights(capsys):
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    for family, module in FAMILIES.items():
        assert family in out
        for option, default in options_of(module.build).items():
            assert f"{option} = {default!r}" in out
        if getattr(module, "BACKBONE", None):
            assert f"timm.create_model('{module.BACKBONE}', pretrained=True)" in out and "sha256sum" in out


def test_quiet_is_quiet(tmp_path, capsys, caplog):
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    cfg = json.dumps(tiny_config(train__rounds=2))
    proc = subprocess.run([sys.executable, "-m", "bench", "run", "--quiet", "--config-json", cfg, "--out", str(tmp_path / "run")],
                          cwd=REPO, capture_output=True, text=True, env=env)
    assert proc.returncode == 0 and proc.stdout == "" and proc.stderr == "", proc.stderr
    assert (tmp_path / "run" / "run.json").is_file()
    assert main(["report", "--quiet", "--set", "bootstrap.resamples=999", "--set", "figures.formats=[png]", "--out", str(tmp_path / "out"),
                 str(tmp_path / "run" / "run.json")]) == 0
    assert capsys.readouterr().out == "" and not [r for r in caplog.records if r.levelno < 30]
    assert main(["report", "--set", "bootstrap.resamples=999", "--set", "figures.formats=[png]", "--out", str(tmp_path / "out"),
                 str(tmp_path / "run" / "run.json")]) == 0
    assert "files written" in capsys.readouterr().out and [r for r in caplog.records if r.levelno < 30]  # not quiet: progress messages


def test_a_closed_pipe_ends_quietly_without_a_traceback():
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen([sys.executable, "-m", "bench", "plan", "--runs", str(REPO / "configs" / "test" / "tiny.yaml")],
                            cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc.stdout.close()  # the reader is gone before anything is written (as `| head` after its lines)
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=120) == 141 and "Traceback" not in err and "Exception ignored" not in err, err


def test_status_answers_from_the_stored_plan_until_the_config_changes(tmp_path, monkeypatch, capsys):
    import bench.workflow

    monkeypatch.setenv("FEDRANK_CACHE_DIR", str(tmp_path / "cache"))
    config = {"results": str(tmp_path / "runs"), "base": {"data": {"cache_dir": "${FEDRANK_TEST_RESULTS}/cache"}}, "seeds": 2,
              "studies": {"s": {"datasets": ["synthetic"], "methods": ["fedavg", "fedprox"]}}}
    path = tmp_path / "workflow.yaml"
    path.write_text(yaml.safe_dump(config))
    monkeypatch.setenv("FEDRANK_TEST_RESULTS", str(tmp_path / "runs"))
    assert main(["status", str(path)]) == 0
    first = capsys.readouterr().out
    expansions = []
    real = bench.workflow.plan_workflow
    monkeypatch.setattr(bench.workflow, "plan_workflow", lambda config, *allow: expansions.append(1) or real(config, *allow))
    assert main(["status", str(path)]) == 0 and capsys.readouterr().out == first and not expansions  # from the stored plan
    monkeypatch.setenv("FEDRANK_TEST_RESULTS", str(tmp_path / "elsewhere"))  # a variable the config names
    assert main(["status", str(path)]) == 0 and len(expansions) == 1
    path.write_text(yaml.safe_dump({**config, "seeds": 3}))
    assert main(["status", str(path)]) == 0 and len(expansions) == 2
    assert "6" in capsys.readouterr().out.splitlines()[-1]  # 2 methods x 3 seeds pending


def test_the_workflow_manifest_job_stores_the_plan_status_reads():
    from snakemake.utils import validate

    from bench.plan_cache import plan_key
    from bench.workflow import WORKFLOW_SCHEMA, load_workflow_config, prepare_workflow_config

    as_snakemake_has_it = yaml.safe_load((REPO / "configs" / "default.yaml").read_text())
    validate(as_snakemake_has_it, WORKFLOW_SCHEMA)  # fills defaults, studies' own included
    manifest_job = prepare_workflow_config(json.loads(json.dumps(as_snakemake_has_it)))  # what `fedrank plan --config-json` gets
    assert plan_key(manifest_job) == plan_key(load_workflow_config(REPO / "configs" / "default.yaml"))


def test_stored_plans_and_listings_see_methods_outside_the_package(tmp_path, monkeypatch):
    """A method file on FEDRANK_METHODS_PATH (or the compatibility table, a JSON file) changes
    what `fedrank methods` lists: the stored listings and plans are keyed by it."""
    from bench.plan_cache import code_fingerprint

    monkeypatch.setenv("FEDRANK_METHODS_PATH", str(tmp_path))
    before = code_fingerprint()
    (tmp_path / "mine.py").write_text("# a method\n")
    after = code_fingerprint()
    assert before != after and any(name.endswith("mine.py") for name, _, _ in after)
    assert any(name.endswith("privacy_compatibility.json") for name, _, _ in after)
