"""Models: Shuffle Attention by hand, Res2Net50-SA's communication cost, timm and local weights."""

from __future__ import annotations

import math

import pytest
import timm
import torch

from bench.engine.layout import StateLayout
from bench.errors import UserError
from bench.models import build_model, describe_init, resolve_model_config
from bench.models.res2net_sa import ShuffleAttention, channel_shuffle

PAPER_MB_PER_ROUND = 543.44  # FedLSC paper: Res2Net50-SA, 7 classes, 3 clients


def sigmoid(x: float) -> float:
    return 1 / (1 + math.exp(-x))


def test_channel_shuffle_interleaves_the_halves():
    x = torch.arange(8.0).view(1, 8, 1, 1)
    assert channel_shuffle(x, 2).flatten().tolist() == [0, 4, 1, 5, 2, 6, 3, 7]


def test_shuffle_attention_by_hand():
    sa = ShuffleAttention(channels=4, groups=1)  # one group: channel half = ch 0-1, spatial half = ch 2-3
    with torch.no_grad():
        sa.channel_weight.copy_(torch.tensor([1.0, 2.0]).view(1, 2, 1, 1))
        sa.channel_bias.zero_()
        sa.spatial_weight.fill_(3.0)
        sa.spatial_bias.zero_()
    x = torch.tensor([1.0, 2.0, 3.0, 4.0]).view(1, 4, 1, 1).expand(1, 4, 1, 2).contiguous()  # two equal pixels
    # channel branch: x * sigmoid(w * GAP(x) + b); spatial branch: GN of a constant map is 0 -> x * sigmoid(0)
    expected = [1 * sigmoid(1 * 1), 3 * 0.5, 2 * sigmoid(2 * 2), 4 * 0.5]  # after the shuffle
    torch.testing.assert_close(sa(x)[0, :, 0, 0], torch.tensor(expected), atol=2e-4, rtol=0)  # GN rounding / sqrt(eps)


def test_shuffle_attention_spatial_branch_uses_group_norm():
    sa = ShuffleAttention(channels=4, groups=1)
    with torch.no_grad():
        sa.spatial_weight.fill_(1.0)
        sa.spatial_bias.zero_()
    x = torch.zeros(1, 4, 1, 2)
    x[0, 2, 0] = torch.tensor([1.0, 3.0])  # GN -> (-1, 1) (up to eps)
    out = sa(x)[0, 1, 0]  # spatial channel 0 lands at position 1 after the shuffle
    torch.testing.assert_close(out, torch.tensor([1 * sigmoid(-1), 3 * sigmoid(1)]), atol=1e-4, rtol=0)


def test_shuffle_attention_starts_as_a_fixed_gate():
    sa = ShuffleAttention(channels=256, groups=64)
    x = torch.randn(2, 256, 3, 3)
    torch.testing.assert_close(sa(x), channel_shuffle(x * sigmoid(1.0), 2))


def test_res2net50_sa_matches_the_papers_communication_cost():
    model = build_model(resolve_model_config({"name": "res2net50_sa"}), num_classes=7, in_chans=3, image_size=224)
    layout = StateLayout(model)
    mb = 2 * 3 * layout.nbytes() / 2**20
    assert mb == pytest.approx(PAPER_MB_PER_ROUND, rel=0.005)
    assert isinstance(model.body.attention, ShuffleAttention)
    assert model.head.out_features == 7 and model.head.in_features == 2048
    with torch.no_grad():
        model.eval()
        assert model(torch.randn(1, 3, 64, 64)).shape == (1, 7)


def test_timm_models_by_name_and_local_weights(tmp_path):
    source = timm.create_model("resnet18", num_classes=1000)
    weights = tmp_path / "resnet18.pth"
    torch.save(source.state_dict(), weights)
    cfg = resolve_model_config({"name": "timm:resnet18", "weights": str(weights)})
    model = build_model(cfg, num_classes=5, in_chans=3, image_size=32)
    assert torch.equal(model.body.conv1.weight, source.conv1.weight)  # pretrained backbone
    assert model.head.out_features == 5  # new classifier
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 5)
    assert describe_init(cfg).endswith("loaded strictly: every tensor of the backbone (the file's classifier dropped); the classifier starts from random init")
    grey = build_model(cfg, num_classes=5, in_chans=1, image_size=32)  # the stem adapted to one channel, as timm does
    torch.testing.assert_close(grey.body.conv1.weight, source.conv1.weight.sum(dim=1, keepdim=True))
    random_init = build_model(resolve_model_config({"name": "timm:resnet18"}), 5, 3, 32)
    assert not torch.equal(random_init.body.conv1.weight, source.conv1.weight)


def test_res2net50_sa_loads_backbone_weights_from_a_local_file(tmp_path):
    source = timm.create_model("res2net50_26w_4s", num_classes=1000)
    weights = tmp_path / "res2net.pth"
    torch.save({"state_dict": source.state_dict()}, weights)
    model = build_model(resolve_model_config({"name": "res2net50_sa", "weights": str(weights)}), 7, 3, 64)
    assert torch.equal(model.body.backbone.conv1.weight, source.conv1.weight)


def timm_state(arch: str, edit=lambda state: state) -> dict:
    return edit(timm.create_model(arch).state_dict())


def swap_one_tensor(state: dict) -> dict:
    state = dict(state)
    state["extra.weight"] = state.pop("layer1.0.conv1.weight")
    return state


@pytest.mark.parametrize("name, state, message", [
    ("timm:test_resnet", timm_state("test_efficientnet"), r"\(\d+ missing key\(s\): .*; \d+ unexpected key\(s\): "),
    ("timm:test_resnet", timm_state("test_resnet", swap_one_tensor), r"\(1 missing key\(s\): layer1.0.conv1.weight; 1 unexpected key\(s\): extra.weight\)"),
    ("res2net50_sa", timm_state("test_efficientnet"), r"\(\d+ missing key\(s\): .*; \d+ unexpected key\(s\): "),
])
def test_weights_that_do_not_fit_are_refused_naming_the_keys(tmp_path, name, state, message):
    # A lenient load would leave these tensors at random init while the run record says "pretrained".
    torch.save(state, tmp_path / "w.pt")
    cfg = resolve_model_config({"name": name, "weights": str(tmp_path / "w.pt")})
    with pytest.raises(UserError, match=r"config key 'model.weights': .*w.pt does not fit this model " + message):
        build_model(cfg, 4, 3, 32)


@pytest.mark.parametrize("size, widths", [(8, [8, 16, 32]), (64, [8, 16, 32, 64])])
def test_small_cnn_handles_tiny_and_larger_images(size, widths):
    model = build_model(resolve_model_config({"name": "small_cnn", "widths": widths}), 7, 1, size)
    assert model(torch.randn(2, 1, size, size)).shape == (2, 7)


def test_weights_path_stays_as_written_so_run_ids_travel(tmp_path, monkeypatch):
    from bench.config import run_id
    from conftest import tiny_config

    torch.save(build_model(resolve_model_config({"name": "small_cnn", "widths": [8, 16]}), 4, 3, 8).state_dict(), tmp_path / "w.pt")
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "elsewhere" / "w.pt").write_bytes((tmp_path / "w.pt").read_bytes())
    monkeypatch.setenv("FEDRANK_WEIGHTS_DIR", str(tmp_path))
    here = tiny_config(model__weights="${FEDRANK_WEIGHTS_DIR}/w.pt")
    assert here["model"]["weights"] == "${FEDRANK_WEIGHTS_DIR}/w.pt"
    monkeypatch.setenv("FEDRANK_WEIGHTS_DIR", str(tmp_path / "elsewhere"))
    assert run_id(tiny_config(model__weights="${FEDRANK_WEIGHTS_DIR}/w.pt")) == run_id(here)
    model = build_model(here["model"], 4, 3, 8)
    assert torch.equal(model.head.weight, torch.load(tmp_path / "w.pt")["head.weight"])
