"""MobileNetV2 of the CIFAR zoo: RepDistiller's `mobile_half` (expansion 6, width 0.5, 1280-channel head).

Last map 2x2 at 32 px (overall stride 16). The classifier is `Sequential(Linear)` (key `classifier.0`);
its Linear is what `get_classifier` returns. On CUB the stem becomes conv 7x7 s2 -> BN -> ReLU -> MaxPool
2x2 in the same Sequential `conv1` (the SDD authors' CUB variant): 224 px -> 56 before the blocks, 7x7 at
the end.
"""

from __future__ import annotations

import torch
from torch import nn

from sddkd.datasets import CIFAR_STYLE_GEOMETRIES
from sddkd.models.base import ImageClassifier, Stem, fan_out_init_, stem_for
from sddkd.models.registry import register_model

# (expansion t, output channels c, repeats n, first stride s) before the width multiplier;
# t = None means the net's expansion T (6 for mobile_half).
_INVERTED_RESIDUAL_SETTING = [(1, 16, 1, 1), (None, 24, 2, 1), (None, 32, 3, 2), (None, 64, 4, 2),
                              (None, 96, 3, 1), (None, 160, 3, 2), (None, 320, 1, 1)]  # fmt: skip


class InvertedResidual(nn.Module):
    """1x1 expand -> 3x3 depthwise -> 1x1 linear projection; residual when shapes allow (key `conv`)."""

    def __init__(self, in_channels: int, out_channels: int, stride: int, expand_ratio: int):
        super().__init__()
        hidden = in_channels * expand_ratio
        self.use_residual = stride == 1 and in_channels == out_channels
        self.conv = nn.Sequential(
            nn.Conv2d(in_channels, hidden, 1, 1, 0, bias=False),
            nn.BatchNorm2d(hidden),
            nn.ReLU(inplace=True),
            nn.Conv2d(hidden, hidden, 3, stride, 1, groups=hidden, bias=False),
            nn.BatchNorm2d(hidden),
            nn.ReLU(inplace=True),
            nn.Conv2d(hidden, out_channels, 1, 1, 0, bias=False),
            nn.BatchNorm2d(out_channels),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv(x) if self.use_residual else self.conv(x)


def _stem(out_channels: int, stem: Stem) -> nn.Sequential:
    if stem == "cub":
        return nn.Sequential(
            nn.Conv2d(3, out_channels, 7, 2, 3, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(kernel_size=2, stride=2),
        )
    return nn.Sequential(
        nn.Conv2d(3, out_channels, 3, 2, 1, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    )


class CifarMobileNetV2(ImageClassifier):
    def __init__(self, expansion: int, width_mult: float, num_classes: int, stem: Stem = "cifar"):
        super().__init__()
        in_channels = int(32 * width_mult)
        self.conv1 = _stem(in_channels, stem)
        self.blocks = nn.ModuleList()
        for t, c, n, s in _INVERTED_RESIDUAL_SETTING:
            out_channels = int(c * width_mult)
            layers = []
            for stride in [s] + [1] * (n - 1):
                layers.append(InvertedResidual(in_channels, out_channels, stride, expansion if t is None else t))
                in_channels = out_channels
            self.blocks.append(nn.Sequential(*layers))
        last_channels = int(1280 * width_mult) if width_mult > 1.0 else 1280
        self.conv2 = nn.Sequential(
            nn.Conv2d(in_channels, last_channels, 1, 1, 0, bias=False),
            nn.BatchNorm2d(last_channels),
            nn.ReLU(inplace=True),
        )
        self.classifier = nn.Sequential(nn.Linear(last_channels, num_classes))
        fan_out_init_(self)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv1(x)
        for block in self.blocks:
            x = block(x)
        return self.conv2(x)  # [B, 1280, 2, 2] at 32 px, [B, 1280, 7, 7] at 224 px (CUB stem)

    def get_classifier(self) -> nn.Module:
        return self.classifier[0]


@register_model("MobileNetV2", datasets=CIFAR_STYLE_GEOMETRIES)
def mobilenetv2_half(num_classes: int, dataset: str) -> CifarMobileNetV2:
    return CifarMobileNetV2(expansion=6, width_mult=0.5, num_classes=num_classes, stem=stem_for(dataset))
