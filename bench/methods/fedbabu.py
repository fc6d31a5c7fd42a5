"""FedBABU (Oh, Kim & Yun, "FedBABU: Toward Enhanced Representation for Federated Image
Classification", ICLR 2022): only the body is trained and shared; the head stays at its random
initialisation during federated training; each client personalises by fine-tuning at evaluation.

  local:  theta_body <- theta_body - eta grad CE(h_0(theta_body(x)), y)   head h_0 fixed
  server: theta_body^{t+1} = sum_i p_i theta_body_i                      (FedAvg, body only)
  eval:   client i's model = (theta_body^t, h_0) with ALL parameters fine-tuned on its training
          split for `finetune_epochs` epochs (plain cross-entropy)
Only the body is received and uploaded: the head is the shared initial one, which every client
already holds, and is never sent.

Choices and sources:
- Fine-tuning updates the whole model (body and head), as the paper's personalisation and the
  authors' code (jhoon-oh/FedBABU, analysis.ipynb: one SGD over body and head parameters with
  the same lr), for 5 epochs (`--ft_ep 5`, `personalization_epoch = 5`); lr = train.lr.
- Fine-tuning runs on a scratch model loaded with the global state; it is seeded per (round,
  client), so it is deterministic, and leaves no client state behind (its optimizer is never
  kept); a straggler's share of work applies only to training, not to it.
- Aggregation is the engine's sample-weighted FedAvg (the authors' code takes the plain mean).
"""

from __future__ import annotations

from dataclasses import dataclass

from bench.methods import Method, hparam, register
from bench.methods.model_copies import holding

FINETUNE_STREAM = 0xBAB  # batch-order stream of the evaluation-time fine-tuning


@register
@dataclass(kw_only=True)
class FedBABU(Method):
    """FedBABU: body-only training with a fixed random head; full fine-tuning per client at evaluation."""

    name = "fedbabu"
    finetune_epochs: int = hparam(5, "epochs of whole-model fine-tuning on a client's training split at evaluation", minimum=1)

    def aggregated_layers(self, fed):
        return ~fed.classifier_layers

    def received_layers(self, fed, client):
        return ~fed.classifier_layers

    def personalized(self, fed):
        return True

    def train(self, fed, client):
        return fed.fit(client, frozen=[fed.model_of(client).head])

    def client_model(self, fed, client):
        model = holding(fed, "finetune", fed.global_state)
        fed.fit(client, model=model, persist=False, epochs=self.finetune_epochs, stream=FINETUNE_STREAM)
        return model
