"""The CIFAR ResNets of RepDistiller / mdistiller, with their CUB-200 variants.

- `ThreeStageResNet`: resnet8 ... resnet110, resnet8x4, resnet32x4 (RepDistiller `resnet.py`; depth 6n+2,
  BasicBlocks, last map 8x8 at 32 px).
- `FourStageResNet`: ResNet18, ResNet50 (RepDistiller `resnetv2.py`; last map 4x4 at 32 px).

Module names and order follow the references so the published checkpoints load with `strict=True`.
On CUB the 3x3 stride-1 `conv1` becomes a 7x7 stride-2 convolution (no max-pool), as in the SDD authors' code.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from sddkd.datasets import CIFAR_STYLE_GEOMETRIES
from sddkd.models.base import ImageClassifier, Stem, cub_stem_conv, stem_for
from sddkd.models.registry import register_model


def _first_conv(out_channels: int, stem: Stem) -> nn.Conv2d:
    if stem == "cub":
        return cub_stem_conv(out_channels)
    return nn.Conv2d(3, out_channels, kernel_size=3, stride=1, padding=1, bias=False)


class BasicBlock(nn.Module):
    """Two 3x3 convolutions with a residual; `downsample` (1x1 conv + BN) when the shape changes."""

    expansion = 1

    def __init__(self, in_planes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None):
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, kernel_size=3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(planes, planes, kernel_size=3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        residual = x if self.downsample is None else self.downsample(x)
        return F.relu(out + residual)


class ThreeStageResNet(ImageClassifier):
    """resnet{depth} with stage widths `widths = (stem, stage1, stage2, stage3)`; depth = 6n + 2."""

    def __init__(self, depth: int, widths: tuple[int, int, int, int], num_classes: int, stem: Stem = "cifar"):
        super().__init__()
        if (depth - 2) % 6 != 0:
            raise ValueError(f"ThreeStageResNet depth must be 6n+2 (8, 14, 20, 32, ...), got {depth}")
        blocks_per_stage = (depth - 2) // 6
        self.in_planes = widths[0]
        self.conv1 = _first_conv(widths[0], stem)
        self.bn1 = nn.BatchNorm2d(widths[0])
        self.relu = nn.ReLU(inplace=True)
        self.layer1 = self._make_layer(widths[1], blocks_per_stage, stride=1)
        self.layer2 = self._make_layer(widths[2], blocks_per_stage, stride=2)
        self.layer3 = self._make_layer(widths[3], blocks_per_stage, stride=2)
        self.fc = nn.Linear(widths[3], num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.constant_(m.weight, 1)
                nn.init.constant_(m.bias, 0)

    def _make_layer(self, planes: int, num_blocks: int, stride: int) -> nn.Sequential:
        downsample = None
        if stride != 1 or self.in_planes != planes:
            downsample = nn.Sequential(
                nn.Conv2d(self.in_planes, planes, kernel_size=1, stride=stride, bias=False),
                nn.BatchNorm2d(planes),
            )
        layers = [BasicBlock(self.in_planes, planes, stride, downsample)]
        self.in_planes = planes
        layers += [BasicBlock(planes, planes) for _ in range(1, num_blocks)]
        return nn.Sequential(*layers)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.bn1(self.conv1(x)))
        return self.layer3(self.layer2(self.layer1(x)))  # [B, widths[3], 8, 8] at 32 px

    def get_classifier(self) -> nn.Module:
        return self.fc


class ShortcutBasicBlock(nn.Module):
    """resnetv2's BasicBlock: the projection is `shortcut`, an empty Sequential when not needed."""

    expansion = 1

    def __init__(self, in_planes: int, planes: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, kernel_size=3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, kernel_size=3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut = _projection(in_planes, planes * self.expansion, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class ShortcutBottleneck(nn.Module):
    """resnetv2's Bottleneck (1x1 -> 3x3 -> 1x1, expansion 4)."""

    expansion = 4

    def __init__(self, in_planes: int, planes: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, kernel_size=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, kernel_size=3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * self.expansion, kernel_size=1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.shortcut = _projection(in_planes, planes * self.expansion, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = F.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return F.relu(out + self.shortcut(x))


def _projection(in_planes: int, out_planes: int, stride: int) -> nn.Sequential:
    if stride == 1 and in_planes == out_planes:
        return nn.Sequential()  # identity, no parameters
    return nn.Sequential(
        nn.Conv2d(in_planes, out_planes, kernel_size=1, stride=stride, bias=False),
        nn.BatchNorm2d(out_planes),
    )


class FourStageResNet(ImageClassifier):
    """ResNet18 / ResNet50 of the CIFAR zoo: 64-wide 3x3 stem, four stages (64, 128, 256, 512) x expansion."""

    def __init__(
        self,
        block: type[ShortcutBasicBlock] | type[ShortcutBottleneck],
        num_blocks: tuple[int, int, int, int],
        num_classes: int,
        stem: Stem = "cifar",
    ):
        super().__init__()
        self.in_planes = 64
        self.conv1 = _first_conv(64, stem)
        self.bn1 = nn.BatchNorm2d(64)
        self.layer1 = self._make_layer(block, 64, num_blocks[0], stride=1)
        self.layer2 = self._make_layer(block, 128, num_blocks[1], stride=2)
        self.layer3 = self._make_layer(block, 256, num_blocks[2], stride=2)
        self.layer4 = self._make_layer(block, 512, num_blocks[3], stride=2)
        self.linear = nn.Linear(512 * block.expansion, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.constant_(m.weight, 1)
                nn.init.constant_(m.bias, 0)

    def _make_layer(
        self,
        block: type[ShortcutBasicBlock] | type[ShortcutBottleneck],
        planes: int,
        num_blocks: int,
        stride: int,
    ) -> nn.Sequential:
        layers = []
        for block_stride in [stride] + [1] * (num_blocks - 1):
            layers.append(block(self.in_planes, planes, block_stride))
            self.in_planes = planes * block.expansion
        return nn.Sequential(*layers)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn1(self.conv1(x)))
        x = self.layer2(self.layer1(x))
        return self.layer4(self.layer3(x))  # [B, 512 * expansion, 4, 4] at 32 px

    def get_classifier(self) -> nn.Module:
        return self.linear


def _three_stage(depth: int, widths: tuple[int, int, int, int], num_classes: int, dataset: str) -> ThreeStageResNet:
    return ThreeStageResNet(depth, widths, num_classes, stem=stem_for(dataset))


_NARROW = (16, 16, 32, 64)
_WIDE_X4 = (32, 64, 128, 256)


@register_model("resnet8", datasets=CIFAR_STYLE_GEOMETRIES)
def resnet8(num_classes: int, dataset: str) -> ThreeStageResNet:
    return _three_stage(8, _NARROW, num_classes, dataset)


@register_model("resnet14", datasets=CIFAR_STYLE_GEOMETRIES)
def resnet14(num_classes: int, dataset: str) -> ThreeStageResNet:
    return _three_stage(14, _NARROW, num_classes, dataset)


@register_model("resnet20", datasets=CIFAR_STYLE_GEOMETRIES)
def resnet20(num_classes: int, dataset: str) -> ThreeStageResNet:
    return _three_stage(20, _NARROW, num_classes, dataset)


@register_model("resnet32", datasets=CIFAR_STYLE_GEOMETRIES)
def resnet32(num_classes: int, dataset: str) -> ThreeStageResNet:
    return _three_stage(32, _NARROW, num_classes, dataset)


@register_model("resnet44", datasets=CIFAR_STYLE_GEOMETRIES)
def resnet44(num_classes: int, dataset: str) -> ThreeStageResNet:
    return _three_stage(44, _NARROW, num_classes, dataset)


@register_model("resnet56", datasets=CIFAR_STYLE_GEOMETRIES)
def resnet56(num_classes: int, dataset: str) -> ThreeStageResNet:
    return _three_stage(56, _NARROW, num_classes, dataset)


@register_model("resnet110", datasets=CIFAR_STYLE_GEOMETRIES)
def resnet110(num_classes: int, dataset: str) -> ThreeStageResNet:
    return _three_stage(110, _NARROW, num_classes, dataset)


@register_model("resnet8x4", datasets=CIFAR_STYLE_GEOMETRIES)
def resnet8x4(num_classes: int, dataset: str) -> ThreeStageResNet:
    return _three_stage(8, _WIDE_X4, num_classes, dataset)


@register_model("resnet32x4", datasets=CIFAR_STYLE_GEOMETRIES)
def resnet32x4(num_classes: int, dataset: str) -> ThreeStageResNet:
    return _three_stage(32, _WIDE_X4, num_classes, dataset)


@register_model("ResNet18", datasets=CIFAR_STYLE_GEOMETRIES)
def resnet18_cifar(num_classes: int, dataset: str) -> FourStageResNet:
    return FourStageResNet(ShortcutBasicBlock, (2, 2, 2, 2), num_classes, stem=stem_for(dataset))


@register_model("ResNet50", datasets=CIFAR_STYLE_GEOMETRIES)
def resnet50_cifar(num_classes: int, dataset: str) -> FourStageResNet:
    return FourStageResNet(ShortcutBottleneck, (3, 4, 6, 3), num_classes, stem=stem_for(dataset))
