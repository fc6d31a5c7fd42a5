"""APFL (Deng, Kamani & Mahdavi, "Adaptive Personalized Federated Learning", arXiv 2003.13461,
2020): each client mixes a personal model v_i with the global model w, with a mixing weight
alpha_i it learns.

Per local step on client i, on one mini-batch, with z_v = v_i(x), z_w = w(x):
       w   <- w - eta grad CE(z_w, y)                      FedAvg's local training
       zbar = alpha_i z_v + (1 - alpha_i) z_w             the mixture (w held fixed in it)
       v_i <- v_i - eta grad_v CE(zbar, y)
  (A)  alpha_i <- clip[0,1](alpha_i - eta_alpha dCE(zbar, y)/dalpha),
       dCE/dalpha = mean_b <softmax(zbar_b) - onehot(y_b), z_v,b - z_w,b>
  server w^{t+1} = sum_i p_i w_i                          (FedAvg; v_i and alpha_i stay)
Each client is evaluated on its mixture alpha_i v_i(x) + (1 - alpha_i) w(x).

Choices and sources:
- The mixture is of the two models' outputs, as in the authors' code (MLOPTPSU/FedTorch,
  `inference_personal`: alpha * model_personal(x) + (1 - alpha) * model(x)); for a linear model it
  equals the paper's parameter mixture alpha v + (1 - alpha) w, and it leaves each model its own
  BatchNorm statistics. (A) is the paper's adaptive rule alpha - eta grad_alpha f_i(vbar) with
  the exact gradient of the mixture trained, taken at every local step as in its Algorithm 1; the
  code steps alpha once per round, with a parameter-space inner product and a 0.02 alpha penalty.
- w and v_i train in lock-step on the same batches (`fit_together`), w on FedAvg's stream.
- alpha_i starts at `alpha` = 0.5; eta_alpha (`alpha_lr`) defaults to train.lr, as the code's
  `alpha_update(..., lr)`; 0 keeps alpha fixed (the paper's non-adaptive APFL).
- v_i starts from the initial model w^0 (FedTorch / FL-bench copy the initial model).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from bench.engine.trainer import Learner, LossFn
from bench.methods import Method, hparam, register
from bench.methods.model_copies import personal_model, remember_initial_model, store_personal_model

GLOBAL, PERSONAL = "global", "personal"  # learner names
ALPHA = "alpha"  # client.state key: alpha_i, a 0-d tensor


class Mixture(nn.Module):
    """A client's APFL predictor: alpha v_i(x) + (1 - alpha) w(x)."""

    def __init__(self, personal: nn.Module, generic: nn.Module, alpha: torch.Tensor):
        super().__init__()
        self.personal, self.generic, self.alpha = personal, generic, alpha

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.alpha * self.personal(x) + (1 - self.alpha) * self.generic(x)


def alpha_gradient(mixed: torch.Tensor, y: torch.Tensor, personal: torch.Tensor, generic: torch.Tensor) -> torch.Tensor:
    """(A)'s dCE(mixed, y)/dalpha for mixed = alpha personal + (1 - alpha) generic (mean over the batch)."""
    residual = torch.softmax(mixed, dim=-1) - F.one_hot(y, mixed.shape[-1]).to(mixed.dtype)
    return (residual * (personal - generic)).sum(-1).mean()


def mixture_loss(alpha: torch.Tensor, alpha_lr: float) -> LossFn:
    """The personal learner's loss CE(zbar, y); steps `alpha` in place ((A)) from this batch."""

    def loss(batch):
        personal, generic = batch.logits, batch.outputs[GLOBAL][1].detach()
        weight = alpha.clone()  # the value this step uses; `alpha` moves on below
        mixed = weight * personal + (1 - weight) * generic
        with torch.no_grad():
            alpha.sub_(alpha_lr * alpha_gradient(mixed, batch.y, personal, generic)).clamp_(0, 1)
        return F.cross_entropy(mixed, batch.y)

    return loss


@register
@dataclass(kw_only=True)
class APFL(Method):
    """APFL: personal model mixed with the global one by a learned per-client weight alpha."""

    name = "apfl"
    alpha: float = hparam(0.5, "initial mixing weight alpha_i of the personal model", minimum=0, maximum=1)
    alpha_lr: float | None = hparam(None, "step size eta_alpha of alpha's update; null = train.lr, 0 = fixed alpha",
                                    schema={"type": ["number", "null"]}, minimum=0)

    def setup(self, fed):
        remember_initial_model(fed)

    def personalized(self, fed):
        return True

    def alpha_of(self, fed, client) -> torch.Tensor:
        return client.state.get(ALPHA, torch.tensor(self.alpha, device=fed.device))

    def private_epochs(self, train):
        return 2 * train["local_epochs"]  # w and v_i step in lock-step: two releases per batch

    def train(self, fed, client):
        personal = personal_model(fed, client)
        alpha = client.state[ALPHA] = self.alpha_of(fed, client).clone()
        step = fed.config["train"]["lr"] if self.alpha_lr is None else self.alpha_lr
        learners = [Learner(fed.model_of(client), name=GLOBAL),
                    Learner(personal, name=PERSONAL, loss=mixture_loss(alpha, step), state_key="personal_optimizer")]
        fit = fed.fit_together(client, learners)
        store_personal_model(fed, client, personal)
        return fit

    def client_model(self, fed, client):
        self.receive(fed, client)
        return Mixture(personal_model(fed, client), fed.model_of(client), self.alpha_of(fed, client))
