"""Res2Net50-SA, the FedLSC paper's model: timm `res2net50_26w_4s` + Shuffle Attention + classifier.

Shuffle Attention (SA-Net, Zhang & Yang, ICASSP 2021) follows the last stage: the channels are
split into `groups` sub-features; each is halved into a channel branch x * sigmoid(a * GAP(x) + b)
and a spatial branch x * sigmoid(c * GN(x) + d); the halves are concatenated and the channels
shuffled so information flows between groups.
"""

from __future__ import annotations

import torch
from torch import nn

from bench.models.classifier import Classifier
from bench.models.timm_models import create_backbone

BACKBONE = "res2net50_26w_4s"  # the timm architecture whose ImageNet weights model.weights holds


def channel_shuffle(x: torch.Tensor, groups: int) -> torch.Tensor:
    """Interleave `groups` blocks of channels: [a0 a1 | b0 b1] -> [a0 b0 a1 b1]."""
    b, c, h, w = x.shape
    return x.reshape(b, groups, c // groups, h, w).transpose(1, 2).reshape(b, c, h, w)


class ShuffleAttention(nn.Module):
    def __init__(self, channels: int, groups: int = 64):
        super().__init__()
        if channels % (2 * groups):
            raise ValueError(f"ShuffleAttention: {channels} channels cannot form {groups} groups of two halves")
        half = channels // (2 * groups)
        self.groups = groups
        # Initialised as in SA-Net: scale 0, shift 1, so each branch starts as x * sigmoid(1).
        self.channel_weight = nn.Parameter(torch.zeros(1, half, 1, 1))
        self.channel_bias = nn.Parameter(torch.ones(1, half, 1, 1))
        self.spatial_weight = nn.Parameter(torch.zeros(1, half, 1, 1))
        self.spatial_bias = nn.Parameter(torch.ones(1, half, 1, 1))
        self.norm = nn.GroupNorm(half, half)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        grouped = x.reshape(b * self.groups, c // self.groups, h, w)
        xc, xs = grouped.chunk(2, dim=1)
        xc = xc * torch.sigmoid(self.channel_weight * xc.mean(dim=(2, 3), keepdim=True) + self.channel_bias)
        xs = xs * torch.sigmoid(self.spatial_weight * self.norm(xs) + self.spatial_bias)
        return channel_shuffle(torch.cat([xc, xs], dim=1).reshape(b, c, h, w), 2)


class Res2NetSA(nn.Module):
    """Feature extractor: Res2Net-50 stages -> Shuffle Attention -> global average pooling."""

    def __init__(self, in_chans: int, weights: str | None, sa_groups: int):
        super().__init__()
        self.backbone = create_backbone(BACKBONE, in_chans, weights, global_pool="")
        self.num_features = self.backbone.num_features
        self.attention = ShuffleAttention(self.num_features, sa_groups)
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(self.attention(self.backbone(x)))


def build(num_classes: int, in_chans: int, image_size: int, weights: str | None = None, sa_groups: int = 64) -> Classifier:
    body = Res2NetSA(in_chans, weights, sa_groups)
    return Classifier(body, body.num_features, num_classes)
