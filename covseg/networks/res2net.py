"""Res2Net-50 v1b (26w x 4s), the Inf-Net backbone (Gao et al., TPAMI 2019), written for covseg.

v1b means a deep stem (three 3x3 convolutions instead of one 7x7) and average-pool shortcuts on strided blocks.
No pretrained weights are downloaded: covseg trains from scratch or from its own checkpoints.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn


def conv_bn_relu(cin: int, cout: int, kernel: int = 3, stride: int = 1, relu: bool = True) -> nn.Sequential:
    """Convolution (no bias) + batch norm (+ ReLU)."""
    layers: list[nn.Module] = [
        nn.Conv2d(cin, cout, kernel, stride=stride, padding=kernel // 2, bias=False),
        nn.BatchNorm2d(cout),
    ]
    if relu:
        layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


class Res2NetBottleneck(nn.Module):
    """Bottleneck whose 3x3 stage is split into ``scale`` groups with hierarchical residual connections."""

    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int = 1, base_width: int = 26, scale: int = 4,
                 first_of_stage: bool = False) -> None:
        super().__init__()
        width = int(math.floor(planes * base_width / 64.0))
        self.width, self.scale, self.first = width, scale, first_of_stage
        self.reduce = conv_bn_relu(inplanes, width * scale, kernel=1)
        self.splits = nn.ModuleList(
            conv_bn_relu(width, width, kernel=3, stride=stride) for _ in range(scale - 1)
        )
        self.pool = nn.AvgPool2d(3, stride=stride, padding=1) if first_of_stage else None
        self.expand = conv_bn_relu(width * scale, planes * self.expansion, kernel=1, relu=False)
        self.shortcut: nn.Module = nn.Identity()
        if first_of_stage:
            self.shortcut = nn.Sequential(
                nn.AvgPool2d(stride, stride, ceil_mode=True, count_include_pad=False) if stride > 1
                else nn.Identity(),
                nn.Conv2d(inplanes, planes * self.expansion, 1, bias=False),
                nn.BatchNorm2d(planes * self.expansion),
            )
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: Tensor) -> Tensor:
        chunks = torch.split(self.reduce(x), self.width, dim=1)
        outs = []
        carry = None
        for i, conv in enumerate(self.splits):
            # The first block of a stage works on each chunk alone (it changes resolution).
            carry = chunks[i] if (carry is None or self.first) else carry + chunks[i]
            carry = conv(carry)
            outs.append(carry)
        last = chunks[-1]
        outs.append(self.pool(last) if self.pool is not None else last)
        return self.relu(self.expand(torch.cat(outs, dim=1)) + self.shortcut(x))


class Res2Net50(nn.Module):
    """Res2Net-50 v1b 26w x 4s feature extractor returning the four stage outputs (strides 4, 8, 16, 32)."""

    stage_channels = (256, 512, 1024, 2048)

    def __init__(self, in_channels: int = 1, base_width: int = 26, scale: int = 4,
                 layers: tuple[int, int, int, int] = (3, 4, 6, 3)) -> None:
        super().__init__()
        self.stem = nn.Sequential(
            conv_bn_relu(in_channels, 32, stride=2), conv_bn_relu(32, 32), conv_bn_relu(32, 64),
            nn.MaxPool2d(3, stride=2, padding=1),
        )
        inplanes = 64
        stages = []
        for i, (planes, blocks) in enumerate(zip((64, 128, 256, 512), layers)):
            stride = 1 if i == 0 else 2
            stage = [Res2NetBottleneck(inplanes, planes, stride, base_width, scale, first_of_stage=True)]
            inplanes = planes * Res2NetBottleneck.expansion
            stage += [Res2NetBottleneck(inplanes, planes, 1, base_width, scale) for _ in range(blocks - 1)]
            stages.append(nn.Sequential(*stage))
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        x1 = self.layer1(self.stem(x))
        x2 = self.layer2(x1)
        x3 = self.layer3(x2)
        return x1, x2, x3, self.layer4(x3)
