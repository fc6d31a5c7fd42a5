"""PRR-FL (Chen et al., "Personalized Retrogress-Resilient Framework for Real-World Medical
Federated Learning", MICCAI 2021; reference code CityU-AIM-Group/PRR-FL): each client keeps a
personal model that never leaves it and a deputy that is communicated.

Server, Progressive Fourier Aggregation (PFA), for the weight of every convolution and linear
layer, with W_k the deputy of reporting client k (k = 1..K) as a 2-D matrix (a convolution
weight (N, C, kh, kw) as (C kh, kw N), server.py's permute(1, 2, 3, 0)):
  A_k e^{i P_k} = FFT2(W_k)                     amplitude A_k (centred by fftshift), phase P_k
  A_bar         = (1/K) sum_k A_k               uniform mean (the reference's client_weights = 1/K)
  A'_k          = A_bar inside the band, A_k outside; the band is the centred box of rows
                  h/2 - floor(h L_t / 2) .. h/2 + floor(h L_t / 2) - 1, and likewise for columns
  W'_k          = Re IFFT2(A'_k e^{i P_k})      client k's own aggregated weight (fed.to_clients)
  L_t           = L_0 + (t - 1) / T (L_end - L_0)   round t = 1..T: 0.7 -> 0.95 (main.py's pfa_rate)
Every other tensor except BatchNorm: the uniform mean (server.py); BatchNorm (weights and
statistics) stays with each deputy: never sent, aggregated or overwritten.

Client, Deputy-Enhanced Transfer (DET), before every local epoch e from the macro-F1 on the
client's training split of its deputy (f_d) and personal model (f_p) (local_train.py):
  stage_0 = Recover
  stage_e = Recover    if f_d < alpha1 f_p
          = Exchange   elif stage_{e-1} = Recover or f_d < alpha2 f_p
          = Sublimate  otherwise
With one local epoch the only epoch is Exchange (the reference's mutual learning for wk_iters < 2).
The two models train in lock-step on the same batches, each with its own optimizer; with
q_p, q_d their softmax outputs (the other model's detached) and KL(q || r) = sum q log(q / r):
  Recover:    L_p = CE(p)                   L_d = CE(d) + KL(q_p || q_d)
  Exchange:   L_p = CE(p) + KL(q_d || q_p)  L_d = CE(d) + KL(q_p || q_d)
  Sublimate:  L_p = CE(p) + KL(q_d || q_p)  L_d = CE(d)

Evaluated per client: the personal model (main.py tests `models`, never the deputies). Both
models start from the run's initial model (main.py deep-copies the server model into each).
The global state is the uniform mean of the deputies (BatchNorm excepted): what a client that
never reported starts its deputy from. Choices the paper leaves open, and their source:
BatchNorm and the Fourier layers are found by module type (the reference matches 'bn', 'conv' and
'linear' in key names); the F1 is computed in eval mode on un-augmented training images (the
reference's test() on the training loader); the optimizer and its schedule are fedrank's
`train` settings (the reference: SGD, lr 1e-2 halved every 5 rounds).
Hooks used: personal_layers (BatchNorm), setup, train, aggregate (fed.to_clients), client_model.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from bench.engine.evaluate import evaluate
from bench.engine.trainer import Batch, Learner
from bench.methods import Method, hparam, register
from bench.methods.fedbn import batchnorm_layers
from bench.methods.fourier import centred, centred_spectrum, from_centred_spectrum

RECOVER, EXCHANGE, SUBLIMATE = 1, 2, 3
FOURIER_MODULES = (nn.Conv2d, nn.Linear)


def progressive_band(start: float, end: float, round: int, rounds: int) -> float:
    """L_t: the share of each spectrum axis averaged in round t (1-based) of T."""
    return start + (round - 1) / rounds * (end - start)


def as_matrix(weights: torch.Tensor) -> torch.Tensor:
    """(K, out, in) linear weights as they are; (K, N, C, kh, kw) convolution weights as (K, C kh, kw N)."""
    if weights.dim() == 3:
        return weights
    k, n, c, kh, kw = weights.shape
    return weights.permute(0, 2, 3, 4, 1).reshape(k, c * kh, kw * n)


def from_matrix(matrices: torch.Tensor, shape: torch.Size) -> torch.Tensor:
    """The inverse of `as_matrix` for weights of `shape` (one client's)."""
    if len(shape) == 2:
        return matrices
    n, c, kh, kw = shape
    return matrices.reshape(-1, c, kh, kw, n).permute(0, 4, 1, 2, 3)


def fourier_average(matrices: torch.Tensor, band: float) -> torch.Tensor:
    """PFA of (K, h, w) matrices: the mean amplitude inside the centred band, each one's own
    amplitude outside it and its own phase everywhere (computed in float64, as the reference's numpy)."""
    amplitude, phase = centred_spectrum(matrices.double())
    h, w = matrices.shape[-2:]
    half_h, half_w = math.floor(h * band / 2), math.floor(w * band / 2)
    rows, cols = centred(h, half_h, half_h), centred(w, half_w, half_w)
    amplitude[:, rows, cols] = amplitude[:, rows, cols].mean(0)
    return from_centred_spectrum(amplitude, phase).to(matrices.dtype)


def next_stage(stage: int, f1_deputy: float, f1_personal: float, alpha1: float, alpha2: float) -> int:
    """DET's stage for the next epoch from the previous one and the two training F1 scores."""
    if f1_deputy < alpha1 * f1_personal:
        return RECOVER
    if stage == RECOVER or f1_deputy < alpha2 * f1_personal:
        return EXCHANGE
    return SUBLIMATE


def transfer_loss(batch: Batch, teacher: str, learns: bool) -> torch.Tensor:
    """CE, plus KL(q_teacher || q_self) with the teacher detached when this model learns from it."""
    loss = F.cross_entropy(batch.logits, batch.y)
    if not learns:
        return loss
    target = F.softmax(batch.outputs[teacher][1].detach(), dim=1)
    return loss + F.kl_div(F.log_softmax(batch.logits, dim=1), target, reduction="batchmean")


def training_f1(fed, model: nn.Module, client) -> float:
    """Macro-F1 of `model` on the client's training split; leaves the model in training mode."""
    f1 = evaluate(model, fed.data, client.train, fed.config["eval"]["batch_size"])["f1"]
    model.train()
    return f1


@register
@dataclass(kw_only=True)
class PRRFL(Method):
    """PRR-FL: per-client Fourier aggregation of deputies; a personal model learns from its deputy (DET)."""

    name = "prrfl"
    mean_of_updates = "its server returns each client its own Fourier-mixed model and reads each client's stage"
    private_training = "it scores each client's model on its training records (F1) outside DP-SGD to choose the stage"
    band_start: float = hparam(0.7, "share of each spectrum axis averaged in round 1 (PFA's L_0)", exclusiveMinimum=0, maximum=1)
    band_end: float = hparam(0.95, "share reached after the last round (L_end)", exclusiveMinimum=0, maximum=1)
    alpha1: float = hparam(0.7, "DET: Recover while the deputy's training F1 < alpha1 x the personal one", minimum=0)
    alpha2: float = hparam(0.9, "DET: Sublimate once the deputy's training F1 >= alpha2 x the personal one", minimum=0)
    norms: torch.Tensor | None = dataclasses.field(default=None, init=False, repr=False)
    fourier: list[int] | None = dataclasses.field(default=None, init=False, repr=False)

    def personal_layers(self, fed):
        if self.norms is None:
            self.norms = batchnorm_layers(fed)
        return self.norms

    def personalized(self, fed):
        return True

    def setup(self, fed):
        fed.server["initial"] = fed.global_state.clone()

    def fourier_layers(self, fed) -> list[int]:
        """Layer indices of the weights of every convolution and linear module."""
        if self.fourier is None:
            modules = {name for name, m in fed.model.named_modules() if isinstance(m, FOURIER_MODULES)}
            self.fourier = [i for i, key in enumerate(fed.layout.keys) if key.endswith(".weight") and key.rpartition(".")[0] in modules]
        return self.fourier

    def personal_model(self, fed, client) -> nn.Module:
        """The client's personal model loaded into the extra model object."""
        model = fed.extra_model("personal")
        fed.layout.scatter(model, client.state.get("personal_model", fed.server["initial"]))
        return model

    def client_model(self, fed, client):
        return self.personal_model(fed, client)

    def train(self, fed, client):
        personal, deputy = self.personal_model(fed, client), fed.model_of(client)
        stage = [RECOVER if fed.config["train"]["local_epochs"] > 1 else EXCHANGE]

        def choose(epoch: int) -> None:
            if epoch:
                stage[0] = next_stage(stage[0], training_f1(fed, deputy, client), training_f1(fed, personal, client), self.alpha1, self.alpha2)

        learners = [Learner(personal, name="personal", state_key="personal_optimizer",
                            loss=lambda batch: transfer_loss(batch, "deputy", learns=stage[0] != RECOVER)),
                    Learner(deputy, name="deputy", loss=lambda batch: transfer_loss(batch, "personal", learns=stage[0] != SUBLIMATE))]
        fit = fed.fit_together(client, learners, on_epoch=choose)
        client.state["personal_model"] = fed.layout.gather(personal)
        return dataclasses.replace(fit, extra={"stage": stage[0]})

    def aggregate(self, fed, updates):
        mean = updates.states.mean(0)
        rows = mean.expand_as(updates.states).clone()
        band = progressive_band(self.band_start, self.band_end, fed.round, fed.config["train"]["rounds"])
        sent, out = fed.layout.split(updates.states), fed.layout.split(rows)
        for i in self.fourier_layers(fed):
            shape = fed.layout.shapes[i]
            mixed = fourier_average(as_matrix(sent[i].view(-1, *shape)), band)
            out[i].copy_(from_matrix(mixed, shape).reshape(len(rows), -1))
        for client, row in zip(updates.clients, rows):
            fed.to_clients[client] = row.clone()
        stages = torch.full((len(fed.clients),), math.nan)
        stages[updates.clients] = torch.tensor([float(u.extra["stage"]) for u in updates.items])
        fed.record("pfa_band", torch.tensor(band), ())
        fed.record("det_stage", stages, ("client",))
        return self.shared_only(fed, mean)
