"""Privacy modes (bench/engine/privacy.py): the accountant against published values, clipping and
noise measured, the run id, the one-line refusals, secure aggregation's bytes, and a private run
that records epsilon and resumes exactly. Every method under every mode: tests/test_conformance.py."""

from __future__ import annotations

import json
import math
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch

pytest.importorskip("opacus", reason="the privacy modes need Opacus (pip install -e '.[privacy]')")

from bench.compatibility import compatibility  # noqa: E402
from bench.config import config_digest, semantic_view  # noqa: E402
from bench.engine import privacy  # noqa: E402
from bench.engine.participation import draw_round  # noqa: E402
from bench.engine.run import RunPaths, execute  # noqa: E402
from bench.engine.setup import build_experiment  # noqa: E402
from bench.errors import UserError  # noqa: E402
from conftest import assert_resume_is_exact, tiny_config  # noqa: E402

DP = {"clip": 1.0, "noise_multiplier": 1.0}


def test_rdp_of_the_subsampled_gaussian_gives_abadi_et_al_s_published_epsilon():
    """Abadi et al. (CCS 2016), Sec. 3.1: q = 0.01, sigma = 4, T = 10,000 steps, delta = 1e-5 give
    epsilon ~ 1.26 with the moments accountant, i.e. min over integer orders a of
    T * RDP(a) + log(1/delta) / (a - 1) (their Theorem 2 tail bound). The reported epsilon uses
    Balle et al. 2020's tighter conversion, so it is lower."""
    orders = np.array(privacy.rdp_orders())
    curve = np.array(privacy.rdp_curve(4.0, 0.01, 10_000))
    integer = orders == np.round(orders)
    moments = float(np.min(curve[integer] + math.log(1e5) / (orders[integer] - 1)))
    assert moments == pytest.approx(1.26, rel=0.01)
    assert privacy.epsilon(4.0, 0.01, 10_000, 1e-5) < moments


def test_epsilon_matches_opacus_s_documented_example():
    """Opacus's accountant test (opacus/tests/accountants_test.py): sigma 1.5, q 0.04, 90 epochs."""
    assert privacy.epsilon(1.5, 0.04, int(90 / 0.04), 1e-5) == pytest.approx(7.32911117143, rel=0.01)


def test_without_sampling_the_gaussian_s_rdp_is_a_over_two_sigma_squared_per_step():
    orders = np.array(privacy.rdp_orders())
    assert np.allclose(privacy.rdp_curve(2.0, 1.0, 3), 3 * orders / (2 * 2.0**2))
    assert privacy.epsilon(2.0, 1.0, 0, 1e-5) == 0.0


def test_target_epsilon_solves_the_noise_multiplier():
    sigma = privacy.noise_for(2.0, 0.1, 20, 1e-5, "client_dp")
    assert 2.0 * 0.999 <= privacy.epsilon(sigma, 0.1, 20, 1e-5) <= 2.0
    with pytest.raises(UserError, match="target_epsilon"):
        privacy.noise_for(1e-9, 1.0, 10**6, 1e-5, "client_dp")


def test_clipping_bounds_every_norm_by_c_and_keeps_directions():
    rows = torch.randn(6, 50) * torch.tensor([0.01, 0.1, 1.0, 3.0, 10.0, 100.0])[:, None]
    clipped, norms = privacy.clip_rows(rows, 1.0)
    after = torch.linalg.vector_norm(clipped, dim=1)
    assert (after <= 1.0 + 1e-6).all()
    small = norms <= 1.0
    assert torch.equal(clipped[small], rows[small])
    assert torch.allclose(clipped[~small], rows[~small] / norms[~small, None])


def client_dp_round(cfg: dict, delta_norm: float):
    """A built run at round 1 whose reporting clients all moved `delta_norm` away from what they received."""
    exp = build_experiment(cfg, torch.device("cpu"))
    fed = exp.fed
    fed.round = 1
    fed.plan = draw_round(cfg["train"], cfg["seed"], 1, len(fed.clients))
    fed.slots = {c.id: row for row, c in enumerate(fed.clients)}
    k = len(fed.clients)
    exp.privacy.start[:k] = fed.global_state
    direction = torch.randn(k, fed.layout.size)
    states = fed.global_state + delta_norm * direction / torch.linalg.vector_norm(direction, dim=1, keepdim=True)
    items = [SimpleNamespace(client=c.id) for c in fed.clients]
    return exp, privacy.Updates(states, items), direction


def test_client_dp_clips_each_update_and_adds_noise_of_the_stated_std_to_their_sum():
    clip, sigma = 0.5, 2.0
    cfg = tiny_config(privacy__client_dp={"clip": clip, "noise_multiplier": sigma})
    exp, updates, direction = client_dp_round(cfg, delta_norm=10 * clip)
    fed = exp.fed
    mean = exp.privacy.server_view(fed, exp.method, updates, {}).weighted_mean()
    clipped_mean = (clip * direction / torch.linalg.vector_norm(direction, dim=1, keepdim=True)).sum(0) / len(fed.clients)
    noise = mean - fed.global_state - clipped_mean
    expected = sigma * clip / len(fed.clients)
    assert noise.std().item() == pytest.approx(expected, rel=0.05)  # thousands of coordinates: a few % sampling error
    assert abs(noise.mean().item()) < 4 * expected / math.sqrt(noise.numel())
    recorded = {d["name"]: d["values"] for d in fed.diagnostics}
    assert recorded["privacy/clip_fraction"].item() == 1.0
    assert recorded["privacy/noise_std"].item() == pytest.approx(expected)
    assert torch.allclose(recorded["privacy/update_norm"], torch.full((len(fed.clients),), 10 * clip))


def test_the_client_sampling_rate_is_the_share_of_clients_drawn_per_round():
    exp = build_experiment(tiny_config(partition__clients=4, train__participation=0.5, privacy__client_dp=DP), torch.device("cpu"))
    assert exp.privacy.client_rate == 0.5 and exp.privacy.client_noise == 1.0


def test_the_server_s_view_refuses_any_one_client_s_update_in_one_line():
    view = privacy.SumOnlyUpdates(torch.zeros(3), torch.zeros(3), [0, 1], "fedx", "secure_aggregation")
    assert view.clients == [0, 1]
    for what in ("states", "items", "num_samples"):
        with pytest.raises(privacy.IndividualUpdates, match="fedx cannot run under privacy.secure_aggregation") as caught:
            getattr(view, what)
        assert "\n" not in str(caught.value)


def test_dp_sgd_sums_clipped_per_example_gradients_and_adds_measured_noise():
    """A linear model, loss w.x per example: the gradient of example i is x_i, so the step's
    gradient is (sum_i clip(x_i) + noise) / B, checked by hand; the noise's std is measured."""
    torch.manual_seed(0)
    weight = torch.nn.Parameter(torch.zeros(4000))
    run = SimpleNamespace(params=[weight], optimizer=torch.optim.SGD([weight], lr=1.0), total=torch.zeros(()))
    x = torch.randn(4, 4000) * torch.tensor([0.001, 0.01, 1.0, 100.0])[:, None]
    clip = 1.0
    sgd = privacy.PrivateSGD(clip, noise_multiplier=0.0, seed=0, method="fedx")
    losses = sgd.gradients([run], 4, lambda i: [(weight * x[i]).sum()], client=0, generator=torch.Generator().manual_seed(1))
    clipped, _ = privacy.clip_rows(x, clip)
    assert torch.allclose(weight.grad, clipped.sum(0) / 4, atol=1e-6)
    assert losses[0].item() == pytest.approx(0.0)
    assert sgd.clipped[0] == [2, 4]  # the two examples with norm above C
    sgd = privacy.PrivateSGD(clip, noise_multiplier=3.0, seed=0, method="fedx")
    sgd.gradients([run], 4, lambda i: [(weight * 0 * x[i]).sum()], client=0, generator=torch.Generator().manual_seed(1))
    assert weight.grad.std().item() == pytest.approx(3.0 * clip / 4, rel=0.05)



def test_group_norm_keeps_about_group_size_channels_per_group():
    """8 channels at 4 per group: 2 groups; 12 at 8: 12 // 8 = 1; 12 at 5: 2 (12 // 5 = 2 divides 12);
    30 at 4: 30 // 4 = 7 does not divide 30, so 6; group size 1 is instance norm."""
    assert [privacy.norm_groups(c, s) for c, s in [(8, 4), (12, 8), (12, 5), (30, 4), (32, 1), (3, 16)]] == [2, 1, 2, 6, 32, 1]
    from bench.models import build_model, resolve_model_config

    model = privacy.group_norm(build_model(resolve_model_config({"name": "small_cnn", "widths": [8, 16]}), 3, 3, 8), group_size=4)
    norms = [m for m in model.modules() if isinstance(m, torch.nn.GroupNorm)]
    assert [(m.num_groups, m.num_channels) for m in norms] == [(2, 8), (4, 16)]
    assert not any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in model.modules())

def test_vectorised_per_example_gradients_equal_one_backward_pass_per_example():
    """The torch.func pass (plain cross-entropy learners) and the per-example loop (any loss) give
    the same clipped sums and losses on a small CNN with GroupNorm."""
    from bench.engine.trainer import Learner
    from bench.models import build_model, resolve_model_config

    torch.manual_seed(0)
    model = privacy.group_norm(build_model(resolve_model_config({"name": "small_cnn", "widths": [4, 8]}), 3, 3, 8), group_size=4)
    params = [p for p in model.parameters() if p.requires_grad]
    run = SimpleNamespace(learner=Learner(model), params=params, optimizer=torch.optim.SGD(params, lr=0.1), total=torch.zeros(()))
    x, y = torch.randn(5, 3, 8, 8), torch.tensor([0, 1, 2, 1, 0])
    sgd = privacy.PrivateSGD(0.05, noise_multiplier=1.0, seed=0, method="fedx")
    assert privacy.plain_cross_entropy([run])

    def losses_of(i):
        return [torch.nn.functional.cross_entropy(model(x[i]), y[i])]

    looped, looped_losses = sgd.looped_clipped_sums([run], 5, losses_of, [0, 0])
    seen = [0, 0]
    vectorised, vectorised_losses = privacy.vectorised_clipped_sums(run, x, y, 0.05, seen)
    for a, b in zip(looped[0], vectorised[0]):
        assert torch.allclose(a, b, atol=1e-6)
    assert torch.allclose(looped_losses[0], vectorised_losses[0], atol=1e-5) and seen == [5, 5]



def test_adaptive_clipping_raises_the_update_noise_so_sum_and_count_cost_sigma():
    """sigma_Delta = (sigma^-2 - (2 sigma_b)^-2)^-1/2 (Andrew et al. 2021 Sec. 3.1): sigma 1, sigma_b 1
    gives (1 - 1/4)^-1/2 = 2 / sqrt(3); a count noise at or below sigma / 2 leaves nothing for the sum."""
    assert privacy.update_noise(1.0, 1.0) == pytest.approx(2 / math.sqrt(3))
    assert privacy.update_noise(3.0, 5.0) == pytest.approx((1 / 9 - 1 / 100) ** -0.5)
    with pytest.raises(UserError, match=r"^config key 'privacy.client_dp.adaptive.count_noise': 0.5 leaves no budget.*exceed 0.5"):
        privacy.update_noise(1.0, 0.5)


def test_adaptive_clip_takes_one_geometric_step_towards_the_target_quantile():
    """3 of 4 sampled clients unclipped, no count noise: b = (3 - 4/2) / 4 + 1/2 = 0.75; gamma 0.5,
    eta 0.2: C' = C exp(-0.2 * 0.25) = 2 exp(-0.05); too few unclipped raises C."""
    adaptive = privacy.AdaptiveClip(target_quantile=0.5, clip_lr=0.2, count_noise=0.0)
    fraction = adaptive.unclipped_fraction(3, 4, 4, torch.Generator().manual_seed(0))
    assert fraction == pytest.approx(0.75)
    assert adaptive.next_clip(2.0, fraction) == pytest.approx(2.0 * math.exp(-0.05))
    assert adaptive.next_clip(2.0, adaptive.unclipped_fraction(0, 4, 4, torch.Generator())) == pytest.approx(2.0 * math.exp(0.1))
    assert adaptive.unclipped_fraction(2, 3, 4, torch.Generator()) == pytest.approx((2 - 1.5) / 4 + 0.5)  # a dropout: fixed denominator


def test_adaptive_clip_count_noise_has_the_stated_std():
    adaptive = privacy.AdaptiveClip(target_quantile=0.5, clip_lr=0.2, count_noise=3.0)
    generator = torch.Generator().manual_seed(0)
    draws = torch.tensor([adaptive.unclipped_fraction(5, 10, 10, generator) for _ in range(4000)])
    assert draws.std().item() == pytest.approx(3.0 / 10, rel=0.05)
    assert abs(draws.mean().item() - 0.5) < 4 * 0.3 / math.sqrt(4000)


def test_adaptive_client_dp_round_uses_the_carried_clip_and_records_the_next():
    """All updates 10x the carried clip: every one clipped to the carried C (not the configured
    one), b = (0 - k/2 + noise) / k + 1/2, and the next C goes to the ledger; noise std sigma_Delta C / k."""
    sigma, count_noise = 1.0, 2.0
    cfg = tiny_config(privacy__client_dp={"clip": 5.0, "noise_multiplier": sigma, "adaptive": {"count_noise": count_noise}})
    exp, updates, direction = client_dp_round(cfg, delta_norm=3.0)
    fed, k = exp.fed, len(exp.fed.clients)
    ledger = {privacy.ADAPTIVE_CLIP: 0.3}
    mean = exp.privacy.server_view(fed, exp.method, updates, ledger).weighted_mean()
    recorded = {d["name"]: d["values"] for d in fed.diagnostics}
    fraction = recorded["privacy/unclipped_fraction"].item()
    assert recorded["privacy/clip"].item() == pytest.approx(0.3) and recorded["privacy/clip_fraction"].item() == 1.0
    assert ledger[privacy.ADAPTIVE_CLIP] == pytest.approx(0.3 * math.exp(-0.2 * (fraction - 0.5)))
    assert recorded["privacy/noise_std"].item() == pytest.approx(privacy.update_noise(sigma, count_noise) * 0.3 / k)
    clipped_mean = (0.3 * direction / torch.linalg.vector_norm(direction, dim=1, keepdim=True)).sum(0) / k
    assert (mean - fed.global_state - clipped_mean).std().item() == pytest.approx(privacy.update_noise(sigma, count_noise) * 0.3 / k, rel=0.05)
    assert exp.privacy.describe()["client_dp"]["adaptive"]["update_noise_multiplier"] == pytest.approx(privacy.update_noise(sigma, count_noise))


def test_adaptive_clipping_settings_are_checked_with_one_line():
    from bench.config import resolve

    with pytest.raises(UserError, match=r"^config key 'privacy.client_dp.adaptive.clip_lr': 0 "):
        resolve(tiny_config(privacy__client_dp={**DP, "adaptive": {"clip_lr": 0}}))
    with pytest.raises(UserError, match=r"^config key 'privacy.client_dp.adaptive'.*'quantile' was unexpected"):
        resolve(tiny_config(privacy__client_dp={**DP, "adaptive": {"quantile": 0.5}}))
    with pytest.raises(UserError, match=r"^config key 'privacy.sample_dp'.*'adaptive' was unexpected"):
        resolve(tiny_config(privacy__sample_dp={**DP, "adaptive": {}}))
    cfg = tiny_config(privacy__client_dp={**DP, "adaptive": {}})  # default count noise: clients per round / 20 < sigma / 2
    with pytest.raises(UserError, match="count_noise"):
        build_experiment(cfg, torch.device("cpu"))

def test_run_ids_change_only_when_a_privacy_mode_is_set():
    plain = tiny_config()
    assert "privacy" not in semantic_view(plain)
    private = tiny_config(privacy__secure_aggregation=True)
    assert config_digest(private) != config_digest(plain)


@pytest.mark.parametrize("setting, message", [
    ({"privacy__client_dp": {"clip": 1.0}}, "privacy.client_dp': give exactly one of noise_multiplier and target_epsilon"),
    ({"privacy__sample_dp": {"clip": 1.0, "noise_multiplier": 1.0, "target_epsilon": 2.0}}, "give exactly one"),
    ({"privacy__client_dp": DP, "method": "fedlsc"}, "method fedlsc cannot run under privacy.client_dp: its layer-wise client weights"),
    ({"privacy__secure_aggregation": True, "method": "scaffold"}, "method scaffold cannot run under privacy.secure_aggregation"),
    ({"privacy__sample_dp": DP, "method": "fedrod"}, "method fedrod cannot run under privacy.sample_dp: its balanced-softmax loss"),
])
def test_bad_privacy_settings_and_incompatible_methods_stop_in_one_line(setting, message):
    with pytest.raises(UserError, match=message.replace(".", r"\.").replace("(", r"\(")) as caught:
        tiny_config(**setting)
    assert "\n" not in str(caught.value)


def test_secure_aggregation_bytes_count_the_protocol_s_messages():
    down, up = privacy.secure_aggregation_bytes(3, reported=True)
    assert down == 2 * 2 * 32 + 2 * 2 * 32  # the other two users' 2 keys and 2 shares each
    assert up == 2 * 32 + 2 * 2 * 32 + 2 * 32  # own 2 keys, 2 shares to each other user, 1 share each at unmasking
    assert privacy.secure_aggregation_bytes(3, reported=False)[1] == up - 2 * 32


def test_secure_aggregation_leaves_fedavg_s_metrics_and_adds_the_protocol_bytes(tmp_path):
    metrics = {}
    for name, extra in {"plain": {}, "secagg": {"privacy__secure_aggregation": True}}.items():
        execute(tiny_config(train__rounds=1, **extra), tmp_path / name, show_progress=False)
        metrics[name] = pd.read_parquet(RunPaths(tmp_path / name).metrics).set_index(["round", "scope", "client", "metric"])["value"]
    scored = [s for s in metrics["plain"].index.get_level_values("scope").unique() if s != "comm"]
    for scope in scored:
        assert metrics["plain"].xs(scope, level="scope").equals(metrics["secagg"].xs(scope, level="scope"))
    clients = 3
    down, up = privacy.secure_aggregation_bytes(clients, reported=True)
    added = metrics["secagg"].xs("comm", level="scope") - metrics["plain"].xs("comm", level="scope")
    assert added.xs("bytes_down", level="metric").item() == clients * down
    assert added.xs("bytes_up", level="metric").item() == clients * up


def test_a_private_run_records_epsilon_each_round_and_resumes_exactly(tmp_path, monkeypatch):
    cfg = tiny_config(train__rounds=3, partition__clients=4, train__stragglers=0.5, model__widths=[4, 8],
                      privacy__client_dp={"clip": 1.0, "target_epsilon": 4.0, "adaptive": {"count_noise": 5.0}},
                      privacy__sample_dp={"clip": 1.0, "noise_multiplier": 1.1}, privacy__secure_aggregation=True)
    record = assert_resume_is_exact(cfg, tmp_path, monkeypatch, crash_round=2)  # the adaptive clip is carried across the crash
    paths = RunPaths(tmp_path / "resumed")
    metrics = pd.read_parquet(paths.metrics)
    rows = metrics[metrics["scope"] == "privacy"]
    client_level = rows[rows["metric"] == "client_epsilon"].set_index("round")["value"]
    assert list(client_level.index) == [1, 2, 3] and client_level.is_monotonic_increasing
    assert 4.0 * 0.999 <= client_level[3] <= 4.0  # sigma solved before round 1 for the run's rounds
    described = json.loads(paths.record.read_text())["privacy"]
    assert described["client_dp"]["sample_rate"] == 1.0 and described["modes"] == list(privacy.MODES)
    assert "BatchNorm2d" not in described["sample_dp"]["norm_layers"] and described["sample_dp"]["norm_layers"]["GroupNorm"] > 0
    # each client's record-level epsilon: its DP-SGD steps so far, at its own sampling rate
    steps = pd.read_parquet(paths.diagnostics).query("name == 'participation/steps'").pivot(index="round", columns="client", values="value").cumsum()
    per_client = rows[(rows["metric"] == "record_epsilon") & rows["client"].notna()]
    for row in per_client.itertuples():
        rate = described["sample_dp"]["sample_rates"][str(int(row.client))]
        assert row.value == pytest.approx(privacy.epsilon(1.1, rate, int(steps.loc[row.round, row.client]), 1e-5))
    worst = rows[(rows["metric"] == "record_epsilon") & rows["client"].isna()].set_index("round")["value"]
    assert (worst == per_client.groupby("round")["value"].max()).all()
    clips = pd.read_parquet(paths.diagnostics).query("name == 'privacy/clip'").set_index("round")["value"]
    assert clips[1] == 1.0 and clips.nunique() == 3  # C moved after every round
    assert record["status"] == "completed"


def record_epsilons(folder) -> pd.Series:
    metrics = pd.read_parquet(RunPaths(folder).metrics)
    return metrics[(metrics["scope"] == "privacy") & (metrics["metric"] == "record_epsilon") & metrics["client"].isna()].set_index("round")["value"]


def test_record_level_target_epsilon_counts_a_method_s_extra_fits_and_an_undercount_is_flagged(tmp_path, monkeypatch, caplog):
    """Ditto fits the global and the personal model every round (Method.private_epochs: 2 epochs):
    the noise solved for the target covers both, so the realised epsilon ends within 1 % below it.
    Planned as one fit, it passes the target: one warning line, and run.json says by how much."""
    from bench.methods.ditto import Ditto

    cfg = tiny_config(train__rounds=2, method={"name": "ditto"}, privacy__sample_dp={"clip": 1.0, "target_epsilon": 4.0})
    execute(cfg, tmp_path / "declared", show_progress=False)
    assert 0.99 * 4.0 <= record_epsilons(tmp_path / "declared")[2] <= 4.0
    assert "epsilon_over_target" not in json.loads(RunPaths(tmp_path / "declared").record.read_text())["privacy"]
    monkeypatch.setattr(Ditto, "private_epochs", lambda self, train: train["local_epochs"])
    with caplog.at_level("WARNING", logger="fedrank"):
        execute(cfg, tmp_path / "undercounted", show_progress=False)
    realised = record_epsilons(tmp_path / "undercounted")[2]
    assert realised > 1.01 * 4.0
    warnings = [r.getMessage() for r in caplog.records if "passes target_epsilon" in r.getMessage()]
    assert len(warnings) == 1 and "\n" not in warnings[0] and "method ditto under privacy.sample_dp" in warnings[0]
    over = json.loads(RunPaths(tmp_path / "undercounted").record.read_text())["privacy"]["epsilon_over_target"]
    assert over == {"sample_dp": pytest.approx(realised)}


def test_an_inner_solver_s_k_steps_on_a_batch_are_k_releases(tmp_path):
    """pFedMe's personal model takes K = 3 noisy steps on every batch and the local model one: 4
    DP-SGD releases per batch, at the client's sampling rate."""
    cfg = tiny_config(train__rounds=1, method={"name": "pfedme", "inner_steps": 3}, privacy__sample_dp={"clip": 1.0, "noise_multiplier": 1.1})
    execute(cfg, tmp_path / "run", show_progress=False)
    paths = RunPaths(tmp_path / "run")
    described = json.loads(paths.record.read_text())["privacy"]["sample_dp"]
    steps = pd.read_parquet(paths.diagnostics).query("name == 'participation/steps' and round == 1").set_index("client")["value"]
    metrics = pd.read_parquet(paths.metrics)
    per_client = metrics[(metrics["metric"] == "record_epsilon") & metrics["client"].notna()].set_index("client")["value"]
    for client, value in per_client.items():
        assert value == pytest.approx(privacy.epsilon(1.1, described["sample_rates"][str(int(client))], 4 * int(steps[client]), 1e-5))


def test_secure_aggregation_s_per_user_total_is_the_hand_count():
    """Per user of n (a_K = a_S = 32 B), counted message by message: AdvertiseKeys sends 2 keys and
    receives 2 from each other user (2n a_K); ShareKeys sends and receives 2 shares per other user
    (4(n-1) a_S); Unmasking sends one share per other user ((n-1) a_S): 2n a_K + 5(n-1) a_S. n = 4:
    256 + 480 = 736 bytes besides the masked vector."""
    down, up = privacy.secure_aggregation_bytes(4, reported=True)
    assert down + up == 736
    for n in range(2, 9):
        assert sum(privacy.secure_aggregation_bytes(n, reported=True)) == 2 * n * privacy.KEY_BYTES + 5 * (n - 1) * privacy.SHARE_BYTES


def test_the_privacy_utility_figure_pairs_each_epsilon_with_the_non_private_runs(tmp_path):
    from bench.stats.analysis import analyse
    from bench.stats.collect import load_results
    from bench.stats.figures import all_figures
    from bench.stats.figures.privacy import privacy_rows
    from bench.stats.settings import resolve_stats

    runs = tmp_path / "runs"
    for seed in (0, 1):
        execute(tiny_config(train__rounds=1, seed=seed), runs / f"plain{seed}", show_progress=False)
        for target in (8.0, 2.0):
            execute(tiny_config(train__rounds=1, seed=seed, privacy__client_dp={"clip": 1.0, "target_epsilon": target}),
                    runs / f"dp{target}-{seed}", show_progress=False)
    settings = resolve_stats({"metric": "balanced_accuracy", "table_metrics": ["auroc"]})
    analysis = analyse(load_results(runs, settings, progress=False), settings)
    rows = privacy_rows(analysis.results, analysis.summary, "balanced_accuracy")
    assert sorted(rows["epsilon"]) == [2.0, 8.0, math.inf] and set(rows["n"]) == {2}  # one context: the seeds paired across epsilon
    assert rows["context"].nunique() == 1
    written = all_figures(analysis, tmp_path / "figures", progress=False, only=("privacy_utility",))
    png = sorted(path for path in written if path.suffix == ".png")  # the headline metric's, then each table metric's
    assert [path.stem.endswith("_auroc") for path in png] == [False, True] and "synthetic: auroc" in written[png[1]]
    assert all("δ = 1e-05" in written[path] and "RDP accountant" in written[path] for path in png)
    assert "passed the target by more than 1 %: none" in written[png[0]]
    plain = analyse(load_results([runs / f"plain{seed}" / "run.json" for seed in (0, 1)], settings, progress=False), settings)
    assert all_figures(plain, tmp_path / "plain_figures", progress=False, only=("privacy_utility",)) == {}


def test_the_compatibility_table_has_a_row_per_registered_method_with_each_refusal_s_reason(tmp_path):
    """tables/privacy_compatibility (csv, md, tex, html) in reports of studies with a privacy mode:
    one row per registered method, 'runs' where the derived table says so, else the method's own
    one-line reason; no such table without a privacy run."""
    from bench.methods import registry
    from bench.stats.analysis import analyse
    from bench.stats.collect import load_results
    from bench.stats.report import write_tables
    from bench.stats.settings import resolve_stats
    from bench.stats.tables import PRIVACY_MODE_TITLES, all_tables, privacy_compatibility_table

    settings = resolve_stats({"metric": "balanced_accuracy"})
    execute(tiny_config(train__rounds=1), tmp_path / "runs" / "plain", show_progress=False)
    plain = analyse(load_results(tmp_path / "runs", settings, progress=False), settings)
    assert privacy_compatibility_table(plain) == []
    execute(tiny_config(train__rounds=1, privacy__secure_aggregation=True), tmp_path / "runs" / "secagg", show_progress=False)
    analysis = analyse(load_results(tmp_path / "runs", settings, progress=False), settings)
    [table] = [t for t in all_tables(analysis) if t.name == "privacy_compatibility"]
    methods, derived = registry(), compatibility()
    assert list(table.data["method"]) == sorted(methods)
    for row in table.data.itertuples():
        for mode in privacy.MODES:
            expected = "runs" if derived[row.method][mode] else privacy.refusal(methods[row.method], mode)
            assert getattr(row, mode) == expected and expected  # every refusal is declared with its reason
    assert (table.data[list(privacy.MODES)] != "runs").any().any() and (table.data[list(privacy.MODES)] == "runs").any().any()
    written = write_tables([table], tmp_path / "report")
    assert sorted(p.suffix for p in written) == [".csv", ".html", ".md", ".tex"]
    assert PRIVACY_MODE_TITLES["sample_dp"] in (tmp_path / "report" / "tables" / "privacy_compatibility.md").read_text()


@pytest.mark.parametrize("vectorise", [True, False])
def test_dp_sgd_without_clipping_or_noise_trains_exactly_as_the_plain_trainer(vectorise):
    """With C far above every gradient and sigma C ~ 1e-11, a DP-SGD fit ends where the plain
    fit of the same (GroupNorm) model from the same state ends: the private path adds nothing else."""
    cfg = tiny_config(train__rounds=1, privacy__sample_dp={"clip": 1e9, "noise_multiplier": 1e-20})
    exp = build_experiment(cfg, torch.device("cpu"))
    fed, client = exp.fed, exp.fed.clients[0]
    exp.privacy.sgd.vectorise = vectorise
    start = fed.layout.gather(fed.model)
    fed.fit(client)
    private = fed.layout.gather(fed.model)
    fed.layout.scatter(fed.model, start)
    fed.trainer.private = None
    del fed.data.batch  # the guard against reads outside DP-SGD: the plain fit reads the records in the clear
    fed.fit(client)
    assert torch.allclose(private, fed.layout.gather(fed.model), atol=1e-5)
    assert not torch.allclose(private, start)
