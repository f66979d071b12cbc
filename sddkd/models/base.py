"""The one interface every sddkd network has: last feature map, classifier, logits.

Models know nothing of distillation: `forward` is a plain classifier. The multi-scale head
(`heads.region_logits`) is written once against `forward_features` + `get_classifier`.
"""

from __future__ import annotations

import abc
import math
from typing import Literal, Protocol

import torch
import torch.nn.functional as F
from torch import nn

# "cifar": the field's 32x32 stems. "cub": the SDD authors' 224x224 variant, a 7x7 stride-2 first convolution.
Stem = Literal["cifar", "cub"]


def stem_for(dataset: str) -> Stem:
    return "cub" if dataset == "cub200" else "cifar"


class MultiScaleModel(Protocol):
    """What the multi-scale head needs from a model."""

    def forward_features(self, x: torch.Tensor) -> torch.Tensor: ...

    def get_classifier(self) -> nn.Module: ...


class ImageClassifier(nn.Module, abc.ABC):
    """Base of every registered network: logits = classifier(global average pool(forward_features(x))).

    Subclasses (or torchvision classes mixed in after this one) provide `forward_features` and
    `get_classifier`.
    """

    @abc.abstractmethod
    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """The last feature map `[B, C, H, W]`, exactly what the global average pooling sees."""

    @abc.abstractmethod
    def get_classifier(self) -> nn.Module:
        """The module mapping pooled features `[..., C]` to logits `[..., K]`."""

    def forward_head(self, features: torch.Tensor) -> torch.Tensor:
        pooled = F.adaptive_avg_pool2d(features, 1).flatten(1)  # [B, C]
        return self.get_classifier()(pooled)  # [B, K]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


def cub_stem_conv(out_channels: int) -> nn.Conv2d:
    """The CUB-200 first convolution: 7x7, stride 2, padding 3 (224 -> 112), no bias."""
    return nn.Conv2d(3, out_channels, kernel_size=7, stride=2, padding=3, bias=False)


def fan_out_init_(model: nn.Module, linear_std: float | None = 0.01) -> None:
    """The reference zoo's initialisation: He-normal convolutions over fan-out, unit BatchNorm, zero biases, and
    N(0, linear_std) classifier weights (None keeps PyTorch's default Linear weights, as WRN does)."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            fan_out = m.kernel_size[0] * m.kernel_size[1] * m.out_channels
            nn.init.normal_(m.weight, 0.0, math.sqrt(2.0 / fan_out))
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            if linear_std is not None:
                nn.init.normal_(m.weight, 0.0, linear_std)
            nn.init.zeros_(m.bias)
