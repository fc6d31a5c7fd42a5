"""pFedMe (Dinh, Tran & Nguyen, "Personalized Federated Learning with Moreau Envelopes",
NeurIPS 2020, Algorithm 1): each client keeps a personal model theta_i, the proximal solution of
its loss around its local copy w_i of the global model.

On client i in round t, w_i starts from the global w^t and theta_i from w^t; for every batch D:
  theta_i <- theta_i - eta_p (grad f_i(theta_i; D) + lam (theta_i - w_i))     K times (Eq. 7's inner solver)
  w_i     <- w_i - eta lam (w_i - theta_i)                                      once (Algorithm 1, line 8)
  server  w^{t+1} = (1 - beta) w^t + beta sum_i p_i w_i                         p_i = n_i / sum_k n_k
The clients are evaluated on theta_i; the global model is w.

How it maps onto fedrank: theta_i is a learner with `inner_steps=K` on plain SGD (the
`optimizer` override), so its K steps on each batch run before w_i's step; w_i is a learner with
`forward=False` whose loss (lam/2) ||w_i - theta_i||^2 has exactly the gradient lam (w_i - theta_i),
so w_i's step is line 8 under the configured optimizer at train.lr (eta with the paper's plain SGD:
`recipes: paper`). Seeding, clipping (train.clip_grad_norm; the reference code does not clip) and
accounting are the trainer's.

Choices and sources (the authors' code, CharlieDinh/pFedMe, FLAlgorithms/users/userpFedMe.py and
servers/serverpFedMe.py):
- theta_i starts every round from w^t and carries over between batches, as the code's self.model;
  a client that has not yet trained is evaluated on the initial model (the code's initial copy).
- p_i weights by sample counts, as the code's persionalized_aggregate_parameters.
- Defaults: lam = 15, eta_p = 0.09, beta = 1 (the README's non-convex MNIST run), K = 5 (main.py's
  default); the paper's eta = 0.005 is the recipe's train.lr.
- w_i is never run on data, so its BatchNorm statistics would stay at w^t's: it takes theta_i's at
  the end of the fit (the paper's models have no BatchNorm).
Hooks used: setup, personalized, train, aggregate, client_model.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from bench.engine.trainer import Learner
from bench.methods import Method, Recipe, hparam, intuniform, loguniform, register
from bench.methods.model_copies import personal_model, remember_initial_model, store_personal_model

PLAIN_SGD = {"optimizer": "sgd", "momentum": 0.0, "weight_decay": 0.0}  # the paper's inner solver


def pull(model: nn.Module, towards: nn.Module, lam: float):
    """The loss (lam/2) sum ||w - theta||^2 over the trainable tensors of `model`, with `towards`
    held fixed (detached): its gradient is lam (w - theta)."""
    pairs = [(w, theta) for w, theta in zip(model.parameters(), towards.parameters()) if w.requires_grad]

    def loss(batch) -> torch.Tensor:
        return lam / 2 * torch.stack([(w - theta.detach()).pow(2).sum() for w, theta in pairs]).sum()

    return loss


@register
@dataclass(kw_only=True)
class PFedMe(Method):
    """pFedMe: personal models solved K steps per batch around the local model (Moreau envelopes)."""

    name = "pfedme"
    mean_of_updates = True  # the server mixes the clients' weighted mean into w (line 11 of Alg. 1)
    recipe = Recipe(settings={"train.optimizer": "sgd", "train.momentum": 0.0, "train.lr": 0.005},
                    source="Dinh et al. NeurIPS 2020, Alg. 1 line 8 (a plain SGD step of w); eta = 0.005 in the authors' README runs (CharlieDinh/pFedMe)")
    lam: float = hparam(15.0, "regularisation lam of the personal model towards the local model", exclusiveMinimum=0,
                        search=loguniform(1.0, 30.0, source="fedrank's range around the authors' lam = 15 (CharlieDinh/pFedMe README runs)"))
    personal_lr: float = hparam(0.09, "learning rate eta_p of the personal model's K plain SGD steps", exclusiveMinimum=0,
                                search=loguniform(0.005, 0.1, source="fedrank's range below the authors' 0.09 / 0.1 (CharlieDinh/pFedMe README runs)"))
    inner_steps: int = hparam(5, "K: personal-model steps on each batch", minimum=1,
                              search=intuniform(1, 10, source="fedrank's range around the authors' default K = 5 (CharlieDinh/pFedMe main.py)"))
    beta: float = hparam(1.0, "server mixing beta: w <- (1 - beta) w + beta * mean of the local models", exclusiveMinimum=0)

    def setup(self, fed):
        remember_initial_model(fed)

    def personalized(self, fed):
        return True

    def private_epochs(self, train):
        return (self.inner_steps + 1) * train["local_epochs"]  # K steps of theta_i, then one of w, on every batch

    def train(self, fed, client):
        model = fed.model_of(client)
        theta = fed.extra_model("personal")
        fed.layout.scatter(theta, fed.layout.gather(model))  # theta_i starts from w^t
        fit = fed.fit_together(client, [
            Learner(model, loss=pull(model, theta, self.lam), forward=False),
            Learner(theta, name="personal", extra_loss=pull(theta, model, self.lam), inner_steps=self.inner_steps,
                    lr=self.personal_lr, optimizer=PLAIN_SGD, persist=False),
        ])
        fed.layout.scatter(model, torch.where(fed.trainable, fed.layout.gather(model), fed.layout.gather(theta)))  # theta_i's BatchNorm statistics
        store_personal_model(fed, client, theta)
        return fit

    def aggregate(self, fed, updates):
        mean = self.weighted_mean(updates)
        return self.shared_only(fed, fed.global_state + self.beta * (mean - fed.global_state))

    def client_model(self, fed, client):
        return personal_model(fed, client)
