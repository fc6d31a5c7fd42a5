"""FedLSC (Liu, Chen & Lv, Expert Systems With Applications 306, 2026).

Every round, per layer l (every floating-point state tensor):
  Eq.1  dw_i = w_i - w_g                                  each client's update
  Eq.2  s_ij = cos(dw_i, dw_j)                            every client pair (0 for a zero update:
                                                          an L2 norm below 1e-8, as the reference code)
  Eq.3  s_i  = mean_{j != i} s_ij                         client i's mean similarity to the others
  Eq.4  a_i  = softmax_i(s_i / tau)                       aggregation weights, over clients
  Eq.5  w_g  = sum_i a_i w_i                              the new global layer
After round 1 (Eq.6), the layers whose mean similarity m_l = mean_i s_i is strictly below the
`per`-quantile of all m_l become personal (per = 0: none). From round 2 on, personal layers are
neither aggregated nor overwritten by the global model, and the local loss adds
(mu/2) sum_l ||w_i - w_g||^2 (Eq.7) over the shared layers, the ones the client received.

Aggregation is vectorised: per layer, one Gram matrix of all clients' updates and one weighted
sum, both over all clients at once (`bench.engine.layerwise`: one pass over the states, no
clients x parameters temporary); no per-pair Python loops.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from bench.engine.layout import StateLayout
from bench.methods import Method, Recipe, hparam, loguniform, proximal_term, register


def layer_cosine_similarity(states: torch.Tensor, reference: torch.Tensor, layout: StateLayout) -> torch.Tensor:
    """Eq.1-2: (L, N, N) cosine similarities of the clients' per-layer updates states - reference."""
    from bench.engine.layerwise import update_grams  # numba: imported by FedLSC runs only, not by every registry listing

    return cosine_from_grams(update_grams(states, reference, layout))


# An update whose L2 norm is below this counts as zero (similarity 0), as in the FedLSC reference
# code: near-frozen layers (zero-initialised biases that barely move) would otherwise get cosines
# of rounding noise and per-layer weights up to 0.3 away from the reference's.
ZERO_UPDATE_NORM = 1e-8


def cosine_from_grams(grams: torch.Tensor) -> torch.Tensor:
    """Eq.2 from (..., N, N) Gram matrices of the updates: 0 where either update is zero
    (L2 norm below ZERO_UPDATE_NORM)."""
    norms = grams.diagonal(dim1=-2, dim2=-1).clamp_min(0).sqrt()
    nonzero = norms >= ZERO_UPDATE_NORM
    both = nonzero.unsqueeze(-1) & nonzero.unsqueeze(-2)
    denominator = torch.where(both, norms.unsqueeze(-1) * norms.unsqueeze(-2), torch.ones_like(grams))
    return torch.where(both, (grams / denominator).clamp(-1, 1), torch.zeros_like(grams))


def mean_similarity_to_others(similarity: torch.Tensor) -> torch.Tensor:
    """Eq.3: (L, N) mean of s_ij over j != i (0 when there is no other client)."""
    clients = similarity.shape[-1]
    if clients < 2:
        return torch.zeros(similarity.shape[:-1], dtype=similarity.dtype, device=similarity.device)
    return (similarity.sum(-1) - similarity.diagonal(dim1=-2, dim2=-1)) / (clients - 1)


def similarity_weights(mean_similarity: torch.Tensor, tau: float) -> torch.Tensor:
    """Eq.4: (L, N) softmax over clients of s_i / tau; each layer's weights sum to 1."""
    return torch.softmax(mean_similarity / tau, dim=-1)


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
    mean_of_updates = "its layer-wise client weights are similarities of each client's own update (per-client weights)"
    recipe = Recipe(settings={"train.optimizer": "adam"}, source="Liu, Chen & Lv, ESWA 306 (2026), Sec. 4: Adam with StepLR")
    tau: float = hparam(0.2, "softmax temperature tau of the similarity weights (Eq.4)", exclusiveMinimum=0,
                        search=loguniform(0.1, 2.5, source="Liu, Chen & Lv 2026, the tau sweep: 0.1 to 2.5"))
    mu: float = hparam(0.001, "weight mu of the proximal term on shared layers from round 2 (Eq.7)", minimum=0)
    per: float = hparam(0.01, "quantile of layers kept personal after round 1 (Eq.6); 0 = none", minimum=0, exclusiveMaximum=1)

    def personal_layers(self, fed):
        return fed.server.get("personal", fed.layout.no_layers())

    def local_loss(self, fed, client):
        if fed.round < 2:
            return None
        return proximal_term(fed, self.mu, ~self.personal_layers(fed))

    def aggregate(self, fed, updates):
        from bench.engine.layerwise import layerwise_weighted_sum

        similarity = layer_cosine_similarity(updates.states, fed.global_state, fed.layout)
        mean_similarity = mean_similarity_to_others(similarity)
        weights = similarity_weights(mean_similarity, self.tau)
        new_state = self.shared_only(fed, layerwise_weighted_sum(weights, updates.states, fed.layout))
        layer_similarity = mean_similarity.mean(dim=-1)
        if fed.round == 1:
            fed.server["personal"] = select_personal_layers(layer_similarity, self.per).cpu()
        fed.record("layer_similarity", layer_similarity, ("layer",))
        fed.record("client_weight", weights, ("layer", "client"), clients=updates.clients)
        fed.record("personal", self.personal_layers(fed).float(), ("layer",))
        return new_state
