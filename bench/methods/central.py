"""Centralised training: every client's training data pooled and trained as one model, the
upper bound a federated method is measured against (FLamby's "Pooled" baseline).

Each round one trainer (in client 0's place, with its seed stream) makes `train.local_epochs`
passes over the union of all clients' training splits; nothing is communicated, so no bytes are
counted. The model is evaluated like any global model: on the global test set, and on every
client's local test split. Participation sampling does not apply (there is one trainer); a
configured dropout or straggler rate still applies to that one trainer, as to a client.
"""

from __future__ import annotations

import torch

from bench.methods import Method, register


@register
class Central(Method):
    """Centralised: all clients' data pooled into one trainer (the upper bound)."""

    name = "central"
    mean_of_updates = "the pooled baseline trains one model on every client's data, not a mean of client updates"
    private_training = "it trains on every client's records pooled, outside the clients' DP-SGD fits"

    def select_clients(self, fed, sampled):
        return fed.clients[:1]

    def train(self, fed, client):
        pooled = torch.cat([c.train for c in fed.clients])
        return fed.fit(client, indices=pooled, loss=self.client_loss(fed, client), extra_loss=self.local_loss(fed, client))

    def aggregate(self, fed, updates):
        return updates.states[0].clone()

    def download_bytes(self, fed, client):
        return 0

    def upload_bytes(self, fed, client, update):
        return 0
