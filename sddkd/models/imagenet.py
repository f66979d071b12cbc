"""ImageNet nets: torchvision's resnet18/34/50/101 and mobilenet_v2, and the "MobileNet" (V1) student.

The torchvision nets are subclasses of torchvision's own classes, so their state dicts are torchvision's and
its pretrained weights load unchanged. `MobileNetV1` follows mdistiller's ImageNet MobileNetV1 key names
(`model.0` ... `model.13`, `fc`), so checkpoints of the SDD/LSKD ImageNet student load too.
"""

from __future__ import annotations

import torch
from torch import nn
from torchvision.models.mobilenetv2 import MobileNetV2 as _TorchvisionMobileNetV2
from torchvision.models.resnet import BasicBlock, Bottleneck
from torchvision.models.resnet import ResNet as _TorchvisionResNet

from sddkd.models.base import ImageClassifier
from sddkd.models.registry import register_model

IMAGENET = ("imagenet",)


class TorchvisionResNet(ImageClassifier, _TorchvisionResNet):
    # torchvision's modules, declared for the type checker (it cannot follow torchvision's attributes).
    conv1: nn.Conv2d
    bn1: nn.BatchNorm2d
    relu: nn.ReLU
    maxpool: nn.MaxPool2d
    layer1: nn.Sequential
    layer2: nn.Sequential
    layer3: nn.Sequential
    layer4: nn.Sequential
    fc: nn.Linear

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer2(self.layer1(x))
        return self.layer4(self.layer3(x))  # [B, 512 * expansion, 7, 7] at 224 px

    def get_classifier(self) -> nn.Module:
        return self.fc


class TorchvisionMobileNetV2(ImageClassifier, _TorchvisionMobileNetV2):
    features: nn.Sequential
    classifier: nn.Sequential

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)  # [B, 1280, 7, 7] at 224 px

    def get_classifier(self) -> nn.Module:
        return self.classifier  # Sequential(Dropout(0.2), Linear(1280, K))


def _conv_bn_relu(in_channels: int, out_channels: int, stride: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, 3, stride, 1, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    )


def _depthwise_separable(in_channels: int, out_channels: int, stride: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_channels, in_channels, 3, stride, 1, groups=in_channels, bias=False),
        nn.BatchNorm2d(in_channels),
        nn.ReLU(inplace=True),
        nn.Conv2d(in_channels, out_channels, 1, 1, 0, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    )


# (output channels, stride) of the 13 depthwise-separable layers after the 32-channel stride-2 stem.
_MOBILENET_V1_LAYERS = [(64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2), (512, 1), (512, 1),
                        (512, 1), (512, 1), (512, 1), (1024, 2), (1024, 1)]  # fmt: skip


class MobileNetV1(ImageClassifier):
    """MobileNet (Howard et al. 2017), width 1.0: `model` = stem + 13 depthwise-separable layers; `fc`."""

    def __init__(self, num_classes: int = 1000):
        super().__init__()
        layers = [_conv_bn_relu(3, 32, 2)]
        in_channels = 32
        for out_channels, stride in _MOBILENET_V1_LAYERS:
            layers.append(_depthwise_separable(in_channels, out_channels, stride))
            in_channels = out_channels
        self.model = nn.Sequential(*layers)
        self.fc = nn.Linear(in_channels, num_classes)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)  # [B, 1024, 7, 7] at 224 px

    def get_classifier(self) -> nn.Module:
        return self.fc


@register_model("resnet18", datasets=IMAGENET)
def resnet18(num_classes: int, dataset: str) -> TorchvisionResNet:
    return TorchvisionResNet(BasicBlock, [2, 2, 2, 2], num_classes=num_classes)


@register_model("resnet34", datasets=IMAGENET)
def resnet34(num_classes: int, dataset: str) -> TorchvisionResNet:
    return TorchvisionResNet(BasicBlock, [3, 4, 6, 3], num_classes=num_classes)


@register_model("resnet50", datasets=IMAGENET)
def resnet50(num_classes: int, dataset: str) -> TorchvisionResNet:
    return TorchvisionResNet(Bottleneck, [3, 4, 6, 3], num_classes=num_classes)


@register_model("resnet101", datasets=IMAGENET)
def resnet101(num_classes: int, dataset: str) -> TorchvisionResNet:
    return TorchvisionResNet(Bottleneck, [3, 4, 23, 3], num_classes=num_classes)


@register_model("MobileNetV1", datasets=IMAGENET)
def mobilenet_v1(num_classes: int, dataset: str) -> MobileNetV1:
    return MobileNetV1(num_classes)


@register_model("mobilenet_v2", datasets=IMAGENET)
def mobilenet_v2(num_classes: int, dataset: str) -> TorchvisionMobileNetV2:
    return TorchvisionMobileNetV2(num_classes=num_classes)
