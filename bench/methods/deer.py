"""Federated LoRA fine-tuning: DEeR (Zhu et al., "DEeR: Deviation Eliminating and Noise Regulating
for Privacy-preserving Federated Low-rank Adaptation", IEEE TMI 2025; reference code
CUHK-AIM-Group/DEeR) and its two baselines, FedAvg on the LoRA factors and FFA-LoRA (Sun et al.,
ICLR 2024: A frozen).

Model (the `model` hook): the configured body is frozen and every Linear layer whose name contains
one of `targets` (default `qkv`, the attention projections of a ViT) gets an adapter
W + (alpha / r) B A (`bench.models.lora`); the linear head trains. Only the adapters and the head
travel; the frozen body is the same on every client and never sent.

Per round, with K reporting clients and the uploaded tensors of client i being head_i and the
factor(s) it trained:
  fedavg_lora:  A and B both train;  A <- mean_i A_i,  B <- mean_i B_i
                (the aggregate's product mean(B_i) mean(A_i) != mean_i B_i A_i: a deviation)
  ffa_lora:     A stays at its initial value, B trains;  B <- mean_i B_i
  deer:         odd rounds train and average B with A frozen, even rounds A with B frozen (the
                deviation eliminator): with one factor the same on every client,
                mean_i B_i A = (mean_i B_i) A and mean_i B A_i = B (mean_i A_i), no deviation.
The deviation sqrt(sum_adapters ||mean_i B_i A_i - mean_i B_i mean_i A_i||_F^2) is recorded every
round (`lora/deviation`, before any noise). The mean is uniform over the reporting clients, as the
reference's `size_weights` (server_funct.py) and DP-FedAvg's sensitivity of C / K assume.

Differential privacy (`noise_multiplier` > 0, the reference's `is_DP`), server_funct.py's
`Server_update`: each client's update d_i (upload minus the global state, over what it uploads)
is clipped to L2 norm `clip`, d_i <- d_i min(1, C / ||d_i||), and gets its own Gaussian noise of
standard deviation s = sigma C / sqrt(K), so the mean carries sigma C / K (DP-FedAvg's mechanism
on the sum, split over the clients). DEeR's noise regulator draws the noise of a LoRA factor in the
product space: N (out x in) ~ N(0, s^2), then
  the A factor gets (B^T B)^{-1} B^T N = pinv(B) N,   so B N_A = P_B N  (N projected on B's columns)
  the B factor gets N A^T (A A^T)^{-1} = N pinv(A),   so N_B A = N P_A  (N projected on A's rows)
with the two regulator factors pinv(B) and pinv(A) from the global model (the frozen peer, equal on
every client). The noise the model feels, in its weights B A, then never exceeds N and does not
grow with the peer's scale, where plain noise on A reaches B A as B N_A, amplified by ||B||
(`noise_regulator: false` and the baselines add plain noise to every tensor). pinv rather than the
explicit inverse: a peer that is still zero (B in round 2 when no client moved it) gives no noise
instead of a singular matrix.

Choices that differ from the reference, and why:
- The reference's model is BiomedCLIP's pretrained ViT-B/16 with a frozen text-embedding
  classifier; here any configured ViT (`model.name: vit`, a small one for CPU, or `timm:vit_*` with
  `model.weights`) with fedrank's trainable linear head, averaged with the adapters (and clipped and
  noised with them under DP). Random init (no `model.weights`) is not the paper's setting.
- One adapter on the fused qkv projection (out = 3 d) instead of three on q, k and v.
- One engine round is one of DEeR's two sub-rounds (the reference trains B, aggregates, then trains
  A and aggregates within one of its rounds): every method gets the same number of communication
  rounds and local epochs, and DEeR's round count in the paper is half of fedrank's.
- The update is clipped as one vector (DP-FedAvg); the reference clips every tensor to C on its own.
- The noise multiplier is a hyper-parameter here; the reference solves it from a target epsilon
  (utils.compute_noise_multiplier). The epsilon it spends is accounted after every round
  (`dp/epsilon` at `delta`, diagnostics) with the engine's accountant (bench/engine/privacy.py, Opacus
  RDP, q = clients per round / clients): the sum of the clipped updates (sensitivity C) gets Gaussian
  noise whose smallest standard deviation in any direction is sigma_r C, a Gaussian mechanism of
  multiplier sigma_r (`dp/noise_multiplier`). Plain noise: sigma_r = sigma. Regulated noise on a
  factor has covariance s^2 (P^T P)^-1 (A, peer P = B) or s^2 (P P^T)^-1 (B, peer P = A), smallest
  s^2 / sigma_max(P)^2, so sigma_r = sigma min(1, 1 / sigma_max(P)) over the regulated factors, and 0
  (epsilon infinite) while a peer is rank-deficient (B still zero): the regulator buys its utility
  with privacy whenever the peer's largest singular value exceeds 1. No `target_epsilon`: the
  multiplier of a regulated round depends on the peer, so it cannot be solved before round 1.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from bench.engine.seeds import derive_seed
from bench.methods import Method, Recipe, hparam, register
from bench.models.lora import A, B, add_lora, adapter_keys

NOISE_STREAM = 0xD9  # seed stream of the DP noise (per run seed and round)
HEAD = "head."
RECIPE = Recipe(settings={"train.optimizer": "sgd", "train.momentum": 0.9},
                source="CUHK-AIM-Group/DEeR main.py: local SGD with momentum 0.9 for LoRA, FFA-LoRA and DEeR")


# ---- the equations ---------------------------------------------------------------------------------
def lora_deviation(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """||mean_i B_i A_i - (mean_i B_i)(mean_i A_i)||_F^2 for the K clients' factors a (K, r, in), b (K, out, r)."""
    return (torch.bmm(b, a).mean(0) - b.mean(0) @ a.mean(0)).pow(2).sum()


def regulated_noise(noise: torch.Tensor, peer: torch.Tensor, factor: str) -> torch.Tensor:
    """Product-space noise N (out x in) mapped onto a factor through its frozen peer: pinv(B) N for
    A (peer B), N pinv(A) for B (peer A)."""
    return torch.linalg.pinv(peer) @ noise if factor == A else noise @ torch.linalg.pinv(peer)


def clip_rows(deltas: torch.Tensor, clip: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Each row scaled by min(1, clip / ||row||); also which rows were clipped."""
    norms = deltas.norm(dim=1, keepdim=True)
    return deltas * torch.clamp(clip / norms.clamp_min(1e-12), max=1.0), norms.squeeze(1) > clip


# ---- the methods -----------------------------------------------------------------------------------
TINY_VIT = {"name": "vit", "embed_dim": 16, "depth": 1, "num_heads": 2}  # the test setting's ViT


@dataclass(kw_only=True)
class FederatedLoRA(Method):
    """LoRA adapters on a frozen body, the head and the trained factors averaged (not registered)."""

    recipe = RECIPE
    in_all = False  # LoRA needs a ViT body; `methods: all` studies train CNNs (configs/deer_fedbm.yaml names them)
    mean_of_updates = "its server clips and noises each client's update itself (the method's own DP) and measures their deviation"
    rank: int = hparam(8, "LoRA rank r (the reference's training_script.sh: lora_r=8)", minimum=1)
    alpha: float = hparam(8.0, "LoRA scaling numerator: the update is (alpha / r) B A (reference: alpha = 8)", exclusiveMinimum=0)
    targets: tuple = hparam(["qkv"], "adapt every Linear of the body whose module name contains one of these (qkv: a ViT's attention)")
    noise_multiplier: float = hparam(0.0, "DP noise multiplier sigma (0: no clipping, no noise); noise std sigma * clip / sqrt(K) per client", minimum=0)
    clip: float = hparam(2.0, "DP clipping bound C on each client's update (L2 norm; the reference's default C = 2)", exclusiveMinimum=0)
    delta: float = hparam(1e-5, "delta of the epsilon accounted for the DP noise (dp/epsilon)", exclusiveMinimum=0, exclusiveMaximum=1)

    @classmethod
    def test_setting(cls, scratch):
        return {"model": dict(TINY_VIT)}  # LoRA adapts a ViT's attention

    def model(self, base, spec):
        add_lora(base.body, tuple(self.targets), self.rank, self.alpha)
        return base

    def trained_factors(self, fed) -> tuple[str, ...]:
        """The LoRA factors the clients train (and upload) this round."""
        return (A, B)

    def trained(self, key: str, factors: tuple[str, ...]) -> bool:
        return key.startswith(HEAD) or key.rpartition(".")[2] in factors

    def aggregated_layers(self, fed):
        factors = self.trained_factors(fed)
        return fed.layout.layers_where(lambda key: self.trained(key, factors))

    def received_layers(self, fed, client):
        return fed.layout.layers_where(lambda key: self.trained(key, (A, B)))

    def train(self, fed, client):
        factors = self.trained_factors(fed)
        params = [p for name, p in fed.model_of(client).named_parameters() if p.requires_grad and self.trained(name, factors)]
        return fed.fit(client, params=params, state_key="optimizer_" + "".join(factors))

    def aggregate(self, fed, updates):
        states = updates.states
        self.record_deviation(fed, states)
        mask = fed.layout.expand(self.aggregated_layers(fed).to(fed.device))
        deltas = states[:, mask] - fed.global_state[mask]
        if self.noise_multiplier > 0:
            deltas, clipped = clip_rows(deltas, self.clip)
            deltas = deltas + self.noise(fed, len(states))
            fed.record("dp/clip_fraction", clipped.float().mean(), ())
            self.account(fed, self.noise_multiplier * self.noise_floor(fed))
        new_state = fed.global_state.clone()
        new_state[mask] += deltas.mean(0)
        return new_state

    def record_deviation(self, fed, states: torch.Tensor) -> None:
        """lora/deviation over every adapter of the K uploaded models (their untrained factor is the global one)."""
        views = [fed.layout.views(row) for row in states]
        total = sum(lora_deviation(torch.stack([v[a] for v in views]).double(), torch.stack([v[b] for v in views]).double())
                    for a, b in adapter_keys(fed.layout.keys))
        fed.record("lora/deviation", torch.as_tensor(total).sqrt(), ())

    def noise(self, fed, clients: int) -> torch.Tensor:
        """(K, uploaded elements) Gaussian noise of std sigma C / sqrt(K) (regulated on LoRA factors by DEeR)."""
        std = self.noise_multiplier * self.clip / clients ** 0.5
        generator = torch.Generator().manual_seed(derive_seed(fed.config["seed"], NOISE_STREAM, fed.round))
        peers = fed.layout.views(fed.global_state.cpu())
        uploaded = [(key, shape) for key, shape, up in zip(fed.layout.keys, fed.layout.shapes, self.aggregated_layers(fed).tolist()) if up]
        rows = [torch.cat([self.noise_of(key, shape, peers, std, generator).flatten() for key, shape in uploaded]) for _ in range(clients)]
        return torch.stack(rows).to(fed.device)

    def noise_of(self, key: str, shape: torch.Size, peers: dict, std: float, generator: torch.Generator) -> torch.Tensor:
        """Plain Gaussian noise for one tensor (the baselines' and DEeR's without the regulator)."""
        return torch.randn(shape, generator=generator) * std

    def noise_floor(self, fed) -> float:
        """The smallest noise standard deviation in any direction of the upload, over the plain one's (1: plain noise)."""
        return 1.0

    def account(self, fed, noise_multiplier: float) -> None:
        """Add this round's Renyi DP (Gaussian of `noise_multiplier`, sampled at clients per round /
        clients) to the run's (fed.server: checkpointed) and record epsilon at delta so far."""
        from bench.engine.privacy import epsilon_of, rdp_orders, rdp_per_step

        orders, rate = rdp_orders(), len(fed.plan.sampled) / len(fed.clients)
        step = rdp_per_step(noise_multiplier, rate) if noise_multiplier > 0 else [math.inf] * len(orders)
        total = [a + b for a, b in zip(fed.server.get("dp_rdp", [0.0] * len(orders)), step)]
        fed.server["dp_rdp"] = total
        fed.record("dp/noise_multiplier", torch.tensor(noise_multiplier), ())
        fed.record("dp/epsilon", torch.tensor(math.inf if math.isinf(min(total)) else epsilon_of(total, self.delta)), ())


@register
@dataclass(kw_only=True)
class FedAvgLoRA(FederatedLoRA):
    """FedAvg-LoRA: both LoRA factors train and are averaged apart (DEeR's baseline)."""

    name = "fedavg_lora"


@register
@dataclass(kw_only=True)
class FFALoRA(FederatedLoRA):
    """FFA-LoRA: LoRA with A frozen at its initialisation; only B (and the head) train and are averaged."""

    name = "ffa_lora"

    def trained_factors(self, fed):
        return (B,)

    def received_layers(self, fed, client):
        return self.aggregated_layers(fed)  # A never changes: every client has it from the start


@register
@dataclass(kw_only=True)
class DEeR(FederatedLoRA):
    """DEeR: LoRA's B and A trained in alternate rounds (no aggregation deviation); DP noise regulated through the frozen factor."""

    name = "deer"
    noise_regulator: bool = hparam(True, "draw a factor's DP noise in the product space through pinv of the frozen peer (false: plain noise)")

    def trained_factors(self, fed):
        return (B,) if fed.round % 2 else (A,)

    def noise_floor(self, fed):
        """min(1, 1 / sigma_max(peer)) over the regulated factors uploaded this round; 0 when a peer is rank-deficient."""
        if not self.noise_regulator:
            return 1.0
        peers, floor = fed.layout.views(fed.global_state.cpu()), 1.0
        for key, up in zip(fed.layout.keys, self.aggregated_layers(fed).tolist()):
            stem, _, factor = key.rpartition(".")
            if up and factor in (A, B):
                singular = torch.linalg.svdvals(peers[f"{stem}.{B if factor == A else A}"].double())
                floor = 0.0 if singular.min() <= 1e-12 * max(float(singular.max()), 1.0) else min(floor, 1.0 / float(singular.max()))
        return floor

    def noise_of(self, key, shape, peers, std, generator):
        stem, _, factor = key.rpartition(".")
        if not self.noise_regulator or factor not in (A, B):
            return super().noise_of(key, shape, peers, std, generator)
        peer = peers[f"{stem}.{B if factor == A else A}"]
        product = torch.randn((peer.shape[0], shape[1]) if factor == A else (shape[0], peer.shape[1]), generator=generator) * std
        return regulated_noise(product, peer, factor)
