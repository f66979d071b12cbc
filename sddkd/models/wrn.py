"""Wide ResNets of the CIFAR zoo (RepDistiller / mdistiller `wrn.py`): wrn_16_1, wrn_16_2, wrn_40_1, wrn_40_2.

Pre-activation blocks; the final BN + ReLU belong to the features (the reference pools after them).
The reference hard-codes an 8x8 average pool and so cannot run at 224 px; here pooling is global, and on CUB
the 3x3 stride-1 `conv1` becomes the 7x7 stride-2 stem the SDD authors gave their other CUB nets (last map
28x28 at 224 px).
"""

from __future__ import annotations

import torch
from torch import nn

from sddkd.datasets import CIFAR_STYLE_GEOMETRIES
from sddkd.models.base import ImageClassifier, Stem, cub_stem_conv, fan_out_init_, stem_for
from sddkd.models.registry import register_model


class PreActBlock(nn.Module):
    """BN-ReLU-conv twice; a 1x1 `convShortcut` (on the pre-activated input) when the width changes."""

    def __init__(self, in_planes: int, out_planes: int, stride: int):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.relu1 = nn.ReLU(inplace=True)
        self.conv1 = nn.Conv2d(in_planes, out_planes, kernel_size=3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_planes)
        self.relu2 = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(out_planes, out_planes, kernel_size=3, stride=1, padding=1, bias=False)
        self.equal_in_out = in_planes == out_planes
        # Registered only when needed, so its key exists exactly where the reference's does.
        self.convShortcut = (
            None
            if self.equal_in_out
            else nn.Conv2d(in_planes, out_planes, kernel_size=1, stride=stride, padding=0, bias=False)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        activated = self.relu1(self.bn1(x))
        out = self.conv2(self.relu2(self.bn2(self.conv1(activated))))
        if self.convShortcut is None:
            return x + out
        return self.convShortcut(activated) + out


class NetworkBlock(nn.Module):
    """A stage of `num_layers` PreActBlocks under the attribute `layer` (the reference's key prefix)."""

    def __init__(self, num_layers: int, in_planes: int, out_planes: int, stride: int):
        super().__init__()
        self.layer = nn.Sequential(
            *[
                PreActBlock(in_planes if i == 0 else out_planes, out_planes, stride if i == 0 else 1)
                for i in range(num_layers)
            ]
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layer(x)


class WideResNet(ImageClassifier):
    """WRN-depth-widen: depth = 6n + 4, widths (16, 16k, 32k, 64k)."""

    def __init__(self, depth: int, widen_factor: int, num_classes: int, stem: Stem = "cifar"):
        super().__init__()
        if (depth - 4) % 6 != 0:
            raise ValueError(f"WideResNet depth must be 6n+4 (16, 22, 28, 40, ...), got {depth}")
        n = (depth - 4) // 6
        widths = [16, 16 * widen_factor, 32 * widen_factor, 64 * widen_factor]
        if stem == "cub":
            self.conv1 = cub_stem_conv(widths[0])
        else:
            self.conv1 = nn.Conv2d(3, widths[0], kernel_size=3, stride=1, padding=1, bias=False)
        self.block1 = NetworkBlock(n, widths[0], widths[1], stride=1)
        self.block2 = NetworkBlock(n, widths[1], widths[2], stride=2)
        self.block3 = NetworkBlock(n, widths[2], widths[3], stride=2)
        self.bn1 = nn.BatchNorm2d(widths[3])
        self.relu = nn.ReLU(inplace=True)
        self.fc = nn.Linear(widths[3], num_classes)
        fan_out_init_(self, linear_std=None)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.block3(self.block2(self.block1(self.conv1(x))))
        return self.relu(self.bn1(x))  # [B, 64k, 8, 8] at 32 px

    def get_classifier(self) -> nn.Module:
        return self.fc


@register_model("wrn_16_1", datasets=CIFAR_STYLE_GEOMETRIES)
def wrn_16_1(num_classes: int, dataset: str) -> WideResNet:
    return WideResNet(16, 1, num_classes, stem=stem_for(dataset))


@register_model("wrn_16_2", datasets=CIFAR_STYLE_GEOMETRIES)
def wrn_16_2(num_classes: int, dataset: str) -> WideResNet:
    return WideResNet(16, 2, num_classes, stem=stem_for(dataset))


@register_model("wrn_40_1", datasets=CIFAR_STYLE_GEOMETRIES)
def wrn_40_1(num_classes: int, dataset: str) -> WideResNet:
    return WideResNet(40, 1, num_classes, stem=stem_for(dataset))


@register_model("wrn_40_2", datasets=CIFAR_STYLE_GEOMETRIES)
def wrn_40_2(num_classes: int, dataset: str) -> WideResNet:
    return WideResNet(40, 2, num_classes, stem=stem_for(dataset))
