"""The conformance suite, generated for every registered method: adding a method module adds its
cases here with no list to edit (see tests/conformance.py for what is checked)."""

from __future__ import annotations

import pytest

from bench.methods import registry
from conformance import PARTICIPATION, check_hyper_parameters_are_in_the_schema, check_method

METHODS = sorted(registry())


@pytest.mark.parametrize("name", METHODS)
def test_hyper_parameters_are_in_the_schema(name):
    check_hyper_parameters_are_in_the_schema(name)


@pytest.mark.parametrize("participation", sorted(PARTICIPATION))
@pytest.mark.parametrize("name", METHODS)
def test_two_rounds_are_finite_change_state_resume_exactly_and_count_bytes(name, participation, tmp_path, monkeypatch):
    check_method(name, participation, tmp_path, monkeypatch)
