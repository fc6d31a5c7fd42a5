"""Issue 11, systems A: FusedSpaceFed (+ FedAvg's gradient dissimilarity), PRR-FL, pFL-ResFIM and
CKSP, each equation against values worked out by hand in the comments."""

from __future__ import annotations

import math

import pandas as pd
import pytest
import torch
from torch import nn

from bench.engine.federation import Update
from bench.engine.run import Progress, RunPaths, execute, play_round
from bench.engine.setup import build_experiment
from bench.engine.trainer import Batch, FitResult
from bench.methods import cksp, fusedspacefed, prrfl, pflresfim
from bench.methods.fourier import centred
from bench.testing import report
from conftest import tiny_config

CPU = torch.device("cpu")
FIT = FitResult(steps=1, samples=1, loss=0.0)


def experiment(method: str, **overrides):
    """A fresh run's experiment, set up as the engine does before round 1."""
    exp = build_experiment(tiny_config(method=method, **overrides), CPU)
    exp.method.setup(exp.fed)
    exp.method.prepare(exp.fed)
    return exp


def batch(logits, y, x=None) -> Batch:
    logits = torch.tensor(logits, dtype=torch.float32)
    x = torch.zeros(len(logits), 1) if x is None else torch.tensor(x, dtype=torch.float32)
    return Batch(x, torch.tensor(y), torch.arange(len(logits)), logits, logits, {}, 0, 0)


def keys_of(fed, mask) -> list[str]:
    return [k for k, chosen in zip(fed.layout.keys, mask.tolist()) if chosen]


def play(exp, rounds: int) -> None:
    for r in range(1, rounds + 1):
        exp.fed.round = r
        play_round(exp, Progress())


# ---- FusedSpaceFed -------------------------------------------------------------------------------
def test_gradient_dissimilarity_both_forms_by_hand():
    # g = (3, 0), (1, 2), (2, 1): g_bar = (2, 1); deviations (1, -1), (-1, 1), (0, 0): Gamma = (2 + 2 + 0) / 3 = 4/3
    # ||g_i||^2 = 9, 5, 5 -> mean 19/3; ||g_bar||^2 = 5: Gamma_B = 19/15 = 1 + Gamma / ||g_bar||^2
    g = torch.tensor([[3.0, 0.0], [1.0, 2.0], [2.0, 1.0]])
    assert fusedspacefed.gradient_dissimilarity(g).item() == pytest.approx(4 / 3)
    assert fusedspacefed.gradient_dissimilarity_ratio(g).item() == pytest.approx(19 / 15)


class OneLinear(nn.Module):
    def __init__(self):
        super().__init__()
        self.w = nn.Linear(1, 2, bias=False)
        nn.init.zeros_(self.w.weight)

    def forward(self, x):
        return self.w(x)


class Fake:
    """Just what mean_gradient and diagonal_fisher's callers read of a federation."""

    def __init__(self, model, x, y):
        self.model, self.x, self.y = model, torch.tensor(x), torch.tensor(y)
        self.config = {"eval": {"batch_size": 1}}
        self.data = self

    def model_of(self, client):
        return self.model

    def batch(self, index):
        return self.x[index], self.y[index]


def test_mean_gradient_is_the_mean_cross_entropy_gradient_over_the_split():
    # W = 0: p = (1/2, 1/2); dCE/dW = (p - e_y) x: x = 2, y = 0 -> (-1, 1); x = 4, y = 1 -> (2, -2); mean (0.5, -0.5)
    model = OneLinear()
    fed = Fake(model, [[2.0], [4.0]], [0, 1])
    client = type("C", (), {"train": torch.arange(2)})()
    torch.testing.assert_close(fusedspacefed.mean_gradient(fed, client, list(model.parameters())), torch.tensor([0.5, -0.5]))


def test_fused_loss_adds_the_weighted_reconstruction_error():
    # CE([0, 0], 0) = ln 2; MSE((1, 2), (1, 0)) = (0 + 4) / 2 = 2; lambda 0.5: ln 2 + 1
    b = batch([[0.0, 0.0]], [0], x=[[1.0, 0.0]])
    assert fusedspacefed.fused_loss(b, torch.tensor([[1.0, 2.0]]), 0.5).item() == pytest.approx(math.log(2) + 1)


def test_the_composite_fuses_x_with_its_reconstruction_and_keeps_the_encoder_personal():
    exp = experiment("fusedspacefed", method__dz=3, method__width=2)
    fed, model = exp.fed, exp.fed.model
    x = torch.randn(2, 3, 7, 7)  # odd sides: the decoder restores each skip's size
    ae = model.body.autoencoder
    assert ae(x).shape == x.shape
    torch.testing.assert_close(model(x), model.head(model.body.classifier(x + ae(x))))
    encoder = keys_of(fed, exp.method.personal_layers(fed))
    assert encoder and all(k.startswith("body.autoencoder.encoder.") for k in encoder)
    assert set(fed.layout.keys) - set(encoder) >= {"body.autoencoder.decoder.final.weight", "body.classifier.0.weight", "head.weight"}
    assert exp.method.download_bytes(fed, fed.clients[0]) == fed.layout.nbytes() - fed.layout.nbytes(exp.method.personal_layers(fed))
    # classification gradients reach the encoder and the decoder through D(E(x))
    nn.functional.cross_entropy(model(x), torch.tensor([0, 1])).backward()
    assert ae.encoder.enc1[0].weight.grad.abs().sum() > 0 and ae.decoder.final.weight.grad.abs().sum() > 0


def test_the_warm_up_trains_only_the_encoder_against_the_frozen_decoder():
    exp = experiment("fusedspacefed", method__dz=3, method__width=2)
    fed = exp.fed
    fed.round = 1
    before = fed.layout.gather(fed.model)
    exp.method.warm_up(fed, fed.clients[0], fed.model.body.autoencoder)
    moved = (fed.layout.gather(fed.model) != before)
    changed = {k for k, m in zip(fed.layout.keys, fed.layout.split(moved)) if m.any()}
    assert changed and all(k.startswith("body.autoencoder.encoder.") for k in changed)


def test_fedavg_gamma_trains_exactly_as_fedavg_and_records_gamma_every_round(tmp_path):
    runs = {m: execute(tiny_config(method=m, train__rounds=2), tmp_path / m, show_progress=False) for m in ("fedavg", "fedavg_gamma")}
    metrics = {m: pd.read_parquet(RunPaths(tmp_path / m).metrics).drop(columns="run_id") for m in runs}
    pd.testing.assert_frame_equal(metrics["fedavg"], metrics["fedavg_gamma"], check_exact=True)
    diag = pd.read_parquet(RunPaths(tmp_path / "fedavg_gamma").diagnostics)
    gamma = diag[diag["name"] == "gradient_dissimilarity"]
    ratio = diag[diag["name"] == "gradient_dissimilarity_ratio"].set_index("round")["value"]
    assert gamma["round"].tolist() == [1, 2] and (gamma["value"] > 0).all() and (ratio >= 1).all()


def test_gamma_is_probed_only_on_due_rounds():
    exp = experiment("fedavg_gamma", method__gamma_every=2)
    fed, client = exp.fed, exp.fed.clients[0]
    fed.round = 1
    assert exp.method.probe(fed, client, list(fed.model.parameters())) is None
    fed.round = 2
    assert exp.method.probe(fed, client, list(fed.model.parameters())).shape == (sum(p.numel() for p in fed.model.parameters()),)


# ---- PRR-FL --------------------------------------------------------------------------------------
def test_the_band_grows_from_start_towards_end():
    # L_t = 0.7 + (t - 1) / 50 * 0.25: t = 1 -> 0.7, t = 26 -> 0.825, t = 50 -> 0.945
    assert [prrfl.progressive_band(0.7, 0.95, t, 50) for t in (1, 26, 50)] == pytest.approx([0.7, 0.825, 0.945])


def test_a_convolution_weight_becomes_the_reference_matrix_and_back():
    # (N=2, C=1, kh=1, kw=2), filters n0 = (a, b), n1 = (c, d): permute (C, kh, kw, N) -> row (a, c, b, d)
    w = torch.tensor([[[[1.0, 2.0]]], [[[3.0, 4.0]]]])
    matrix = prrfl.as_matrix(w.unsqueeze(0))
    assert matrix.tolist() == [[[1.0, 3.0, 2.0, 4.0]]]
    assert torch.equal(prrfl.from_matrix(matrix, w.shape)[0], w)


def test_fourier_average_of_2x2_matrices_by_hand():
    # 2 x 2 FFT: F00 = a+b+c+d, F01 = a-b+c-d, F10 = a+b-c-d, F11 = a-b-c+d (all real)
    # X1 = [[1, 0], [0, 0]]: F = 1 everywhere (phase 0); X2 = [[0, 0], [0, -2]]: F = [[-2, 2], [2, -2]] (phase pi, 0, 0, pi)
    # band 1 averages every amplitude: 1.5 everywhere, each keeps its phase:
    # X1' = IFFT(1.5) = [[1.5, 0], [0, 0]];  X2' = IFFT([[-1.5, 1.5], [1.5, -1.5]]) = [[0, 0], [0, -1.5]]
    out = prrfl.fourier_average(torch.tensor([[[1.0, 0.0], [0.0, 0.0]], [[0.0, 0.0], [0.0, -2.0]]]), band=1.0)
    torch.testing.assert_close(out, torch.tensor([[[1.5, 0.0], [0.0, 0.0]], [[0.0, 0.0], [0.0, -1.5]]]), rtol=0, atol=1e-6)


def test_fourier_average_touches_only_the_low_band():
    # 4 x 4, band 0.5: half = floor(4 * 0.5 / 2) = 1, centred rows/cols 1..2 = frequencies -1, 0 (DC inside).
    # X1 = 0.5 + 0.1 checker, X2 = -1.5 + 0.5 checker: DC amplitudes 8 and 24 -> mean 16 = level 1, signs kept;
    # the checkerboard is the Nyquist frequency (2, 2), centred index 0: outside the band, untouched.
    ones, checker = torch.ones(4, 4), (-1.0) ** (torch.arange(4).view(-1, 1) + torch.arange(4))
    out = prrfl.fourier_average(torch.stack([0.5 * ones + 0.1 * checker, -1.5 * ones + 0.5 * checker]), band=0.5)
    torch.testing.assert_close(out, torch.stack([ones + 0.1 * checker, -ones + 0.5 * checker]), rtol=0, atol=1e-6)
    # a band too small for any row (floor(4 * 0.4 / 2) = 0) changes nothing
    same = torch.randn(2, 4, 4)
    torch.testing.assert_close(prrfl.fourier_average(same, band=0.4), same, rtol=0, atol=1e-6)
    assert centred(4, 1, 1) == slice(1, 3)


@pytest.mark.parametrize("stage, f1_deputy, expected", [
    (prrfl.RECOVER, 0.5, prrfl.RECOVER),        # 0.5 < 0.7 x 1
    (prrfl.RECOVER, 0.95, prrfl.EXCHANGE),      # after Recover always Exchange, even above alpha2
    (prrfl.EXCHANGE, 0.8, prrfl.EXCHANGE),      # 0.7 <= 0.8 < 0.9
    (prrfl.EXCHANGE, 0.9, prrfl.SUBLIMATE),     # >= 0.9 x 1
    (prrfl.SUBLIMATE, 0.95, prrfl.SUBLIMATE),
    (prrfl.SUBLIMATE, 0.8, prrfl.EXCHANGE),
    (prrfl.SUBLIMATE, 0.6, prrfl.RECOVER),
])
def test_det_stage_transitions(stage, f1_deputy, expected):
    assert prrfl.next_stage(stage, f1_deputy, 1.0, alpha1=0.7, alpha2=0.9) == expected


def test_transfer_loss_by_hand():
    # self logits (0, 0), teacher (ln 3, 0): q_t = (3/4, 1/4), y = 0
    # CE = ln 2; KL(q_t || q_s) = 3/4 ln(3/2) + 1/4 ln(1/2) = 0.130812
    teacher = torch.tensor([[math.log(3), 0.0]], requires_grad=True)
    b = batch([[0.0, 0.0]], [0])
    b.outputs = {"teacher": (None, teacher)}
    assert prrfl.transfer_loss(b, "teacher", learns=False).item() == pytest.approx(math.log(2))
    loss = prrfl.transfer_loss(b, "teacher", learns=True)
    assert loss.item() == pytest.approx(math.log(2) + 0.75 * math.log(1.5) + 0.25 * math.log(0.5), rel=1e-6)
    assert not loss.requires_grad  # the teacher is detached (and the student's logits here are constants)


def test_det_chooses_a_stage_per_epoch_from_the_training_f1(monkeypatch):
    exp = experiment("prrfl", train__local_epochs=3)
    fed, client = exp.fed, exp.fed.clients[0]
    fed.round = 1
    scripted = iter([0.5, 1.0, 0.95, 1.0])  # epoch 1: deputy, personal; epoch 2: deputy, personal
    monkeypatch.setattr(prrfl, "training_f1", lambda fed, model, client: next(scripted))
    seen = []
    real = prrfl.transfer_loss
    monkeypatch.setattr(prrfl, "transfer_loss", lambda b, teacher, learns: seen.append((b.epoch, teacher, learns)) or real(b, teacher, learns))
    exp.method.receive(fed, client)
    fit = exp.method.train(fed, client)
    by_epoch = {e: {(t, l) for (ep, t, l) in seen if ep == e} for e in range(3)}
    assert by_epoch[0] == by_epoch[1] == {("deputy", False), ("personal", True)}  # Recover, then Recover (0.5 < 0.7)
    assert by_epoch[2] == {("deputy", True), ("personal", True)}  # Exchange after Recover (0.95 >= 0.7)
    assert fit.extra["stage"] == prrfl.EXCHANGE and set(fit.losses) == {"personal", "deputy"}
    torch.testing.assert_close(fed.layout.gather(exp.method.client_model(fed, client)), client.state["personal_model"])


def test_one_local_epoch_is_mutual_learning():
    exp = experiment("prrfl")
    exp.fed.round = 1
    exp.method.receive(exp.fed, exp.fed.clients[0])
    assert exp.method.train(exp.fed, exp.fed.clients[0]).extra["stage"] == prrfl.EXCHANGE


def test_pfa_aggregate_gives_each_client_its_own_weights_and_keeps_batchnorm_local():
    exp = experiment("prrfl")
    fed, method = exp.fed, exp.method
    fed.round, rounds = 3, fed.config["train"]["rounds"]
    states = fed.global_state + torch.randn(3, fed.layout.size)
    new = method.aggregate(fed, report(fed, states, [10, 20, 30], extras=[{"stage": 2}] * 3))
    views = {i: fed.layout.views(fed.to_clients[i]) for i in range(3)}
    sent = [fed.layout.views(s) for s in states]
    band = prrfl.progressive_band(0.7, 0.95, 3, rounds)
    for key in ("body.0.weight", "head.weight"):
        mixed = prrfl.from_matrix(prrfl.fourier_average(prrfl.as_matrix(torch.stack([s[key] for s in sent])), band), sent[0][key].shape)
        for i in range(3):
            torch.testing.assert_close(views[i][key], mixed[i])
    for i in range(3):  # not a Fourier layer: the uniform mean (not sample-weighted)
        torch.testing.assert_close(views[i]["head.bias"], sum(s["head.bias"] for s in sent) / 3)
    norms = method.personal_layers(fed)
    assert keys_of(fed, norms) == ["body.1.weight", "body.1.bias", "body.1.running_mean", "body.1.running_var",
                                   "body.5.weight", "body.5.bias", "body.5.running_mean", "body.5.running_var"]
    torch.testing.assert_close(fed.layout.select(new, norms), fed.layout.select(fed.global_state, norms))
    assert method.download_bytes(fed, fed.clients[0]) == fed.layout.nbytes(~norms)


# ---- pFL-ResFIM ----------------------------------------------------------------------------------
def test_the_low_band_box_is_feddgs_and_fits_the_image():
    # 32 px, band 0.1: b = floor(3.2) = 3, centre 16: rows 13..19; 4 px, band 0.5: b = min(2, (4 - 1) // 2) = 1
    assert pflresfim.low_band(32, 32, 0.1) == (slice(13, 20), slice(13, 20))
    assert pflresfim.low_band(4, 4, 0.5) == (slice(1, 4), slice(1, 4))


def test_restyle_interpolates_the_low_band_amplitude_by_hand():
    # 4 x 4, band 0.25: b = 1, centred rows/cols 1..3 = frequencies -1, 0, 1.
    # x = 0.5 + 0.1 checker: DC amplitude 16 x 0.5 = 8; style 0.7 x ones: its low band is DC 11.2, zeros around;
    # lam = 1/4: DC' = 3/4 x 8 + 1/4 x 11.2 = 8.8 -> level 0.55; the checker (Nyquist, centred index 0) is outside
    ones, checker = torch.ones(4, 4), (-1.0) ** (torch.arange(4).view(-1, 1) + torch.arange(4))
    style = pflresfim.low_band_amplitude((0.7 * ones).view(1, 1, 4, 4), 0.25)
    expected_style = torch.zeros(1, 1, 3, 3)
    expected_style[0, 0, 1, 1] = 11.2
    torch.testing.assert_close(style, expected_style, rtol=0, atol=1e-5)
    out = pflresfim.restyle((0.5 * ones + 0.1 * checker).view(1, 1, 4, 4), style, torch.tensor([0.25]), 0.25)
    torch.testing.assert_close(out[0, 0], 0.55 * ones + 0.1 * checker, rtol=0, atol=1e-6)
    # the result is clipped to the pixel range: DC 16 x 0.5 towards 16 x 3 at lam = 1 -> level 3 -> 1
    bright = pflresfim.low_band_amplitude((3 * ones).view(1, 1, 4, 4), 0.25)
    torch.testing.assert_close(pflresfim.restyle((0.5 * ones).view(1, 1, 4, 4), bright, torch.tensor([1.0]), 0.25)[0, 0], ones)
    # lam = 0 keeps the image
    image = torch.rand(2, 3, 8, 8)
    torch.testing.assert_close(pflresfim.restyle(image, torch.rand(2, 3, 3, 3), torch.zeros(2), 0.2), image, rtol=0, atol=1e-6)


def test_diagonal_fisher_is_the_mean_squared_per_sample_gradient():
    # W = 0: per-sample dCE/dW = (p - e_y) x: x = 2, y = 0 -> (-1, 1), squared (1, 1); x = 4, y = 1 -> (2, -2), squared (4, 4)
    # mean (2.5, 2.5), in W's shape (2, 1)
    fisher = pflresfim.diagonal_fisher(OneLinear(), torch.tensor([[2.0], [4.0]]), torch.tensor([0, 1]), chunk=1)
    torch.testing.assert_close(fisher["w.weight"], torch.tensor([[2.5], [2.5]]))


def test_top_share_picks_the_largest_eligible_scores():
    # share 0.5 of 4 eligible = 2: scores 3 (index 1) and 2 (index 3); index 4 scores 9 but is a buffer
    mask = pflresfim.top_share(torch.tensor([0.5, 3.0, 1.0, 2.0, 9.0]), torch.tensor([True, True, True, True, False]), 0.5)
    assert mask.tolist() == [False, True, False, True, False]


def test_per_layer_ranking_keeps_the_share_of_every_layer():
    exp = experiment("pflresfim", method__share=0.25, method__per_layer=True)
    fed = exp.fed
    # scores grow with the element index, so a global ranking would pick only the head's elements;
    # per layer, each trainable layer keeps its round(0.25 x n) highest (its last ones), buffers none
    mask = exp.method.personal_mask(fed, torch.arange(fed.layout.size, dtype=torch.float32))
    for key, layer, n in zip(fed.layout.keys, fed.layout.split(mask), fed.layout.numels):
        trainable = "running" not in key
        assert int(layer.sum()) == (round(0.25 * n) if trainable else 0), key
        assert layer[n - int(layer.sum()):].all()
    # overall: round(0.25 x 1484 trainable) = 371 highest = head (64 + 4), body.5's weight and bias (16 + 16)
    # and the last 271 of body.4.weight (body.5's running statistics are buffers)
    exp.method.per_layer = False
    overall = exp.method.personal_mask(fed, torch.arange(fed.layout.size, dtype=torch.float32))
    assert int(overall.sum()) == 371 and int(fed.layout.views(overall)["body.4.weight"].sum()) == 271
    assert keys_of(fed, torch.stack([m.any() for m in fed.layout.split(overall)])) == ["body.4.weight", "body.5.weight", "body.5.bias", "head.weight", "head.bias"]


def test_masked_mean_by_hand():
    # e0 shared by both: (1 x 1 + 3 x 3) / 4 = 2.5; e1 only by client 2: 4; e2 only by client 1: 3; e3 by none: fallback 9
    states = torch.tensor([[1.0, 2.0, 3.0, 4.0], [3.0, 4.0, 5.0, 6.0]])
    masks = torch.tensor([[False, True, False, True], [False, False, True, True]])
    out = pflresfim.masked_mean(states, masks, torch.tensor([1.0, 3.0]), torch.full((4,), 9.0))
    assert out.tolist() == [2.5, 4.0, 3.0, 9.0]


def test_resfim_personal_elements_are_kept_loaded_and_not_sent():
    exp = experiment("pflresfim", method__share=0.2)
    fed, method = exp.fed, exp.method
    play(exp, 2)
    trainable = int(fed.trainable.sum())
    styles = {c: s.numel() * 4 for c, s in fed.server["styles"].items()}
    assert set(styles) == {0, 1, 2}
    for client in fed.clients:
        mask = client.state["mask"]
        assert int(mask.sum()) == round(0.2 * trainable) and not (mask & ~fed.trainable).any()  # never a buffer
        loaded = fed.layout.gather(method.client_model(fed, client))
        torch.testing.assert_close(loaded[mask], client.state["values"])
        torch.testing.assert_close(loaded[~mask], fed.global_state[~mask])
        # the server sends the shared elements (4 bytes each) and the two other clients' styles
        assert method.download_bytes(fed, client) == 4 * int((~mask).sum()) + sum(b for c, b in styles.items() if c != client.id)
    update = Update(0, 1, FIT, extra={"personal": fed.clients[0].state["mask"]})
    assert method.upload_bytes(fed, fed.clients[0], update) == 4 * int((~fed.clients[0].state["mask"]).sum()) + math.ceil(fed.layout.size / 8)


def test_residual_fisher_moves_with_the_style_and_is_zero_on_buffers():
    exp = experiment("pflresfim", method__band=0.0)
    fed, client = exp.fed, exp.fed.clients[0]
    fed.round = 2
    own = exp.method.own_styles(fed, client)  # band 0: only the DC, which re-styling then moves towards another image's
    assert own.shape == (exp.method.styles, 3, 1, 1)
    styles = pflresfim.low_band_amplitude(torch.zeros(1, 3, 8, 8), 0.0)  # a black image's DC is 0 ...
    residual = exp.method.residual_fisher(fed, client, styles)
    assert residual.abs().sum() > 0  # ... which moves every pixel: the Fisher changes
    assert (residual[~fed.trainable] == 0).all()


# ---- CKSP ----------------------------------------------------------------------------------------
def test_shared_preserved_conv_by_hand():
    # shared 1 x 1 weight 2, private down 3 then up 0 (initially): y = 2x; with up 0.5: y = 2x + 0.5 x 3x = 3.5x
    shared = nn.Conv2d(1, 1, 1, bias=False)
    nn.init.constant_(shared.weight, 2.0)
    conv = cksp.SharedPreservedConv(shared, rank=1)
    nn.init.constant_(conv.private[0].weight, 3.0)
    x = torch.tensor([[[[1.0, -2.0]]]])
    torch.testing.assert_close(conv(x), 2 * x)
    nn.init.constant_(conv.private[1].weight, 0.5)
    torch.testing.assert_close(conv(x), 3.5 * x)


def test_the_private_rank_is_capped_and_the_geometry_kept():
    # Conv2d(2, 3, 1): full rank min(3, 2 x 1) = 2 < 4
    conv = cksp.SharedPreservedConv(nn.Conv2d(2, 3, 1), rank=4)
    assert conv.private[0].out_channels == 2
    strided = cksp.SharedPreservedConv(nn.Conv2d(3, 8, 3, stride=2, padding=1), rank=2)
    x = torch.randn(1, 3, 9, 9)
    assert strided(x).shape == strided.shared(x).shape == (1, 8, 5, 5)


def test_cksp_starts_as_the_configured_model_with_private_low_rank_paths_and_batchnorm():
    plain, exp = experiment("fedavg"), experiment("cksp", method__rank=2)
    x = torch.randn(4, 3, 8, 8)
    plain.fed.model.eval(), exp.fed.model.eval()
    torch.testing.assert_close(exp.fed.model(x), plain.fed.model(x))  # same initial function for the seed
    fed = exp.fed
    personal = keys_of(fed, exp.method.personal_layers(fed))
    assert personal == ["body.0.private.0.weight", "body.0.private.1.weight", "body.1.weight", "body.1.bias", "body.1.running_mean",
                        "body.1.running_var", "body.4.private.0.weight", "body.4.private.1.weight", "body.5.weight", "body.5.bias",
                        "body.5.running_mean", "body.5.running_var"]
    assert fed.layout.views(fed.global_state)["body.4.private.0.weight"].shape == (2, 8, 3, 3)
    assert exp.method.upload_bytes(fed, fed.clients[0], None) == fed.layout.nbytes() - fed.layout.nbytes(exp.method.personal_layers(fed))
