"""A small CNN for CPU-sized runs: conv-BN-ReLU-maxpool stages, then global average pooling."""

from __future__ import annotations

from torch import nn

from bench.models.classifier import Classifier


def build(num_classes: int, in_chans: int, image_size: int, weights: str | None = None, widths: list[int] = (32, 64, 128)) -> Classifier:
    layers: list[nn.Module] = []
    channels, size = in_chans, image_size
    for width in widths:
        layers += [nn.Conv2d(channels, width, 3, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU(inplace=True)]
        if size >= 2:
            layers.append(nn.MaxPool2d(2))
            size //= 2
        channels = width
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten()]
    model = Classifier(nn.Sequential(*layers), channels, num_classes)
    if weights:
        from bench.models.weights import load_local_weights

        load_local_weights(model, weights)
    return model
