"""Compact CIFAR-style ResNet-10/12, MobileNetV2 and ShuffleNetV2 for model-heterogeneous runs.

The model-heterogeneous FL papers (RHFL, Fang & Ye 2022, reference code FangXiuwen/Robust_FL;
MDH-FL, Madni et al. 2023, which uses RHFL's zoo) give each client one of ResNet-10, ResNet-12,
ShuffleNetV2 and MobileNetV2 in their CIFAR form: a stride-1 3x3 stem and three stride-2 stages,
so 32 px images end on 4 x 4 feature maps (and the 8 px test images on 1 x 1). timm has ResNet-10
(`resnet10t`) and MobileNetV2, but in their ImageNet form (a stride-4 stem, 1 x 1 maps at 32 px,
4.9M parameters for resnet10t), and no ResNet-12 or ShuffleNetV2; these are the same block
designs (He et al. 2016; Sandler et al. 2018; Ma et al. 2018) with the widths as options, small
enough by default for CPU runs (ResNet-10/12: RHFL's [1,1,1,1] / [2,1,1,1] basic blocks);
`stem_stride: 2` halves the resolution in the stem, ~3x cheaper at 32 px.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from bench.models.classifier import Classifier


def conv_bn(cin: int, cout: int, kernel: int = 3, stride: int = 1, groups: int = 1, relu: bool = True) -> nn.Sequential:
    layers: list[nn.Module] = [nn.Conv2d(cin, cout, kernel, stride, kernel // 2, groups=groups, bias=False), nn.BatchNorm2d(cout)]
    return nn.Sequential(*layers, nn.ReLU(inplace=True)) if relu else nn.Sequential(*layers)


def head_of(stages: list[nn.Module], width: int, num_classes: int, weights: str | None) -> Classifier:
    model = Classifier(nn.Sequential(*stages, nn.AdaptiveAvgPool2d(1), nn.Flatten()), width, num_classes)
    if weights:
        from bench.models.weights import load_local_weights

        load_local_weights(model, weights)
    return model


class BasicBlock(nn.Module):
    """conv-BN-ReLU-conv-BN plus the (projected) input, then ReLU."""

    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.body = nn.Sequential(conv_bn(cin, cout, 3, stride), conv_bn(cout, cout, 3, 1, relu=False))
        self.shortcut = nn.Identity() if stride == 1 and cin == cout else conv_bn(cin, cout, 1, stride, relu=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.body(x) + self.shortcut(x))


def resnet(num_classes: int, in_chans: int, image_size: int, weights: str | None, blocks: Sequence[int],
           widths: Sequence[int], stem_stride: int) -> Classifier:
    """ResNet of basic blocks: `blocks[i]` blocks of width `widths[i]`, stages 2.. at stride 2."""
    stages: list[nn.Module] = [conv_bn(in_chans, widths[0], 3, stem_stride)]
    cin = widths[0]
    for stage, (count, width) in enumerate(zip(blocks, widths)):
        for block in range(count):
            stages.append(BasicBlock(cin, width, 2 if stage and not block else 1))
            cin = width
    return head_of(stages, cin, num_classes, weights)


def resnet10(num_classes: int, in_chans: int, image_size: int, weights: str | None = None,
             widths: Sequence[int] = (16, 32, 64, 128), stem_stride: int = 1) -> Classifier:
    """ResNet-10 (RHFL): one basic block per stage."""
    return resnet(num_classes, in_chans, image_size, weights, (1, 1, 1, 1), widths, stem_stride)


def resnet12(num_classes: int, in_chans: int, image_size: int, weights: str | None = None,
             widths: Sequence[int] = (16, 32, 64, 128), stem_stride: int = 1) -> Classifier:
    """ResNet-12 (RHFL): two basic blocks in the first stage, one in the others."""
    return resnet(num_classes, in_chans, image_size, weights, (2, 1, 1, 1), widths, stem_stride)


class InvertedResidual(nn.Module):
    """MobileNetV2's block: 1x1 expansion, 3x3 depthwise, linear 1x1 projection; residual when shapes match."""

    def __init__(self, cin: int, cout: int, stride: int, expansion: int):
        super().__init__()
        hidden = cin * expansion
        self.body = nn.Sequential(conv_bn(cin, hidden, 1), conv_bn(hidden, hidden, 3, stride, groups=hidden), conv_bn(hidden, cout, 1, relu=False))
        self.residual = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x) if self.residual else self.body(x)


def mobilenet_v2(num_classes: int, in_chans: int, image_size: int, weights: str | None = None,
                 widths: Sequence[int] = (16, 24, 32, 64), expansion: int = 4, stem_stride: int = 1) -> Classifier:
    """MobileNetV2: two inverted-residual blocks per width after the stem (the first at stride 2), then a 1x1 conv."""
    stages: list[nn.Module] = [conv_bn(in_chans, widths[0], 3, stem_stride)]
    for cin, cout in zip(widths, widths[1:]):
        stages += [InvertedResidual(cin, cout, 2, expansion), InvertedResidual(cout, cout, 1, expansion)]
    stages.append(conv_bn(widths[-1], 2 * widths[-1], 1))
    return head_of(stages, 2 * widths[-1], num_classes, weights)


def channel_shuffle(x: torch.Tensor, groups: int = 2) -> torch.Tensor:
    n, c, h, w = x.shape
    return x.view(n, groups, c // groups, h, w).transpose(1, 2).reshape(n, c, h, w)


class ShuffleUnit(nn.Module):
    """ShuffleNetV2's unit: at stride 1 half the channels pass through and half go through
    1x1-dw3x3-1x1; at stride 2 both halves are downsampled; then the channels are shuffled."""

    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        half = cout // 2
        self.stride = stride
        branch_in = cin if stride == 2 else cin // 2
        self.branch = nn.Sequential(conv_bn(branch_in, half, 1), conv_bn(half, half, 3, stride, groups=half, relu=False), conv_bn(half, half, 1))
        self.down = nn.Sequential(conv_bn(cin, cin, 3, 2, groups=cin, relu=False), conv_bn(cin, half, 1)) if stride == 2 else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.down is None:
            keep, work = x.chunk(2, dim=1)
            return channel_shuffle(torch.cat([keep, self.branch(work)], 1))
        return channel_shuffle(torch.cat([self.down(x), self.branch(x)], 1))


def shufflenet_v2(num_classes: int, in_chans: int, image_size: int, weights: str | None = None,
                  widths: Sequence[int] = (16, 32, 64, 128), stem_stride: int = 1) -> Classifier:
    """ShuffleNetV2: a downsampling and a plain unit per width after the stem (even widths)."""
    stages: list[nn.Module] = [conv_bn(in_chans, widths[0], 3, stem_stride)]
    for cin, cout in zip(widths, widths[1:]):
        stages += [ShuffleUnit(cin, cout, 2), ShuffleUnit(cout, cout, 1)]
    stages.append(conv_bn(widths[-1], 2 * widths[-1], 1))
    return head_of(stages, 2 * widths[-1], num_classes, weights)


BUILDERS = {"resnet10": resnet10, "resnet12": resnet12, "mobilenet_v2": mobilenet_v2, "shufflenet_v2": shufflenet_v2}
