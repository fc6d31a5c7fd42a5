"""FedDyn (Acar et al., ICLR 2021, Algorithm 1): a dynamic regularizer per client whose linear
term tracks the client's last gradient, so the local optima become consistent with the global one.

Client i in P_t (the reporting clients) keeps g_i = grad L_i(theta_i^{t-1}) (zero at the start),
starts from the server model theta^{t-1} and minimises
  R_i(theta) = L_i(theta) - <g_i, theta> + (alpha/2) ||theta - theta^{t-1}||^2
then updates  g_i <- g_i - alpha (theta_i^t - theta^{t-1}).
Server, with h^0 = 0 and m = ALL clients:
  h^t     = h^{t-1} - alpha (1/m) sum_{i in P_t} (theta_i^t - theta^{t-1})
  theta^t = (1/|P_t|) sum_{i in P_t} theta_i^t - (1/alpha) h^t
Choices: the linear term is taken as -<g_i, theta - theta^{t-1}> (a constant shift of R_i:
same gradients and minimiser), so the logged loss starts each round at L_i. g_i and h cover
trainable tensors only (`fed.trainable`); BatchNorm buffers are the plain mean of the reported
ones. The global model evaluated is theta^t, the server model the clients start from (FL-bench,
KarhouTam/FL-bench src/server/feddyn.py; the authors' code, alpemreacar/FedDyn utils_methods.py,
also evaluates plain means of the client models, which theta^t meets at a fixed point: h is the
mean of all g_i, zero where sum_i grad L_i = 0).
alpha is the paper's, the same for every client: the authors' code (and FL-bench) divide it by
each client's relative sample count n_i m / sum_j n_j, which the paper does not state.
Bytes as FedAvg's: theta down, theta_i up; g_i and h never leave their holders.
Hooks used: setup, local_loss, upload, aggregate.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from bench.methods import Method, Recipe, hparam, loguniform, proximal_term, register
from bench.methods.drift import client_vector, trainable_pairs, trainable_zeros

GRADIENT = "gradient"  # client.state: g_i (trainable vector)
H = "h"  # fed.server: h (trainable vector)


def linear_term(pairs: list[tuple[torch.Tensor, torch.Tensor]], offset: torch.Tensor) -> torch.Tensor:
    """<g_i, theta - theta^{t-1}> as sum over tensors of <g, theta> minus offset = <g_i, theta^{t-1}>."""
    return torch.stack([(gradient * param).sum() for param, gradient in pairs]).sum() - offset


def updated_gradient(gradient: torch.Tensor, alpha: float, start: torch.Tensor, end: torch.Tensor) -> torch.Tensor:
    """g_i <- g_i - alpha (theta_i^t - theta^{t-1})."""
    return gradient - alpha * (end - start)


def server_step(h: torch.Tensor, alpha: float, start: torch.Tensor, mean: torch.Tensor, share: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(h^t, theta^t) on trainable vectors from h^{t-1}, theta^{t-1} and the mean reported model,
    with share = |P_t| / m: (1/m) sum_{P_t} (theta_i - theta^{t-1}) = share (mean - theta^{t-1})."""
    h = h - alpha * share * (mean - start)
    return h, mean - h / alpha


@register
@dataclass(kw_only=True)
class FedDyn(Method):
    """FedDyn: dynamic regularizer -<g_i, theta> + (alpha/2)||theta - theta_server||^2; server corrects by h."""

    name = "feddyn"
    mean_of_updates = True  # h and the new state come from the mean state and the count
    recipe = Recipe(settings={"train.optimizer": "sgd", "train.momentum": 0.0},
                    space={"train.lr": loguniform(0.01, 1.0, source="Acar et al. ICLR 2021, Sec. 5: SGD at learning rate 0.1; one decade either side")},
                    source="Acar et al. ICLR 2021, Sec. 5: clients run SGD")
    alpha: float = hparam(0.01, "regularization weight alpha (the paper's 0.01)", exclusiveMinimum=0,
                          search=loguniform(0.001, 0.1, source="Acar et al. ICLR 2021, Sec. 5: alpha from {0.1, 0.01, 0.001}"))

    def setup(self, fed):
        fed.server[H] = trainable_zeros(fed)

    def local_loss(self, fed, client):
        quadratic = proximal_term(fed, self.alpha, ~fed.layout.no_layers())  # towards theta^{t-1} = fed.global_state
        gradient = client.state.get(GRADIENT)
        if gradient is None:  # g_i = 0 until the client first reports
            return quadratic
        pairs, offset = trainable_pairs(fed, fed.model, gradient), gradient @ fed.global_state[fed.trainable]
        return lambda batch: quadratic(batch) - linear_term(pairs, offset)

    def upload(self, fed, client, fit):
        update = super().upload(fed, client, fit)
        start, end = fed.global_state[fed.trainable], fed.upload_row(client)[fed.trainable]
        client.state[GRADIENT] = updated_gradient(client_vector(fed, client, GRADIENT), self.alpha, start, end)
        return update

    def aggregate(self, fed, updates):
        mean = updates.mean()
        share = len(updates.clients) / len(fed.clients)
        h, theta = server_step(fed.server[H], self.alpha, fed.global_state[fed.trainable], mean[fed.trainable], share)
        fed.server[H] = h
        return self.shared_only(fed, mean.masked_scatter(fed.trainable, theta))
