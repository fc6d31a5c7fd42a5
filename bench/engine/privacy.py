"""Privacy as a benchmark axis: any registered method under a privacy guarantee, with no method code.

The run config's `privacy` section wraps the round loop, as Flower's DP strategies wrap any
strategy (the method never knows):

* Client-level DP (DP-FedAvg, McMahan et al., ICLR 2018), `privacy.client_dp`: each reporting
  client's update (its upload minus what it received, over its uploaded layers) is clipped to L2
  norm C; N(0, sigma^2 C^2) is added to the sum of the clipped updates; the method's aggregation
  sees only the noisy mean, the sum divided by the number of clients sampled (McMahan et al.'s
  fixed-denominator estimator: one client moves it by at most C / m, whoever drops out). Every
  client weighs the same: sample-count weights would change a client's sensitivity. With
  `adaptive` (Andrew et al., NeurIPS 2021) C follows a quantile of the update norms (`AdaptiveClip`).
* Record-level DP-SGD (Abadi et al., CCS 2016), `privacy.sample_dp`: in every local fit on a
  client's own training split each example's gradient is clipped to C and N(0, sigma^2 C^2) is
  added to the batch's sum (`PrivateSGD`). BatchNorm, which mixes the examples of a batch, is
  replaced by GroupNorm of `group_size` channels per group (`group_norm`). Reading a client's training records
  anywhere else stops the run with one line (`guard_records`).
* Secure aggregation (Bonawitz et al., CCS 2017), `privacy.secure_aggregation`: the server sees
  only the sum of the reporting clients' uploads; the bytes add the protocol's messages
  (`secure_aggregation_bytes`).

Under client-level DP and secure aggregation the method's `aggregate` gets a `SumOnlyUpdates`:
reading one client's update stops the run with one line instead of giving a meaningless epsilon.
`Method.mean_of_updates` and `Method.private_training` declare up front what a method needs (so
an incompatible run stops before any file is written); `probe` derives the same by running each
mode on `synthetic`, and `python -m bench.engine.privacy` writes the derived table that `fedrank
methods` shows (bench/methods/privacy_compatibility.json; a test keeps it current).

Accountant: Opacus's RDP accountant: the Renyi DP of the Poisson-subsampled Gaussian mechanism
(Mironov, Talwar & Zhang 2019), composed over rounds or steps and turned into epsilon at delta with
Balle et al. (2020)'s conversion. Google's dp-accounting computes the same RDP bound; Opacus is
chosen because it is PyTorch's DP library and because
dp-accounting pins attrs < 24, which conflicts with requirements.lock. Sampling: the accountant
assumes each client (record) is sampled independently with rate q. fedrank samples a fixed number
m of the N clients per round (q = m / N; with full participation q = 1 and no amplification is
claimed, which is exact) and a client's local batches are shuffled fixed-size batches (q = batch
size / its training images). Accounting those as Poisson samples is the approximation Opacus makes
with a shuffling loader and most DP-FL papers make; captions say so.
"""

from __future__ import annotations

import functools
import importlib
import json
import logging
import math
import tempfile
import types
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch

from bench.engine.federation import MAIN, Updates
from bench.engine.seeds import derive_seed
from bench.engine.trainer import batches_per_epoch
from bench.compatibility import MODES, TABLE
from bench.errors import UserError

log = logging.getLogger("fedrank")

CLIENT_NOISE_STREAM = 0xDC11  # seed stream of the client-level noise (per round)
COUNT_NOISE_STREAM = 0xDC12  # seed stream of adaptive clipping's noise on the unclipped count (per round)
ADAPTIVE_CLIP = "client_dp_clip"  # the adaptive clip's key in the run's checkpointed privacy ledger
SAMPLE_NOISE_STREAM = 0xD5A3  # seed stream of DP-SGD's noise (per round, client and fit)
ACCOUNTANT = "Opacus RDP accountant (Poisson-subsampled Gaussian; epsilon by Balle et al. 2020's conversion)"
# Secure aggregation's message sizes (Bonawitz et al. 2017): a_K, a public key (256-bit elliptic-curve
# Diffie-Hellman), and a_S, one Shamir share of a 256-bit secret. Authenticated-encryption overhead is left out.
KEY_BYTES = 32
SHARE_BYTES = 32


# ---- the accountant -------------------------------------------------------------------------
def rdp_orders() -> list[float]:
    """Renyi orders: 1.25 to 10.75 by quarters (Opacus's default goes by tenths; the fractional
    orders cost most at large q), 11 to 63 (Opacus's), then up to 1024: a few releases at a large
    epsilon (a short federated run) have their best order above 63."""
    return [1 + x / 4 for x in range(1, 40)] + list(range(11, 64)) + list(range(64, 257, 8)) + [384, 512, 768, 1024]


def opacus(module: str) -> types.ModuleType:
    """An Opacus module, imported with the real torch._dynamo in place: Opacus imports torch.distributed,
    which fails half-way under the stand-in an uncompiled run starts with (bench/engine/dynamo.py)."""
    from bench.engine.dynamo import real_dynamo

    real_dynamo()
    return importlib.import_module(f"opacus.{module}")


@functools.lru_cache(maxsize=1024)
def rdp_per_step(noise_multiplier: float, sample_rate: float) -> tuple[float, ...]:
    """Renyi DP at each of `rdp_orders` of one subsampled Gaussian release (cached: a run asks for
    the same (sigma, q) every round, and the fractional orders take a second at large q)."""
    return tuple(opacus("accountants.analysis.rdp").compute_rdp(q=sample_rate, noise_multiplier=noise_multiplier, steps=1, orders=rdp_orders()))


def rdp_curve(noise_multiplier: float, sample_rate: float, steps: int) -> list[float]:
    """Renyi DP at each of `rdp_orders` of `steps` compositions (RDP adds up over compositions)."""
    return [steps * value for value in rdp_per_step(noise_multiplier, sample_rate)]


def epsilon(noise_multiplier: float, sample_rate: float, steps: int, delta: float) -> float:
    """Epsilon at delta after `steps` releases at sampling rate q with noise sigma (0 steps: 0)."""
    return 0.0 if steps == 0 else epsilon_of(rdp_curve(noise_multiplier, sample_rate, steps), delta)


def epsilon_of(rdp: list[float], delta: float) -> float:
    """Epsilon at delta of a composition's Renyi DP at each of `rdp_orders` (Balle et al. 2020's conversion)."""
    eps, _ = opacus("accountants.analysis.rdp").get_privacy_spent(orders=rdp_orders(), rdp=list(rdp), delta=delta)
    return float(eps)


def noise_for(target_epsilon: float, sample_rate: float, steps: int, delta: float, key: str) -> float:
    """The smallest sigma, to 0.1 % of the target from below, whose epsilon at delta after `steps`
    releases is at most the target (bisection: epsilon falls as sigma grows)."""
    low, high = 0.0, 1.0
    while epsilon(high, sample_rate, steps, delta) > target_epsilon:
        low, high = high, 2 * high
        if high > 1e6:
            raise UserError(f"config key 'privacy.{key}.target_epsilon': {target_epsilon} cannot be reached with noise below 1e6; "
                            "raise it, or lower the rounds or local steps")
    while target_epsilon - epsilon(high, sample_rate, steps, delta) > 1e-3 * target_epsilon:
        middle = (low + high) / 2
        low, high = (low, middle) if epsilon(middle, sample_rate, steps, delta) <= target_epsilon else (middle, high)
    return high


# ---- configuration --------------------------------------------------------------------------
def active(section: dict) -> list[str]:
    """The modes a `privacy` section turns on."""
    return [mode for mode in MODES if section.get(mode)]


def refusal(cls, mode: str) -> str | None:
    """Why a method class cannot run under a mode, from its declarations (None: it can)."""
    needs = cls.private_training if mode == "sample_dp" else cls.needs_only_mean()
    return None if needs is True else str(needs)


def check_privacy(cfg: dict) -> None:
    """One line, before any file is written, for a DP setting without its noise or a method that cannot run under a mode."""
    from bench.methods import registry

    section, name = cfg["privacy"], cfg["method"]["name"]
    for mode in ("client_dp", "sample_dp"):
        dp = section[mode]
        if dp is not None and ("noise_multiplier" in dp) == ("target_epsilon" in dp):
            raise UserError(f"config key 'privacy.{mode}': give exactly one of noise_multiplier and target_epsilon")
    for mode in active(section):
        reason = refusal(registry()[name], mode)
        if reason is not None:
            raise UserError(f"method {name} cannot run under privacy.{mode}: {reason}")


# ---- clipping and noise ---------------------------------------------------------------------
def clip_rows(rows: torch.Tensor, clip: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(rows scaled to L2 norm at most `clip`, their norms before): x * min(1, C / ||x||)."""
    norms = torch.linalg.vector_norm(rows, dim=1)
    factors = (clip / norms.clamp_min(1e-12)).clamp(max=1.0)
    return rows * factors[:, None], norms


def gaussian(like: torch.Tensor, std: float, generator: torch.Generator) -> torch.Tensor:
    return torch.randn(like.shape, generator=generator, device=like.device, dtype=like.dtype) * std


def noise_generator(device: torch.device, *parts: int) -> torch.Generator:
    return torch.Generator(device=device).manual_seed(derive_seed(*parts))


# ---- adaptive clipping (Andrew et al., NeurIPS 2021) ---------------------------------------
def update_noise(noise_multiplier: float, count_noise: float) -> float:
    """sigma_Delta, the noise multiplier of the update sum when the count of unclipped updates gets
    N(0, sigma_b^2): the count of centred bits (b - 1/2) has sensitivity 1/2, so it is a Gaussian
    query of multiplier 2 sigma_b, and the two together cost one Gaussian query of multiplier sigma
    when sigma^-2 = sigma_Delta^-2 + (2 sigma_b)^-2 (Andrew et al. Sec. 3.1; as Flower's
    compute_adaptive_noise_params and TF Privacy's QuantileAdaptiveClipSumQuery). The accountant
    counts sigma, so epsilon covers both releases."""
    if 2 * count_noise <= noise_multiplier:
        raise UserError(f"config key 'privacy.client_dp.adaptive.count_noise': {count_noise:g} leaves no budget for the updates at noise "
                        f"multiplier {noise_multiplier:g}; it must exceed {noise_multiplier / 2:g} (raise it, or lower the noise)")
    return (noise_multiplier ** -2 - (2 * count_noise) ** -2) ** -0.5


@dataclass
class AdaptiveClip:
    """Adaptive clipping's geometric update: after a round whose noised fraction of unclipped
    updates is b, C <- C exp(-clip_lr (b - target_quantile)), so C tracks the target quantile of the
    update norms (Andrew et al. Alg. 1; TF Privacy's QuantileEstimatorQuery, geometric)."""

    target_quantile: float
    clip_lr: float
    count_noise: float  # sigma_b

    def unclipped_fraction(self, unclipped: int, reporting: int, sampled: int, generator: torch.Generator) -> float:
        """b = (sum of (b_i - 1/2) + N(0, sigma_b^2)) / clients sampled + 1/2: the centred count's noised
        mean over the fixed denominator of the update mean."""
        noise = float(torch.randn((), generator=generator, dtype=torch.float64)) * self.count_noise
        return (unclipped - reporting / 2 + noise) / sampled + 0.5

    def next_clip(self, clip: float, unclipped_fraction: float) -> float:
        return clip * math.exp(-self.clip_lr * (unclipped_fraction - self.target_quantile))


# ---- the server's view ----------------------------------------------------------------------
class IndividualUpdates(UserError):
    """A method's aggregation read one client's update where the server sees only their sum."""


class SumOnlyUpdates:
    """What the server sees under client-level DP or secure aggregation: the mean of the reporting
    clients' states (noisy under DP) and who reported; reading any one client's update is refused."""

    def __init__(self, mean: torch.Tensor, weighted: torch.Tensor, clients: list[int], method: str, mode: str):
        self._mean, self._weighted, self._clients, self._method, self._mode = mean, weighted, clients, method, mode

    @property
    def clients(self) -> list[int]:
        return list(self._clients)

    def mean(self) -> torch.Tensor:
        return self._mean

    def weighted_mean(self) -> torch.Tensor:
        return self._weighted

    def _refuse(self, what: str):
        raise IndividualUpdates(f"method {self._method} cannot run under privacy.{self._mode}: its aggregation reads each client's own "
                                f"update ({what}), but the server sees only their mean; declare mean_of_updates with the reason")

    states = property(lambda self: self._refuse("updates.states"))
    items = property(lambda self: self._refuse("updates.items"))
    num_samples = property(lambda self: self._refuse("updates.num_samples"))


# ---- record-level DP-SGD --------------------------------------------------------------------
class RecordsOutsideDPSGD(UserError):
    """A method read a client's training records outside a DP-SGD fit."""


@dataclass
class PrivateSGD:
    """Per-example clipping and Gaussian noise for the shared trainer's fits on a client's training
    split. Per-example gradients come from one backward pass per example (TF Privacy's
    microbatches of one): exact for any loss a method gives, including terms that read the model's
    own parameters, which vectorised per-sample gradients (torch.func, Opacus's hooks) would miss."""

    clip: float
    noise_multiplier: float
    seed: int
    method: str
    steps: dict[int, int] = field(default_factory=dict)  # client -> private releases this round (steps x learners)
    clipped: dict[int, list[int]] = field(default_factory=dict)  # client -> [examples clipped, examples] this round
    inside: bool = False  # a private fit is running (set by the trainer): it may read the client's records
    vectorise: bool = True  # plain cross-entropy learners in one torch.func pass (fp32 runs; bf16 autocast runs loop)

    def generator(self, device: torch.device, round: int, client: int, stream: int) -> torch.Generator:
        return noise_generator(device, self.seed, round, client, stream, SAMPLE_NOISE_STREAM)

    def gradients(self, runs: list, size: int, losses_of: Callable[[slice], list[torch.Tensor]], client: int,
                  generator: torch.Generator, batch: tuple[torch.Tensor, torch.Tensor] | None = None) -> list[torch.Tensor]:
        """Set every learner's .grad to (sum of clipped per-example gradients + noise) / batch size;
        return each learner's mean loss over the batch. With `batch` (x, y) and one plain
        cross-entropy learner the per-example gradients come from one vectorised pass."""
        seen = self.clipped.setdefault(client, [0, 0])
        if batch is not None and self.vectorise and plain_cross_entropy(runs):
            sums, totals = vectorised_clipped_sums(runs[0], *batch, self.clip, seen)
        else:
            sums, totals = self.looped_clipped_sums(runs, size, losses_of, seen)
        std = self.noise_multiplier * self.clip
        for run, summed in zip(runs, sums):
            for p, total in zip(run.params, summed):
                p.grad = (total + gaussian(total, std, generator)) / size
        return [t.to(runs[0].total.device) / size for t in totals]

    def looped_clipped_sums(self, runs: list, size: int, losses_of: Callable[[slice], list[torch.Tensor]],
                            seen: list[int]) -> tuple[list[list[torch.Tensor]], list[torch.Tensor]]:
        """Per learner, the sum of the clipped per-example gradients and of the losses: one backward pass per example."""
        sums = [[torch.zeros_like(p) for p in run.params] for run in runs]
        totals = [torch.zeros(()) for _ in runs]
        for i in range(size):
            for run in runs:
                run.optimizer.zero_grad(set_to_none=True)
            losses = losses_of(slice(i, i + 1))
            torch.stack(losses).sum().backward()
            for k, run in enumerate(runs):
                grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in run.params]
                flat = torch.cat([g.flatten() for g in grads])[None]
                _, norm = clip_rows(flat, self.clip)
                factor = min(1.0, self.clip / max(float(norm), 1e-12))
                for total, grad in zip(sums[k], grads):
                    total.add_(grad, alpha=factor)
                totals[k] = totals[k] + losses[k].detach().float().cpu()
                seen[0] += int(factor < 1.0)
                seen[1] += 1
        return sums, totals

    def spent(self, client: int, releases: int) -> None:
        self.steps[client] = self.steps.get(client, 0) + releases


def plain_cross_entropy(runs: list) -> bool:
    """One learner training every parameter of a plain classifier (forward = head(body(x))) on the
    cross-entropy: the case whose per-example gradients one vectorised pass gives."""
    from bench.models.classifier import Classifier

    if len(runs) != 1:
        return False
    learner = runs[0].learner
    trainable = [p for p in learner.model.parameters() if p.requires_grad]
    return (type(learner.model) is Classifier and learner.loss is None and learner.extra_loss is None and not learner.frozen
            and len(runs[0].params) == len(trainable) and all(a is b for a, b in zip(runs[0].params, trainable)))


def vectorised_clipped_sums(run, x: torch.Tensor, y: torch.Tensor, clip: float, seen: list[int]) -> tuple[list[list[torch.Tensor]], list[torch.Tensor]]:
    """`looped_clipped_sums` for `plain_cross_entropy` learners: per-example gradients by
    torch.func (vmap of grad over the batch, as Opacus's functorch mode), clipped and summed."""
    import torch.nn.functional as F
    from torch.func import functional_call, grad_and_value, vmap

    model = run.learner.model
    names = [name for name, p in model.named_parameters() if p.requires_grad]
    params = {name: p.detach() for name, p in model.named_parameters() if p.requires_grad}
    buffers = dict(model.named_buffers())

    def loss(weights: dict, xi: torch.Tensor, yi: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(functional_call(model, (weights, buffers), (xi[None],)), yi[None])

    grads, losses = vmap(grad_and_value(loss), in_dims=(None, 0, 0), randomness="different")(params, x, y)
    flat = torch.cat([grads[name].flatten(1) for name in names], dim=1)
    _, norms = clip_rows(flat, clip)
    factors = (clip / norms.clamp_min(1e-12)).clamp(max=1.0)
    seen[0] += int((factors < 1.0).sum())
    seen[1] += len(x)
    sums = [torch.einsum("b,b...->...", factors, grads[name]) for name in names]
    return [sums], [losses.detach().float().sum().cpu()]


def guard_records(fed, sgd: PrivateSGD) -> None:
    """Refuse, with one line, any read of the clients' training records outside a DP-SGD fit (a
    statistic of the data a method sends or uses would escape the guarantee)."""
    private = torch.zeros(len(fed.data.labels), dtype=torch.bool, device=fed.data.labels.device)
    for client in fed.clients:
        private[client.train] = True
    read = fed.data.batch

    def batch(index: torch.Tensor, generator: torch.Generator | None = None):
        if not sgd.inside and bool(private[index.to(private.device)].any()):
            raise RecordsOutsideDPSGD(f"method {sgd.method} cannot run under privacy.sample_dp: it reads clients' training records "
                                      "outside the shared trainer's DP-SGD fits; declare private_training with the reason")
        return read(index, generator)

    fed.data.batch = batch


def norm_groups(channels: int, group_size: int) -> int:
    """GroupNorm's group count for `channels` at about `group_size` channels per group: the largest
    divisor of `channels` not above channels / group_size (at least 1 group, LayerNorm-like)."""
    most = max(1, channels // group_size)
    return max(g for g in range(1, most + 1) if channels % g == 0)


def group_norm(model: torch.nn.Module, group_size: int) -> torch.nn.Module:
    """The model with every BatchNorm(C) replaced by GroupNorm(norm_groups(C, group_size), C), with
    BatchNorm's eps and affine setting (Wu & He, ECCV 2018). Not Opacus's ModuleValidator.fix: its
    gcd(32, C) groups make every layer of a model narrower than 32 channels an instance norm, which
    leaves a small CNN at chance under DP-SGD (configs/privacy.yaml's controls); DP-SGD papers keep
    several channels per group (De et al. 2022: 16 groups on WRN-16-4, >= 4 channels each)."""
    for name, module in list(model.named_modules()):
        for child_name, child in list(module.named_children()):
            if isinstance(child, torch.nn.modules.batchnorm._BatchNorm):
                groups = norm_groups(child.num_features, group_size)
                setattr(module, child_name, torch.nn.GroupNorm(groups, child.num_features, eps=child.eps, affine=child.affine))
    return model


def norm_layers(model: torch.nn.Module) -> dict[str, int]:
    """How many normalisation layers of each kind the model has (run.json: GroupNorm where BatchNorm was)."""
    kinds: dict[str, int] = {}
    for module in model.modules():
        if isinstance(module, (torch.nn.modules.batchnorm._BatchNorm, torch.nn.GroupNorm, torch.nn.LayerNorm)):
            kinds[type(module).__name__] = kinds.get(type(module).__name__, 0) + 1
    return kinds


# ---- secure aggregation's bytes -------------------------------------------------------------
def secure_aggregation_bytes(n: int, reported: bool) -> tuple[int, int]:
    """(download, upload) bytes one of the n participants adds under Bonawitz et al. (2017)'s
    protocol (Fig. 4), message by message:
      round 0 AdvertiseKeys:  sends its 2 public keys (2 a_K), receives the others' (2 (n-1) a_K);
      round 1 ShareKeys:      sends 2 shares of its secrets to each other user (2 (n-1) a_S), receives theirs (2 (n-1) a_S);
      round 2 MaskedInput:    the masked vector: the upload itself, m elements of R = 32 bits (the float32 state's size);
      round 4 Unmasking:      a user that reported sends one share per other user (n-1) a_S.
    Per user 2n a_K + 5(n-1) a_S + mR, the protocol's O(n + m) (its Sec. 7.1); consistency checks
    (round 3) and signatures are left out. tests/test_privacy.py checks this total against the
    message-by-message hand count; it was not checked against the total printed in the paper."""
    down = 2 * (n - 1) * KEY_BYTES + 2 * (n - 1) * SHARE_BYTES
    up = 2 * KEY_BYTES + 2 * (n - 1) * SHARE_BYTES + ((n - 1) * SHARE_BYTES if reported else 0)
    return down, up


# ---- one run --------------------------------------------------------------------------------
@dataclass
class Privacy:
    """A run's privacy modes: what play_round calls, and what run.json records."""

    section: dict
    method: str
    client_noise: float | None = None  # sigma of client-level DP (what the accountant counts)
    update_noise: float | None = None  # the update sum's sigma: client_noise, or sigma_Delta under adaptive clipping
    adaptive: AdaptiveClip | None = None
    client_rate: float = 1.0  # q: clients sampled per round / clients
    sample_noise: float | None = None  # sigma of DP-SGD
    sample_rates: dict[int, float] = field(default_factory=dict)  # client -> q = batch size / its training images
    norm_layers: dict[str, int] = field(default_factory=dict)  # the main model's normalisation layers (BatchNorm replaced)
    sgd: PrivateSGD | None = None
    overspent: dict[str, float] = field(default_factory=dict)  # mode -> realised epsilon, where it passed its target by more than 1 %
    start: torch.Tensor | None = None  # (clients, P): each reporting client's state as received this round

    def describe(self) -> dict:
        """run.json's `privacy`: the modes, the noise used (solved for a target epsilon), the accountant, the sampling."""
        out: dict = {"modes": active(self.section), "accountant": ACCOUNTANT}
        if self.overspent:
            out["epsilon_over_target"] = dict(self.overspent)
        if self.section["client_dp"]:
            out["client_dp"] = {**self.section["client_dp"], "noise_multiplier": self.client_noise, "sample_rate": self.client_rate,
                                "sampling": "a fixed number of clients per round, accounted as Poisson sampling at that rate"}
            if self.adaptive is not None:
                out["client_dp"]["adaptive"] = {**self.section["client_dp"]["adaptive"], "count_noise": self.adaptive.count_noise,
                                                "update_noise_multiplier": self.update_noise}
        if self.section["sample_dp"]:
            out["sample_dp"] = {**self.section["sample_dp"], "noise_multiplier": self.sample_noise, "sample_rates": self.sample_rates,
                                "norm_layers": self.norm_layers,
                                "sampling": "shuffled fixed-size local batches, accounted as Poisson sampling at batch size / training images"}
        if self.section["secure_aggregation"]:
            out["secure_aggregation"] = {"key_bytes": KEY_BYTES, "share_bytes": SHARE_BYTES,
                                         "note": "bytes add Bonawitz et al. 2017's key agreement and secret shares (bench/engine/privacy.py)"}
        return out

    # -- during a round
    def received(self, fed, client) -> None:
        """Remember a reporting client's state as received: its update is measured from it."""
        if self.start is not None and client.id in fed.slots and client.arch == MAIN:
            fed.layout_of(client).gather(fed.model_of(client), out=self.start[fed.slots[client.id]])

    def server_view(self, fed, method, updates: Updates, ledger: dict):
        """The Updates the method's aggregation sees: all of them, or only their (noisy) mean;
        `ledger` (checkpointed with the run's progress) carries the adaptive clip between rounds."""
        if self.section["client_dp"]:
            mean = self.noisy_mean(fed, method, updates, ledger)
            return SumOnlyUpdates(mean, mean, updates.clients, self.method, "client_dp")
        if self.section["secure_aggregation"]:
            return SumOnlyUpdates(updates.mean(), updates.weighted_mean(), updates.clients, self.method, "secure_aggregation")
        return updates

    def noisy_mean(self, fed, method, updates: Updates, ledger: dict) -> torch.Tensor:
        """Received state + (sum of clipped updates + N(0, sigma^2 C^2)) / clients sampled, over the uploaded layers."""
        k = len(updates.items)
        clip = ledger.get(ADAPTIVE_CLIP, self.section["client_dp"]["clip"])
        start = self.start[:k]
        uploaded = torch.stack([fed.layout.expand(method.uploaded_layers(fed, fed.clients[c]).to(fed.device)) for c in updates.clients])
        clipped, norms = clip_rows((updates.states - start) * uploaded, clip)
        union = uploaded.any(0)
        noise = gaussian(fed.global_state, self.update_noise * clip, noise_generator(fed.device, fed.config["seed"], fed.round, CLIENT_NOISE_STREAM))
        sampled = len(fed.plan.sampled)
        if self.adaptive is not None:
            fraction = self.adaptive.unclipped_fraction(int((norms <= clip).sum()), k, sampled,
                                                        noise_generator(torch.device("cpu"), fed.config["seed"], fed.round, COUNT_NOISE_STREAM))
            ledger[ADAPTIVE_CLIP] = self.adaptive.next_clip(clip, fraction)
            fed.record("privacy/clip", torch.tensor(clip), ())
            fed.record("privacy/unclipped_fraction", torch.tensor(fraction), ())
        reference = torch.where(union, start.mean(0), fed.global_state)
        norm_of = torch.full((len(fed.clients),), math.nan)
        norm_of[updates.clients] = norms.float().cpu()
        fed.record("privacy/update_norm", norm_of, ("client",))
        fed.record("privacy/clip_fraction", (norms > clip).float().mean().cpu(), ())
        fed.record("privacy/noise_std", torch.tensor(self.update_noise * clip / sampled), ())
        return reference + torch.where(union, clipped.sum(0) + noise, torch.zeros_like(noise)) / sampled

    def add_protocol_bytes(self, sent: dict, participants: list, reporting: set[int]) -> None:
        if not self.section["secure_aggregation"]:
            return
        for client in participants:
            down, up = secure_aggregation_bytes(len(participants), client.id in reporting)
            sent["bytes_down"] += down
            sent["bytes_up"] += up

    def check_target(self, mode: str, realised: float) -> None:
        """Warn, with one line the first time, when the realised epsilon passes `target_epsilon` by more
        than 1 % (releases the plan did not count, e.g. a method's undeclared extra fits); run.json
        and the report's privacy figure show it."""
        target = self.section[mode].get("target_epsilon")
        if target is None or realised <= 1.01 * target:
            return
        if mode not in self.overspent:
            log.warning("method %s under privacy.%s: realised epsilon %.3g passes target_epsilon %g by more than 1 %%; declare its "
                        "DP-SGD releases per round (Method.private_epochs)", self.method, mode, realised, target)
        self.overspent[mode] = realised

    def rows(self, fed, totals: dict) -> list[dict]:
        """This round's `privacy` metrics (and DP-SGD diagnostics); `totals` (checkpointed with the
        run's progress) accumulates each client's DP-SGD releases."""
        r, rows = fed.round, []
        if self.section["client_dp"]:
            dp = self.section["client_dp"]
            rows.append({"round": r, "scope": "privacy", "client": None, "metric": "client_epsilon",
                         "value": epsilon(self.client_noise, self.client_rate, r, dp["delta"])})
            self.check_target("client_dp", rows[-1]["value"])
        if self.sgd is not None:
            dp = self.section["sample_dp"]
            for client, steps in self.sgd.steps.items():
                totals[client] = totals.get(client, 0) + steps
            values = {c.id: epsilon(self.sample_noise, self.sample_rates[c.id], totals.get(c.id, 0), dp["delta"]) for c in fed.clients}
            rows += [{"round": r, "scope": "privacy", "client": c, "metric": "record_epsilon", "value": v} for c, v in values.items()]
            rows.append({"round": r, "scope": "privacy", "client": None, "metric": "record_epsilon", "value": max(values.values())})
            self.check_target("sample_dp", max(values.values()))
            share = torch.full((len(fed.clients),), math.nan)
            for client, (clipped, seen) in self.sgd.clipped.items():
                if client < len(fed.clients) and seen:
                    share[client] = clipped / seen
            fed.record("privacy/sample_clip_fraction", share, ("client",))
            fed.record("privacy/sample_noise_std", torch.tensor(self.sample_noise * dp["clip"] / fed.config["train"]["batch_size"]), ())
            self.sgd.steps, self.sgd.clipped = {}, {}
        return rows


def attach(cfg: dict, fed, method) -> Privacy | None:
    """The run's Privacy (None when every mode is off), with noise solved for a target epsilon over
    the run's rounds (client level) or local steps (record level: every round's DP-SGD releases,
    `Method.private_epochs`, at the smallest client's rate) before round 1."""
    section = cfg["privacy"]
    if not active(section):
        return None
    from bench.engine.participation import clients_per_round

    privacy = Privacy(section, method.name)
    rounds, n = cfg["train"]["rounds"], len(fed.clients)
    if section["client_dp"]:
        dp = section["client_dp"]
        privacy.client_rate = clients_per_round(cfg["train"]["participation"], n) / n
        privacy.client_noise = dp.get("noise_multiplier") or noise_for(dp["target_epsilon"], privacy.client_rate, rounds, dp["delta"], "client_dp")
        privacy.update_noise = privacy.client_noise
        if dp["adaptive"]:
            count_noise = dp["adaptive"]["count_noise"] or clients_per_round(cfg["train"]["participation"], n) / 20
            privacy.adaptive = AdaptiveClip(dp["adaptive"]["target_quantile"], dp["adaptive"]["clip_lr"], count_noise)
            privacy.update_noise = update_noise(privacy.client_noise, count_noise)
        privacy.start = torch.empty_like(fed.uploads)
    if section["sample_dp"]:
        dp, train = section["sample_dp"], cfg["train"]
        privacy.sample_rates = {c.id: min(1.0, train["batch_size"] / max(len(c.train), 1)) for c in fed.clients}
        epochs = method.private_epochs(train)
        planned = {c.id: rounds * epochs * batches_per_epoch(len(c.train), train["batch_size"]) for c in fed.clients}
        privacy.sample_noise = dp.get("noise_multiplier") or max(
            noise_for(dp["target_epsilon"], privacy.sample_rates[c], planned[c], dp["delta"], "sample_dp") for c in planned)
        privacy.sgd = PrivateSGD(dp["clip"], privacy.sample_noise, cfg["seed"], method.name, vectorise=cfg["runtime"]["precision"] == "fp32")
        privacy.norm_layers = norm_layers(fed.model)
        fed.trainer.private = privacy.sgd
        guard_records(fed, privacy.sgd)
    return privacy


# ---- what each method can run under, derived by running it ------------------------------------
PROBE = {
    "data": {"name": "synthetic", "public_fraction": 0.2},
    "partition": {"scheme": "fixed", "clients": 3, "samples_per_client": 24},  # 1-2 local steps: a probe, not a study
    "model": {"name": "small_cnn", "widths": [8, 16]},
    "train": {"rounds": 1, "lr": 0.003, "batch_size": 16},
    "runtime": {"threads": 1, "device": "cpu"},
}
PROBE_SETTINGS = {"client_dp": {"clip": 1.0, "noise_multiplier": 1.0, "delta": 1e-5, "adaptive": None},  # set after resolve: every key
                  "sample_dp": {"clip": 1.0, "noise_multiplier": 1.0, "delta": 1e-5, "group_size": 4},
                  "secure_aggregation": True}


def probe_config(method: str, mode: str) -> dict:
    """One round of `method` on synthetic under one mode, its declarations not consulted."""
    import copy

    from bench.config import resolve, set_key
    from bench.testing import needs

    cfg = copy.deepcopy({**PROBE, "method": {"name": method}})
    for key, value in needs(method).items():  # what the method needs on synthetic (Method.test_setting)
        set_key(cfg, key.replace("__", "."), value)
    cfg = resolve(cfg)
    cfg["privacy"][mode] = PROBE_SETTINGS[mode]
    return cfg


def probe(method: str, mode: str, out: Path) -> bool | str:
    """True when `method` runs a round under `mode` (client-level DP, DP-SGD, secure aggregation)
    without reading what the mode hides; else the one-line reason it stops with."""
    from bench.engine.run import execute

    try:
        execute(probe_config(method, mode), out, show_progress=False)
    except (IndividualUpdates, RecordsOutsideDPSGD) as exc:
        return str(exc)
    return True


def derive_table() -> dict[str, dict[str, bool]]:
    """{method: {mode: whether it runs}} for every registered method: it runs when probing it shows
    nothing hidden read and it declares nothing the probe cannot see (a statistic of its records
    read without `fed.data.batch`, e.g. label counts)."""
    from bench.methods import registry

    table = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, cls in registry().items():
            table[name] = {mode: probe(name, mode, Path(tmp) / f"{name}-{mode}") is True and refusal(cls, mode) is None for mode in MODES}
    return table


def write_table() -> Path:
    """Derive the table and write it where `compatibility` reads it."""
    target = Path(__file__).resolve().parent.parent / "methods" / TABLE
    target.write_text(json.dumps(derive_table(), indent=1, sort_keys=True) + "\n")
    return target


if __name__ == "__main__":  # python -m bench.engine.privacy: regenerate the table (run as the module, not __main__, so errors match)
    import logging

    from bench.engine import privacy

    logging.disable(logging.WARNING)
    print(f"wrote {privacy.write_table()}")
