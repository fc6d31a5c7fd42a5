"""The conformance suite (bench.testing.conformance), generated for every registered method:
adding a method module adds its cases here with no list to edit."""

from __future__ import annotations

import importlib.util

import pytest

from bench.methods import registry
from bench.engine.privacy import MODES
from bench.testing.conformance import PARTICIPATION, check_hyper_parameters_are_in_the_schema, check_learns, check_method, check_privacy_mode

METHODS = sorted(registry())


def needs_its_packages(name: str) -> None:
    """Skip a method whose optional extra is not installed (e.g. flower without flwr)."""
    missing = [m for m in registry()[name].optional_packages if importlib.util.find_spec(m) is None]
    if missing:
        pytest.skip(f"method {name} needs {', '.join(missing)} (an optional extra of pyproject.toml)")


@pytest.mark.parametrize("name", METHODS)
def test_hyper_parameters_are_in_the_schema(name):
    check_hyper_parameters_are_in_the_schema(name)


@pytest.mark.parametrize("participation", sorted(PARTICIPATION))
@pytest.mark.parametrize("name", METHODS)
def test_two_rounds_are_finite_change_state_resume_exactly_and_count_bytes(name, participation, tmp_path):
    needs_its_packages(name)
    check_method(name, participation, tmp_path)


@pytest.mark.parametrize("name", METHODS)
def test_each_method_learns_the_easy_task_or_says_why_not(name, tmp_path):
    needs_its_packages(name)
    check_learns(name, tmp_path)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("name", METHODS)
def test_each_privacy_mode_runs_or_is_refused_in_one_line(name, mode, tmp_path):
    needs_its_packages(name)
    if mode != "secure_aggregation":
        pytest.importorskip("opacus", reason="the DP modes need Opacus (pip install -e '.[privacy]')")
    check_privacy_mode(name, mode, tmp_path)


def test_the_new_method_skeleton_passes_the_conformance_suite(tmp_path, monkeypatch, capsys):
    import bench.methods
    from bench.cli import main

    assert main(["new-method", "fedskeleton_test", "--out", str(tmp_path / "fedskeleton_test.py")]) == 0
    assert "fedskeleton_test" in capsys.readouterr().out
    monkeypatch.setattr(bench.methods, "__path__", [*bench.methods.__path__, str(tmp_path)])
    try:
        assert "fedskeleton_test" in registry()
        check_hyper_parameters_are_in_the_schema("fedskeleton_test")
        for participation in sorted(PARTICIPATION):
            check_method("fedskeleton_test", participation, tmp_path / participation)
        check_learns("fedskeleton_test", tmp_path / "learning")
    finally:
        bench.methods._REGISTRY.pop("fedskeleton_test", None)
    assert main(["new-method", "fedavg"]) == 2  # taken
    assert main(["new-method", "Fed-Bad"]) == 2
