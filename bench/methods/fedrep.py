"""FedRep (Collins, Hassani, Mokhtari & Shakkottai, "Exploiting Shared Representations for
Personalized Federated Learning", ICML 2021): a shared body (the representation phi), a personal
head h_i per client, trained in two stages every round.

On client i in round t, starting from the global body phi^t and its own head h_i:
         h_i <- h_i - eta grad_h  CE(h_i(phi^t(x)), y)    for `head_epochs` epochs, body frozen
         phi_i <- phi - eta grad_phi CE(h_i(phi(x)), y)   for train.local_epochs epochs, head frozen
  server phi^{t+1} = sum_i p_i phi_i                      (FedAvg over the body only)
Only the body is received and uploaded (the head never leaves the client: not counted in bytes).

Choices and sources:
- head_epochs = 10: the authors' scripts (lgcollins/FedRep, scripts/FedRep_*.sh) always give the
  head local_ep - local_rep_ep = 10 epochs (11 - 1 on CIFAR-10, 15 - 5 on CIFAR-100), the body
  local_rep_ep; here the body gets `train.local_epochs`.
- Head first, then body, with the other part frozen (`requires_grad = False` in the code's
  `LocalUpdate.train`); here `frozen` also keeps the frozen part's BatchNorm statistics fixed.
- The body stage uses the batches FedAvg's local training would (stream 0, so comparisons stay
  paired); the head stage its own stream. Each stage has its own optimizer (disjoint parameters);
  a straggler does its share of each stage. The round reports the body stage's fit.
"""

from __future__ import annotations

from dataclasses import dataclass

from bench.methods import Method, hparam, register
from bench.methods.fedavg_fc import FedAvgFC

HEAD_STREAM = 1  # batch-order stream of the head stage (the body stage has FedAvg's, 0)


@register
@dataclass(kw_only=True)
class FedRep(Method):
    """FedRep: personal head trained first with the body frozen, then the shared body."""

    name = "fedrep"
    head_epochs: int = hparam(10, "local epochs of the head stage per round (body frozen)", minimum=1)
    personal_layers = FedAvgFC.personal_layers

    def private_epochs(self, train):
        return self.head_epochs + train["local_epochs"]  # the head stage, then the body stage

    def train(self, fed, client):
        model = fed.model_of(client)
        fed.fit(client, epochs=self.head_epochs, frozen=[model.body], stream=HEAD_STREAM, state_key="head_optimizer")
        return fed.fit(client, frozen=[model.head])
