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
  (utils.compute_noise_multiplier). This module reports no epsilon.
"""

from __future__ import annotations

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
    rank: int = hparam(8, "LoRA rank r (the reference's training_script.sh: lora_r=8)", minimum=1)
    alpha: float = hparam(8.0, "LoRA scaling numerator: the update is (alpha / r) B A (reference: alpha = 8)", exclusiveMinimum=0)
    targets: tuple = hparam(["qkv"], "adapt every Linear of the body whose module name contains one of these (qkv: a ViT's attention)")
    noise_multiplier: float = hparam(0.0, "DP noise multiplier sigma (0: no clipping, no noise); noise std sigma * clip / sqrt(K) per client", minimum=0)
    clip: float = hparam(2.0, "DP clipping bound C on each client's update (L2 norm; the reference's default C = 2)", exclusiveMinimum=0)

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

    def noise_of(self, key, shape, peers, std, generator):
        stem, _, factor = key.rpartition(".")
        if not self.noise_regulator or factor not in (A, B):
            return super().noise_of(key, shape, peers, std, generator)
        peer = peers[f"{stem}.{B if factor == A else A}"]
        product = torch.randn((peer.shape[0], shape[1]) if factor == A else (shape[0], peer.shape[1]), generator=generator) * std
        return regulated_noise(product, peer, factor)
