"""DEeR, FFA-LoRA and FedAvg-LoRA against hand-computed values: the LoRA layer, the aggregation
deviation (zero for DEeR's alternating factors), the stages, clipping, the noise regulator's two
factors and the measured noise on the product and on the aggregate."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from bench.engine.federation import Update, Updates
from bench.engine.setup import build_experiment
from bench.engine.trainer import FitResult
from bench.errors import UserError
from bench.methods.deer import clip_rows, lora_deviation, regulated_noise
from bench.models.lora import A, B, LoRALinear, adapter_keys, add_lora
from conftest import tiny_config
from bench.testing import needs

CPU = torch.device("cpu")
FIT = FitResult(steps=1, samples=1, loss=0.0)


def experiment(method: str, **overrides):
    exp = build_experiment(tiny_config(method=method, **needs(method), **overrides), CPU)
    exp.method.setup(exp.fed)
    exp.method.prepare(exp.fed)
    return exp


def test_lora_linear_adds_the_scaled_low_rank_product():
    # W = I, b = 0, A = [1 2], B = [1 0]^T, alpha / r = 2 / 1: x = [1, 1] -> Wx = [1, 1], BAx = [3, 0], out = [1 + 6, 1]
    base = nn.Linear(2, 2)
    with torch.no_grad():
        base.weight.copy_(torch.eye(2))
        base.bias.zero_()
    layer = LoRALinear(base, rank=1, alpha=2.0)
    assert torch.equal(layer.lora_b, torch.zeros(2, 1))  # B starts at zero: the adapted layer is the frozen one
    torch.testing.assert_close(layer(torch.ones(1, 2)), base(torch.ones(1, 2)))
    with torch.no_grad():
        layer.lora_a.copy_(torch.tensor([[1.0, 2.0]]))
        layer.lora_b.copy_(torch.tensor([[1.0], [0.0]]))
    torch.testing.assert_close(layer(torch.ones(1, 2)), torch.tensor([[7.0, 1.0]]))


def test_add_lora_freezes_the_body_and_refuses_a_body_without_targets():
    body = nn.Sequential(nn.Linear(4, 4), nn.ReLU())
    body[0].qkv = nn.Linear(4, 4)
    assert add_lora(body, ("qkv",), 2, 2.0) == ["0.qkv"]
    trainable = {name for name, p in body.named_parameters() if p.requires_grad}
    assert trainable == {"0.qkv.lora_a", "0.qkv.lora_b"}
    with pytest.raises(UserError, match="no Linear layer"):
        add_lora(nn.Sequential(nn.Conv2d(3, 3, 1)), ("qkv",), 2, 2.0)


def test_deviation_by_hand():
    # A1 = [1 0], A2 = [0 1], B1 = [1 0]^T, B2 = [0 1]^T: mean B_i A_i = I/2, mean B mean A = 1/4 everywhere,
    # difference [[1/4, -1/4], [-1/4, 1/4]]: squared Frobenius norm 4/16 = 1/4
    a = torch.tensor([[[1.0, 0.0]], [[0.0, 1.0]]])
    b = torch.tensor([[[1.0], [0.0]], [[0.0], [1.0]]])
    assert lora_deviation(a, b).item() == 0.25
    # one factor shared (DEeR's B stage: A frozen; its A stage: B frozen): no deviation
    assert lora_deviation(a[:1].expand(2, -1, -1), b).item() == 0.0
    assert lora_deviation(a, b[:1].expand(2, -1, -1)).item() == 0.0


def reports(fed, moved: tuple[str, ...], scale: float = 0.1) -> Updates:
    """Every client uploads the global state with its own random change to the `moved` factors and the head."""
    generator = torch.Generator().manual_seed(1)
    change = fed.layout.expand(fed.layout.layers_where(lambda k: k.startswith("head.") or k.rpartition(".")[2] in moved))
    rows = []
    for client in fed.clients:
        fed.slots[client.id] = client.id
        rows.append(fed.global_state + change * scale * torch.randn(fed.layout.size, generator=generator))
    fed.uploads[: len(rows)] = torch.stack(rows)
    return Updates(fed.uploads[: len(rows)], [Update(c.id, c.num_samples, FIT) for c in fed.clients])


def at_round(exp, r: int):
    """The experiment's federation at round r with every client sampled."""
    from bench.engine.participation import draw_round

    fed = exp.fed
    fed.round, fed.plan = r, draw_round(fed.config["train"], fed.config["seed"], r, len(fed.clients))
    return fed


def adapters(fed, state: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
    views = fed.layout.views(state)
    return [(views[a], views[b]) for a, b in adapter_keys(fed.layout.keys)]


@pytest.mark.parametrize("stage_round, moved", [(1, (B,)), (2, (A,))])
def test_deer_aggregate_of_products_is_the_product_of_aggregates(stage_round, moved):
    exp = experiment("deer")
    fed, method = exp.fed, exp.method
    fed.round = stage_round
    trained = {k.rpartition(".")[2] for k, chosen in zip(fed.layout.keys, method.aggregated_layers(fed).tolist()) if chosen and "lora" in k}
    assert trained == set(moved)  # odd rounds B, even rounds A
    if stage_round == 2:  # give B a value, as round 1 would have
        fed.global_state = reports(fed, (B,)).states[0].clone()
    updates = reports(fed, moved)
    new_state = method.aggregate(fed, updates)
    clients = [adapters(fed, row) for row in updates.states]
    for k, (a, b) in enumerate(adapters(fed, new_state)):
        mean_product = torch.stack([cb @ ca for ca, cb in (c[k] for c in clients)]).mean(0)
        torch.testing.assert_close(b @ a, mean_product, rtol=1e-5, atol=1e-7)
    assert fed.diagnostics[-1]["name"] == "lora/deviation" and fed.diagnostics[-1]["values"].item() < 1e-6


def test_fedavg_lora_has_a_deviation_and_ffa_lora_none():
    for method_name, expect_deviation in [("fedavg_lora", True), ("ffa_lora", False)]:
        exp = experiment(method_name)
        fed = exp.fed
        fed.round = 1
        fed.global_state = reports(fed, (B,)).states[0].clone()  # B non-zero, so moving A moves the product
        exp.method.aggregate(fed, reports(fed, exp.method.trained_factors(fed)))  # what each trains: (A, B), (B,)
        deviation = next(d["values"].item() for d in fed.diagnostics if d["name"] == "lora/deviation")
        assert (deviation > 1e-4) == expect_deviation, method_name


def test_ffa_lora_never_uploads_a_and_deer_downloads_both_factors():
    ffa, deer = experiment("ffa_lora"), experiment("deer")
    for exp in (ffa, deer):
        exp.fed.round = 1
    ffa_keys = {k for k, up in zip(ffa.fed.layout.keys, ffa.method.uploaded_layers(ffa.fed, ffa.fed.clients[0]).tolist()) if up}
    assert ffa_keys and all(k.startswith("head.") or k.endswith(B) for k in ffa_keys)
    down = {k for k, d in zip(deer.fed.layout.keys, deer.method.received_layers(deer.fed, deer.fed.clients[0]).tolist()) if d}
    assert any(k.endswith(A) for k in down) and any(k.endswith(B) for k in down) and not any(k.endswith("qkv.base.weight") for k in down)


def test_clipping_by_hand():
    clipped, flags = clip_rows(torch.tensor([[3.0, 4.0], [0.3, 0.4]]), 1.0)
    torch.testing.assert_close(clipped, torch.tensor([[0.6, 0.8], [0.3, 0.4]]))
    assert flags.tolist() == [True, False]
    assert (clipped.norm(dim=1) <= 1.0 + 1e-6).all()


def test_noise_regulator_factors_by_hand():
    noise = torch.tensor([[1.0, 2.0], [3.0, 4.0]])
    # A's factor pinv(B) with B = [2 0]^T: pinv(B) = [1/2 0], N_A = [1/2 1]; B N_A = [[1, 2], [0, 0]] = N projected on B's column
    b = torch.tensor([[2.0], [0.0]])
    torch.testing.assert_close(regulated_noise(noise, b, A), torch.tensor([[0.5, 1.0]]))
    torch.testing.assert_close(b @ regulated_noise(noise, b, A), torch.tensor([[1.0, 2.0], [0.0, 0.0]]))
    torch.testing.assert_close((10 * b) @ regulated_noise(noise, 10 * b, A), torch.tensor([[1.0, 2.0], [0.0, 0.0]]))  # no growth with B
    # B's factor pinv(A) with A = [0 3]: pinv(A) = [0 1/3]^T, N_B = [2/3 4/3]^T; N_B A = [[0, 2], [0, 4]] = N projected on A's row
    a = torch.tensor([[0.0, 3.0]])
    torch.testing.assert_close(regulated_noise(noise, a, B), torch.tensor([[2 / 3], [4 / 3]]))
    torch.testing.assert_close(regulated_noise(noise, a, B) @ a, torch.tensor([[0.0, 2.0], [0.0, 4.0]]))


def test_the_regulator_keeps_the_product_noise_at_the_projection_where_plain_noise_grows_with_the_peer():
    # out = 6, r = 2, in = 5, B with singular values 10 and 10: per element std s,
    #   regulated: E||B N_A||^2 = E||P_B N||^2 = r * in * s^2 = 10 s^2
    #   plain:     E||B N_A||^2 = ||B||_F^2 * in * s^2 = 200 * 5 s^2 = 1000 s^2
    exp = experiment("deer", method__noise_multiplier=1.0)
    method, s = exp.method, 0.5
    b = torch.zeros(6, 2)
    b[0, 0] = b[1, 1] = 10.0
    peers = {"blk.qkv.lora_b": b}
    generator = torch.Generator().manual_seed(0)
    draws = 4000
    regulated = torch.stack([b @ method.noise_of("blk.qkv.lora_a", torch.Size([2, 5]), peers, s, generator) for _ in range(draws)])
    plain = torch.stack([b @ torch.randn(2, 5, generator=generator) * s for _ in range(draws)])
    assert regulated.pow(2).sum((1, 2)).mean().item() == pytest.approx(2 * 5 * s ** 2, rel=0.05)
    assert plain.pow(2).sum((1, 2)).mean().item() == pytest.approx(200 * 5 * s ** 2, rel=0.05)
    method.noise_regulator = False
    unregulated = torch.stack([b @ method.noise_of("blk.qkv.lora_a", torch.Size([2, 5]), peers, s, generator) for _ in range(draws)])
    assert unregulated.pow(2).sum((1, 2)).mean().item() == pytest.approx(200 * 5 * s ** 2, rel=0.05)


def test_dp_noise_on_the_aggregate_has_std_sigma_clip_over_k():
    # clients upload the global state (no update), so the new state minus the old is the mean of K
    # per-client noises of std sigma C / sqrt(K): std sigma C / K = 2 * 0.5 / 3 on every uploaded element
    exp = experiment("fedavg_lora", method__noise_multiplier=2.0, method__clip=0.5, method__rank=16)
    fed = at_round(exp, 1)
    updates = reports(fed, (), scale=0.0)
    change = exp.method.aggregate(fed, updates) - fed.global_state
    uploaded = fed.layout.expand(exp.method.aggregated_layers(fed))
    assert uploaded.sum() > 1000 and (change[~uploaded] == 0).all()
    assert change[uploaded].std().item() == pytest.approx(2 * 0.5 / len(fed.clients), rel=0.08)
    assert change[uploaded].mean().item() == pytest.approx(0.0, abs=4 * 2 * 0.5 / 3 / math.sqrt(uploaded.sum().item()))


def test_the_small_vit_loads_weights_strictly_and_refuses_other_options(tmp_path):
    from bench.models import build_model, resolve_model_config

    source = build_model(resolve_model_config({"name": "vit", "embed_dim": 16, "depth": 1}), 3, 3, 8)
    weights = tmp_path / "vit.pth"
    torch.save({**source.body.state_dict(), "head.weight": torch.ones(10, 16), "head.bias": torch.ones(10)}, weights)  # timm's layout; head dropped
    loaded = build_model(resolve_model_config({"name": "vit", "embed_dim": 16, "depth": 1, "weights": str(weights)}), 5, 3, 8)
    assert all(torch.equal(v, source.body.state_dict()[k]) for k, v in loaded.body.state_dict().items())
    with pytest.raises(UserError, match="does not fit this model"):
        build_model(resolve_model_config({"name": "vit", "embed_dim": 16, "depth": 2, "weights": str(weights)}), 5, 3, 8)
    with pytest.raises(UserError, match="not a multiple of patch_size"):
        build_model(resolve_model_config({"name": "vit"}), 5, 3, 10)


def diagnostics(fed) -> dict[str, float]:
    return {d["name"]: float(d["values"]) for d in fed.diagnostics if d["name"].startswith("dp/")}


def test_plain_dp_noise_is_accounted_as_a_gaussian_of_sigma_per_round():
    """FedAvg-LoRA's noise, sigma C on the sum of updates clipped to C, every client every round
    (q = 1): epsilon after round r is the Gaussian mechanism's of sigma composed r times."""
    privacy = pytest.importorskip("bench.engine.privacy")
    pytest.importorskip("opacus")
    exp = experiment("fedavg_lora", method__noise_multiplier=2.0, method__clip=0.5)
    for r in (1, 2):
        fed = at_round(exp, r)
        fed.diagnostics.clear()
        exp.method.aggregate(fed, reports(fed, (A, B)))
        recorded = diagnostics(fed)
        assert recorded["dp/noise_multiplier"] == 2.0
        assert recorded["dp/epsilon"] == pytest.approx(privacy.epsilon(2.0, 1.0, r, 1e-5), rel=1e-6)  # recorded in float32


def test_the_regulated_noise_s_floor_is_sigma_over_the_peer_s_largest_singular_value():
    """A's noise pinv(B) N has covariance s^2 (B^T B)^-1: with B's singular values 4 and 0.5 its
    smallest std is s / 4 (floor 1/4); singular values 0.5 and 0.25 give more noise than s in every
    direction (floor 1); a zero singular value leaves a direction unnoised (floor 0, epsilon infinite)."""
    pytest.importorskip("opacus")
    exp = experiment("deer", method__noise_multiplier=1.0, method__rank=2)
    fed = at_round(exp, 2)  # even round: A trains, its peer is B
    views = fed.layout.views(fed.global_state)
    b_keys = [key for key in fed.layout.keys if key.endswith("." + B)]
    for singular, floor in (((4.0, 0.5), 0.25), ((0.5, 0.25), 1.0), ((1.0, 0.0), 0.0)):
        for key in b_keys:
            out, r = views[key].shape
            peer = torch.zeros(out, r)
            for i, value in enumerate(singular):
                peer[i, i] = value
            views[key].copy_(peer)
        assert exp.method.noise_floor(fed) == pytest.approx(floor)
    fed.diagnostics.clear()
    exp.method.aggregate(fed, reports(fed, (A,)))
    assert diagnostics(fed)["dp/noise_multiplier"] == 0.0 and math.isinf(diagnostics(fed)["dp/epsilon"])
    exp.method.noise_regulator = False
    assert exp.method.noise_floor(fed) == 1.0
