"""Ditto (Li, Hu, Beirami & Smith, "Ditto: Fair and Robust Federated Learning Through
Personalization", ICML 2021): FedAvg for the global model w, plus a personal model v_i per client
pulled towards the global model of the round.

On client i in round t, from the global model w^t:
         w_i <- w_i - eta grad F_i(w_i)                       FedAvg's local training (train.local_epochs)
         v_i <- v_i - eta (grad F_i(v_i) + lam (v_i - w^t))   `personal_epochs` epochs: the local
                                                              loss F_i(v_i) + (lam/2) ||v_i - w^t||^2
  server w^{t+1} = sum_i p_i w_i                              (FedAvg; v_i never leaves the client)
Each client is evaluated on its v_i; the global model is w.

Choices and sources:
- lam = 1: the authors' runs on clean (uncorrupted) data (litian96/ditto,
  run_*_clean_ditto_lam1.sh, `--lam=1`), one of the code's dynamic-lambda candidates {0.1, 1, 2}.
- personal_epochs = 0 means train.local_epochs: the reference code takes one personal step per
  global step, on the same mini-batch (`solve_sgd(data_batch)` for v, then for w). v's update
  depends only on v and the fixed w^t, so training w first and v after, on the same batch stream,
  gives the same v as interleaving them.
- v_i starts from the initial model w^0 (the code's `local_models` are copies of the initial
  model) and is kept in client state as a flat vector; the proximal term covers the trainable
  tensors (BatchNorm statistics are v_i's own).
"""

from __future__ import annotations

from dataclasses import dataclass

from bench.methods import Method, hparam, loguniform, proximal_term, register
from bench.methods.model_copies import personal_model, remember_initial_model, store_personal_model


@register
@dataclass(kw_only=True)
class Ditto(Method):
    """Ditto: FedAvg plus a personal model per client, regularised towards the global model."""

    name = "ditto"
    lam: float = hparam(1.0, "weight lam of the personal model's proximal term (lam/2)||v_i - w^t||^2", minimum=0,
                        search=loguniform(0.01, 2.0, source="Li et al. ICML 2021, App.: lam from {0.01, 0.1, 1, 2}"))
    personal_epochs: int = hparam(0, "local epochs of the personal model per round (0 = train.local_epochs, as the reference)", minimum=0)

    def setup(self, fed):
        remember_initial_model(fed)

    def personalized(self, fed):
        return True

    def private_epochs(self, train):
        return train["local_epochs"] + (self.personal_epochs or train["local_epochs"])  # the global fit, then the personal one

    def train(self, fed, client):
        fit = super().train(fed, client)
        personal = personal_model(fed, client)
        fed.fit(client, model=personal, epochs=self.personal_epochs or None, state_key="personal_optimizer",
                extra_loss=proximal_term(fed, self.lam, ~fed.layout.no_layers(), personal))
        store_personal_model(fed, client, personal)
        return fit

    def client_model(self, fed, client):
        return personal_model(fed, client)
