"""VGG-BN nets of the CIFAR zoo (RepDistiller / mdistiller `vgg.py`): vgg8, vgg11, vgg13, vgg16, vgg19.

Five conv blocks `block0..block4` (Conv-BN-ReLU, the last ReLU of each block applied in `forward`), 2x2
max-pools after blocks 0-2, global average pooling, one Linear `classifier`. At 32 px the last map is 4x4.
The reference max-pools after block 3 only for 64-px inputs (Tiny-ImageNet), so never on CIFAR-100 or CUB-200;
the SDD authors' CUB VGGs are the CIFAR ones unchanged (no new stem), giving a 28x28 last map at 224 px.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from sddkd.datasets import CIFAR_STYLE_GEOMETRIES
from sddkd.models.base import ImageClassifier, fan_out_init_
from sddkd.models.registry import register_model

# Output channels of each conv in blocks 0..4.
VGG_CONFIGS: dict[str, list[list[int]]] = {
    "vgg8": [[64], [128], [256], [512], [512]],
    "vgg11": [[64], [128], [256, 256], [512, 512], [512, 512]],
    "vgg13": [[64, 64], [128, 128], [256, 256], [512, 512], [512, 512]],
    "vgg16": [[64, 64], [128, 128], [256, 256, 256], [512, 512, 512], [512, 512, 512]],
    "vgg19": [[64, 64], [128, 128], [256, 256, 256, 256], [512, 512, 512, 512], [512, 512, 512, 512]],
}


def _conv_block(widths: list[int], in_channels: int) -> nn.Sequential:
    layers: list[nn.Module] = []
    for width in widths:
        layers += [
            nn.Conv2d(in_channels, width, kernel_size=3, padding=1),
            nn.BatchNorm2d(width),
            nn.ReLU(True),
        ]
        in_channels = width
    return nn.Sequential(*layers[:-1])  # the block's last ReLU is applied by the caller, as in the reference


class VGG(ImageClassifier):
    def __init__(self, config: list[list[int]], num_classes: int):
        super().__init__()
        self.block0 = _conv_block(config[0], 3)
        self.block1 = _conv_block(config[1], config[0][-1])
        self.block2 = _conv_block(config[2], config[1][-1])
        self.block3 = _conv_block(config[3], config[2][-1])
        self.block4 = _conv_block(config[4], config[3][-1])
        self.pool = nn.MaxPool2d(kernel_size=2, stride=2)
        self.classifier = nn.Linear(config[4][-1], num_classes)
        fan_out_init_(self)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(F.relu(self.block0(x)))
        x = self.pool(F.relu(self.block1(x)))
        x = self.pool(F.relu(self.block2(x)))
        x = F.relu(self.block3(x))
        return F.relu(self.block4(x))  # [B, 512, 4, 4] at 32 px, [B, 512, 28, 28] at 224 px

    def get_classifier(self) -> nn.Module:
        return self.classifier


@register_model("vgg8", datasets=CIFAR_STYLE_GEOMETRIES)
def vgg8(num_classes: int, dataset: str) -> VGG:
    return VGG(VGG_CONFIGS["vgg8"], num_classes)


@register_model("vgg11", datasets=CIFAR_STYLE_GEOMETRIES)
def vgg11(num_classes: int, dataset: str) -> VGG:
    return VGG(VGG_CONFIGS["vgg11"], num_classes)


@register_model("vgg13", datasets=CIFAR_STYLE_GEOMETRIES)
def vgg13(num_classes: int, dataset: str) -> VGG:
    return VGG(VGG_CONFIGS["vgg13"], num_classes)


@register_model("vgg16", datasets=CIFAR_STYLE_GEOMETRIES)
def vgg16(num_classes: int, dataset: str) -> VGG:
    return VGG(VGG_CONFIGS["vgg16"], num_classes)


@register_model("vgg19", datasets=CIFAR_STYLE_GEOMETRIES)
def vgg19(num_classes: int, dataset: str) -> VGG:
    return VGG(VGG_CONFIGS["vgg19"], num_classes)
