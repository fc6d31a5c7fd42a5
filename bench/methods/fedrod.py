"""FedRoD (Chen & Chao, "On Bridging Generic and Personalized Federated Learning for Image
Classification", ICLR 2022): a shared body f and generic head g trained with a class-balanced
loss and aggregated, plus a personal head p per client on top of the generic prediction.

Per local step on client i, with z = f(x) and the client's class prior pi_i (its training split's
class frequencies):
  (BR)  L_BR = CE(g(z) + log pi_i, y)              balanced softmax: trains f and g
  (P)   L_P  = CE(sg[g(z)] + p_i(sg[z]), y)         empirical risk: trains p_i only (sg = stop-gradient)
        loss = L_BR + L_P
  server (f, g)^{t+1} = sum_i n_i (f, g)_i / n      (FedAvg; p_i never leaves the client)
The generic (global) model is g(f(x)); client i's personalised model is g(f(x)) + p_i(f(x)).

Choices and sources:
- The linear, hypernetwork-free Fed-RoD: the P-head is a residual on the G-head's logits, trained
  on detached features and logits, as PFLlib (TsingZ0/PFLlib clientrod.py: `out_g.detach() +
  self.pred(rep.detach())`); the authors' repository (hongyouc/Fed-RoD) holds no code. FL-bench
  instead lets the P-head loss reach the body; here the body learns from the balanced loss only,
  so the generic model is the same whatever the personal heads do.
- Balanced softmax adds log pi_i to the logits (PFLlib and FL-bench add the log class counts,
  which differ by a constant per sample and give the same loss); a class absent from the client
  gets log 0 = -inf, i.e. probability 0 under that client's prior, as in both.
- The P-head starts as a copy of the G-head's initial weights (both PFLlib and FL-bench deepcopy
  the generic classifier). Both heads are built by the `model` hook inside the composite's `head`.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

from bench.methods import Method, register


class GenericAndPersonalHeads(nn.Module):
    """FedRoD's head: the personalised logits g(z) + p(z) (the generic ones are `generic(z)`)."""

    def __init__(self, head: nn.Linear):
        super().__init__()
        self.generic = head
        self.personal = copy.deepcopy(head)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.generic(z) + self.personal(z)


class GenericModel(nn.Module):
    """The generic (global) model g(f(x)), with `body` and `head` like every model."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.body, self.head = model.body, model.head.generic

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x))


def class_log_prior(labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """log pi: log of the class frequencies of `labels` (-inf for an absent class)."""
    counts = torch.bincount(labels, minlength=num_classes)
    return (counts / counts.sum()).log()


def balanced_softmax_loss(logits: torch.Tensor, y: torch.Tensor, log_prior: torch.Tensor) -> torch.Tensor:
    """(BR): cross-entropy of the logits shifted by the client's log class prior."""
    return F.cross_entropy(logits + log_prior, y)


@register
class FedRoD(Method):
    """FedRoD: balanced-softmax generic head (aggregated) plus a residual personal head."""

    name = "fedrod"
    private_training = "its balanced-softmax loss uses the client's label counts, a statistic of all its records outside DP-SGD"

    def model(self, base, spec):
        base.head = GenericAndPersonalHeads(base.head)
        return base

    def personal_layers(self, fed):
        return fed.layout.layers_where(lambda key: key.startswith("head.personal."))

    def client_loss(self, fed, client):
        heads = fed.model_of(client).head
        log_prior = class_log_prior(fed.data.labels[client.train], fed.data.num_classes)

        def loss(batch):
            generic = heads.generic(batch.features)
            personal = generic.detach() + heads.personal(batch.features.detach())
            return balanced_softmax_loss(generic, batch.y, log_prior) + F.cross_entropy(personal, batch.y)

        return loss

    def global_model(self, fed):
        return GenericModel(super().global_model(fed))
