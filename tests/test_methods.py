"""Every method's hooks against hand-computed values, on a real (tiny) federation."""

from __future__ import annotations

import re
import textwrap

import pytest
import torch

import bench.methods
from bench.config import resolve
from bench.engine.run import RunPaths, execute, play_round, Progress
from bench.engine.setup import build_experiment
from bench.errors import UserError
from bench.methods import make_method, proximal_term, registry, resolve_method_config
from bench.testing import report
from conftest import REPO, tiny_config

PAPER_METHODS = {"local", "fedavg", "fedprox", "fedavg_fc", "fedprox_fc", "fedlsc"}
PARTICIPATION = {"participation/took_part", "participation/reported", "participation/steps"}


def experiment(method: str, **overrides):
    return build_experiment(tiny_config(method=method, **overrides), torch.device("cpu"))


def round_bytes(exp) -> float:
    """Bytes the method sends in a round where every client takes part (download + upload)."""
    fed, method = exp.fed, exp.method
    return sum(method.download_bytes(fed, c) + method.upload_bytes(fed, c, None) for c in fed.clients)


def test_registry_lists_the_paper_methods_with_defaults():
    methods = registry()
    assert PAPER_METHODS <= set(methods)
    assert resolve_method_config({"name": "fedlsc"}) == {"name": "fedlsc", "tau": 0.2, "mu": 0.001, "per": 0.01}
    assert resolve_method_config({"name": "fedprox"}) == {"name": "fedprox", "mu": 0.001}
    assert resolve_method_config({"name": "fedprox_fc"})["mu"] == 0.001


@pytest.mark.parametrize(
    "section, key",
    [
        ({"name": "fedlsc", "tau": 0}, "method.tau"),
        ({"name": "fedlsc", "tau": -1.0}, "method.tau"),
        ({"name": "fedlsc", "per": 1.0}, "method.per"),
        ({"name": "fedlsc", "per": -0.1}, "method.per"),
        ({"name": "fedprox", "mu": -1}, "method.mu"),
        ({"name": "fedavg", "tau": 0.5}, "method"),
        ({"name": "fedlsc", "tau": "big"}, "method.tau"),
    ],
)
def test_bad_hyper_parameters_name_the_key(section, key):
    with pytest.raises(UserError, match=re.escape(f"config key '{key}'")):
        resolve_method_config(section)


def test_unknown_method_lists_the_known_ones():
    with pytest.raises(UserError, match="unknown method 'fedsgd'.*fedavg"):
        resolve_method_config({"name": "fedsgd"})


def test_fedavg_is_the_sample_weighted_mean():
    exp = experiment("fedavg")
    fed, method = exp.fed, exp.method
    a, b = torch.full((fed.layout.size,), 1.0), torch.full((fed.layout.size,), 5.0)
    new = method.aggregate(fed, report(fed, torch.stack([a, b, b]), [2, 1, 1]))
    torch.testing.assert_close(new, torch.full((fed.layout.size,), 0.5 * 1 + 0.5 * 5.0))


def test_fc_variants_keep_the_classifier_personal():
    for name in ("fedavg_fc", "fedprox_fc"):
        exp = experiment(name)
        fed, method = exp.fed, exp.method
        head = fed.layout.layers_where(lambda k: k.startswith("head."))
        assert torch.equal(method.personal_layers(fed), head) and head.sum() == 2
        before = fed.global_state.clone()
        states = torch.randn(3, fed.layout.size)
        new = method.aggregate(fed, report(fed, states, [1, 1, 1]))
        in_head = fed.layout.expand(head)
        torch.testing.assert_close(new[in_head], before[in_head])  # not aggregated
        torch.testing.assert_close(new[~in_head], states.mean(0)[~in_head])
        fed.global_state = new
        for client in fed.clients:
            method.keep(fed, client)
        method.receive(fed, fed.clients[1])
        received = fed.layout.gather(fed.model)
        torch.testing.assert_close(received[in_head], states[1][in_head])  # not overwritten
        torch.testing.assert_close(received[~in_head], new[~in_head])
        head_bytes = fed.layout.nbytes(head)
        assert round_bytes(exp) == 2 * 3 * (fed.layout.nbytes() - head_bytes)


def test_proximal_term_by_hand():
    exp = experiment("fedprox", method__mu=0.5)
    fed = exp.fed
    shift = torch.zeros(fed.layout.size)
    first, second = fed.layout.keys.index("body.0.weight"), fed.layout.keys.index("head.bias")
    views = fed.layout.views(shift)
    views["body.0.weight"].fill_(0.1)
    views["head.bias"].fill_(-0.2)
    fed.layout.scatter(fed.model, fed.global_state + shift)
    numels = fed.layout.numels
    everything = ~fed.layout.no_layers()
    expected = 0.5 / 2 * (numels[first] * 0.01 + numels[second] * 0.04)
    torch.testing.assert_close(proximal_term(fed, 0.5, everything)(None).item(), expected, rtol=1e-5, atol=0)
    body_only = everything & ~fed.layout.layers_where(lambda k: k.startswith("head."))
    torch.testing.assert_close(proximal_term(fed, 0.5, body_only)(None).item(), 0.5 / 2 * numels[first] * 0.01, rtol=1e-5, atol=0)
    assert proximal_term(fed, 0.0, everything) is None
    assert exp.method.local_loss(fed, fed.clients[0]) is not None


def test_proximal_term_gradient_pulls_towards_the_global_model():
    exp = experiment("fedprox", method__mu=2.0)
    fed = exp.fed
    fed.layout.scatter(fed.model, fed.global_state + 1.0)
    term = proximal_term(fed, 2.0, ~fed.layout.no_layers())
    term(None).backward()
    grad = fed.model.head.bias.grad
    torch.testing.assert_close(grad, torch.full_like(grad, 2.0))  # d/dw (mu/2)(w - g)^2 = mu (w - g)


def test_local_only_never_communicates():
    exp = experiment("local")
    fed, method = exp.fed, exp.method
    start = fed.global_state.clone()
    progress = Progress()
    fed.round = 1
    play_round(exp, progress)
    assert torch.equal(fed.global_state, start)
    assert round_bytes(exp) == 0 and method.global_model(fed) is None
    models = [fed.layout.gather(method.client_model(fed, c)) for c in fed.clients]
    assert not torch.equal(models[0], models[1])  # each client has its own model
    assert {r["scope"] for r in progress.metrics} == {"train", "comm", "personal", "local"}
    assert {r["value"] for r in progress.metrics if r["scope"] == "comm" and r["metric"] == "bytes"} == {0.0}


def test_fedlsc_rounds_select_keep_and_regularise_personal_layers():
    exp = experiment("fedlsc", method__per=0.3, method__mu=0.01)
    fed, method = exp.fed, exp.method
    progress = Progress()
    fed.round = 1
    assert method.local_loss(fed, fed.clients[0]) is None  # no proximal term in round 1
    global_before = fed.global_state.clone()
    play_round(exp, progress)
    personal = method.personal_layers(fed)
    assert 0 < int(personal.sum()) < fed.layout.layers
    sims = [d for d in fed.diagnostics if d["name"] == "layer_similarity"][0]["values"]
    torch.testing.assert_close(personal, sims < torch.quantile(sims.double(), 0.3).float())
    # round 1 aggregated every layer, the ones that became personal included
    assert not torch.equal(fed.layout.select(fed.global_state, personal), fed.layout.select(global_before, personal))
    # each client starts round 2 from the global shared layers and its own round-1 personal layers
    for i, client in enumerate(fed.clients):
        model = fed.layout.gather(method.client_model(fed, client))
        torch.testing.assert_close(fed.layout.select(model, personal), fed.layout.select(fed.uploads[i], personal))
        torch.testing.assert_close(fed.layout.select(model, ~personal), fed.layout.select(fed.global_state, ~personal))
    global_after_1 = fed.global_state.clone()

    fed.round = 2
    assert method.local_loss(fed, fed.clients[0]) is not None  # Eq.7 from round 2 on
    play_round(exp, progress)
    # personal layers of the global state are no longer aggregated
    torch.testing.assert_close(fed.layout.select(fed.global_state, personal), fed.layout.select(global_after_1, personal))
    assert not torch.equal(fed.layout.select(fed.global_state, ~personal), fed.layout.select(global_after_1, ~personal))
    assert round_bytes(exp) == 2 * 3 * fed.layout.nbytes(~personal)
    assert {d["name"] for d in fed.diagnostics} - PARTICIPATION == {"layer_similarity", "client_weight", "personal"}


def test_fedlsc_per_zero_keeps_nothing_personal():
    exp = experiment("fedlsc", method__per=0.0)
    exp.fed.round = 1
    play_round(exp, Progress())
    assert not exp.method.personal_layers(exp.fed).any()
    assert not exp.method.personalized(exp.fed)


def test_fedlsc_records_diagnostics_in_the_run_outputs(tmp_path):
    import pandas as pd

    record = execute(tiny_config(method="fedlsc", method__per=0.2, train__rounds=2), tmp_path / "run", show_progress=False)
    assert record["headline_scope"] == "personal"
    diag = pd.read_parquet(RunPaths(tmp_path / "run").diagnostics)
    assert set(diag["name"]) - PARTICIPATION == {"layer_similarity", "client_weight", "personal"}
    weights = diag[diag["name"] == "client_weight"]
    sums = weights.groupby(["round", "layer"])["value"].sum()
    assert ((sums - 1).abs() < 1e-5).all()
    assert set(weights["client"].dropna()) == {0, 1, 2}
    personal = diag[(diag["name"] == "personal") & (diag["value"] > 0)]
    assert len(personal) > 0 and set(personal["round"]) == {1, 2}


def test_a_new_method_file_is_discovered(tmp_path, monkeypatch):
    (tmp_path / "fedzero.py").write_text(textwrap.dedent('''
        from bench.methods import Method, register

        @register
        class FedZero(Method):
            """FedZero: test method."""
            name = "fedzero_test"
    '''))
    monkeypatch.setattr(bench.methods, "__path__", [*bench.methods.__path__, str(tmp_path)])
    try:
        assert "fedzero_test" in registry()
        assert make_method(resolve_method_config({"name": "fedzero_test"})).name == "fedzero_test"
    finally:
        bench.methods._REGISTRY.pop("fedzero_test", None)


def test_the_readme_example_method_runs(tmp_path):
    readme = (REPO / "README.md").read_text()
    code = re.search(r"### Authoring a method.*?```python\n(.*?)```", readme, re.S).group(1)
    exec(compile(code, "README.md", "exec"), {})
    try:
        record = execute(tiny_config(method="fedexample", train__rounds=2), tmp_path / "run", show_progress=False)
        assert record["status"] == "completed" and record["method"] == {"name": "fedexample", "beta": 0.9}
    finally:
        bench.methods._REGISTRY.pop("fedexample", None)


def test_resolve_accepts_its_own_output():
    cfg = tiny_config(method="fedlsc")
    assert resolve(cfg) == cfg
