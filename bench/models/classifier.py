"""The shape every fedrank model has: a feature extractor `body` and a linear `head`."""

from __future__ import annotations

import torch
from torch import nn


class Classifier(nn.Module):
    """`body` maps images to a feature vector, `head` (one Linear) maps it to class logits.

    Methods rely on this split: `head.*` is the final classifier layer (kept personal by the
    -FC variants, FedRep), `body(x)` is the representation (MOON's contrastive term).
    """

    def __init__(self, body: nn.Module, num_features: int, num_classes: int):
        super().__init__()
        self.body = body
        self.head = nn.Linear(num_features, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x))
