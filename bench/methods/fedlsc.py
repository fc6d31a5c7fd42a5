"""FedLSC (Liu, Chen & Lv, Expert Systems With Applications 306, 2026).

Every round, per layer l (every floating-point state tensor):
  Eq.1  dw_i = w_i - w_g                                  each client's update
  Eq.2  s_ij = cos(dw_i, dw_j)                            every client pair (0 for a zero update)
  Eq.3  s_i  = mean_{j != i} s_ij                         client i's mean similarity to the others
  Eq.4  a_i  = softmax_i(s_i / tau)                       aggregation weights, over clients
  Eq.5  w_g  = sum_i a_i w_i                              the new global layer
After round 1 (Eq.6), the layers whose mean similarity m_l = mean_i s_i is strictly below the
`per`-quantile of all m_l become personal (per = 0: none). From round 2 on, personal layers are
neither aggregated nor overwritten by the global model, and the local loss adds
(mu/2) sum_l ||w_i - w_g||^2 (Eq.7) over the shared layers, the ones the client received.

Aggregation is vectorised: per layer, one Gram matrix of all clients' updates (accumulated over
cache-sized blocks, so no clients x parameters temporary is ever allocated) and one weighted sum;
no per-pair Python loops.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from bench.engine.layout import StateLayout
from bench.methods import Method, hparam, proximal_term, register


GRAM_WIDTH = 8192  # columns per product in the batched Gram


def span_size(device: torch.device) -> int:
    """Elements per client per subtraction pass: a bounded workspace on CPU, large on GPUs."""
    return 1 << 24 if device.type == "cuda" else 1 << 18


def gram(delta: torch.Tensor) -> torch.Tensor:
    """delta @ delta.T, as one batch of narrow products plus a tail: on CPUs several times
    faster than a single GEMM whose output is only clients x clients."""
    clients, width = delta.shape
    whole = width // GRAM_WIDTH * GRAM_WIDTH
    tail = delta[:, whole:]
    out = tail @ tail.T
    if whole:
        blocks = delta[:, :whole].view(clients, -1, GRAM_WIDTH).transpose(0, 1)
        out += torch.bmm(blocks, blocks.transpose(1, 2)).sum(0)
    return out


def update_grams(states: torch.Tensor, reference: torch.Tensor, layout: StateLayout) -> torch.Tensor:
    """(L, N, N) Gram matrices of the clients' per-layer updates dw_i = w_i - w_g (Eq.1).

    Updates are formed span by span into one reused workspace: no clients x parameters
    temporary is allocated."""
    clients, span = states.shape[0], span_size(states.device)
    grams = states.new_zeros(layout.layers, clients, clients)
    workspace = states.new_empty(clients, min(span, max(layout.numels)))
    for layer, (start, numel) in enumerate(zip(layout.offsets, layout.numels)):
        for begin in range(start, start + numel, span):
            end = min(begin + span, start + numel)
            delta = torch.sub(states[:, begin:end], reference[begin:end], out=workspace[:, : end - begin])
            grams[layer] += gram(delta)
    return grams


def layer_cosine_similarity(states: torch.Tensor, reference: torch.Tensor, layout: StateLayout) -> torch.Tensor:
    """Eq.1-2: (L, N, N) cosine similarities of the clients' per-layer updates states - reference."""
    grams = update_grams(states, reference, layout)
    norms = grams.diagonal(dim1=1, dim2=2).clamp_min(0).sqrt()
    denominator = norms.unsqueeze(2) * norms.unsqueeze(1)
    cosine = grams / torch.where(denominator > 0, denominator, torch.ones_like(denominator))
    return torch.where(denominator > 0, cosine.clamp(-1, 1), torch.zeros_like(cosine))


def mean_similarity_to_others(similarity: torch.Tensor) -> torch.Tensor:
    """Eq.3: (L, N) mean of s_ij over j != i (0 when there is no other client)."""
    clients = similarity.shape[-1]
    if clients < 2:
        return torch.zeros(similarity.shape[:-1], dtype=similarity.dtype, device=similarity.device)
    return (similarity.sum(-1) - similarity.diagonal(dim1=-2, dim2=-1)) / (clients - 1)


def similarity_weights(mean_similarity: torch.Tensor, tau: float) -> torch.Tensor:
    """Eq.4: (L, N) softmax over clients of s_i / tau; each layer's weights sum to 1."""
    return torch.softmax(mean_similarity / tau, dim=-1)


def layerwise_weighted_sum(weights: torch.Tensor, states: torch.Tensor, layout: StateLayout) -> torch.Tensor:
    """Eq.5: (P,) per layer, sum_i weights[l, i] * states[i, layer l]."""
    out = states.new_empty(states.shape[1])
    for w, s, o in zip(weights.to(states.dtype), layout.split(states), layout.split(out)):
        torch.mv(s.T, w, out=o)
    return out


def select_personal_layers(layer_similarity: torch.Tensor, per: float) -> torch.Tensor:
    """Eq.6: layers whose mean similarity is strictly below the `per`-quantile (linear interpolation)."""
    if per == 0:
        return torch.zeros_like(layer_similarity, dtype=torch.bool)
    return layer_similarity < torch.quantile(layer_similarity.double(), per).to(layer_similarity.dtype)


@register
@dataclass(kw_only=True)
class FedLSC(Method):
    """FedLSC: per-layer cosine-similarity weights; least-similar layers stay personal."""

    name = "fedlsc"
    tau: float = hparam(0.2, "softmax temperature tau of the similarity weights (Eq.4)", exclusiveMinimum=0)
    mu: float = hparam(0.001, "weight mu of the proximal term on shared layers from round 2 (Eq.7)", minimum=0)
    per: float = hparam(0.01, "quantile of layers kept personal after round 1 (Eq.6); 0 = none", minimum=0, exclusiveMaximum=1)

    def personal_layers(self, fed):
        return fed.server.get("personal", fed.layout.no_layers())

    def local_loss(self, fed, client):
        if fed.round < 2:
            return None
        return proximal_term(fed, self.mu, ~self.personal_layers(fed))

    def aggregate(self, fed, updates):
        similarity = layer_cosine_similarity(updates.states, fed.global_state, fed.layout)
        mean_similarity = mean_similarity_to_others(similarity)
        weights = similarity_weights(mean_similarity, self.tau)
        new_state = self.shared_only(fed, layerwise_weighted_sum(weights, updates.states, fed.layout))
        layer_similarity = mean_similarity.mean(dim=-1)
        if fed.round == 1:
            fed.server["personal"] = select_personal_layers(layer_similarity, self.per).cpu()
        fed.record("layer_similarity", layer_similarity, ("layer",))
        fed.record("client_weight", weights, ("layer", "client"))
        fed.record("personal", self.personal_layers(fed).float(), ("layer",))
        return new_state
