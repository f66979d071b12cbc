"""The embedded default dataset: images generated deterministically from a seed, with no files.

Each class owns a prototype on a canvas larger than the image: a smooth colour layout (random 4x4 noise
upsampled bilinearly) plus an oriented coloured grating (angle, frequency, colour). Layouts and gratings are
shared between classes and each class is a distinct pair of them, so only their conjunction identifies it.
An image of class y is a random window of y's canvas (a shift), randomly flipped, with random contrast and
brightness, blended with a window of another class's prototype (a distractor, up to equal weight) and with
pixel noise. A small CNN learns the classes well above chance (resnet8: about 60% test top-1 after 15 epochs
of the 5,000 default images) while distractors and noise keep any net below 100%.

32-px data is stored at 32 px and goes through the CIFAR path (pad-4 crop + flip); 224-px data is stored at
256 px and goes through the CUB path (random 224 crop + flip; center crop at test time).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from sddkd.data.loader import crop_flip
from sddkd.datasets import SyntheticConfig

# Difficulty, in units of the prototype's scale (about 1): how much each cue contributes, the largest weight
# of the distractor (at 1 an image is as much the other class as its own: no net reaches 100%), pixel noise.
FIELD_WEIGHT = 0.8
TEXTURE_WEIGHT = 0.8
MAX_DISTRACTOR_WEIGHT = 1.0
NOISE_STD = 0.8
_CHUNK_VALUES = 1 << 22  # float32 values per rendered chunk (16 MB per temporary): bounds memory at 224 px


@dataclass(frozen=True)
class SyntheticData:
    """uint8 images [N, 3, H, W] and int64 labels [N] of both splits; classes are exactly balanced."""

    train_images: Tensor
    train_labels: Tensor
    test_images: Tensor
    test_labels: Tensor


def _prototypes(num_classes: int, canvas: int, image_size: int, generator: torch.Generator) -> Tensor:
    """Class prototypes [K, 3, canvas, canvas], float, roughly unit scale.

    Class k combines colour layout k // T with texture k % T (T = ceil(sqrt(K))): no single cue identifies a
    class, so a net has to learn conjunctions of colour and texture.
    """
    textures = math.ceil(math.sqrt(num_classes))
    layouts = math.ceil(num_classes / textures)
    coarse = torch.randn(layouts, 3, 4, 4, generator=generator)
    field = torch.nn.functional.interpolate(coarse, size=(canvas, canvas), mode="bilinear", align_corners=False)
    angle = torch.rand(textures, generator=generator) * math.pi  # [T] grating orientation
    cycles = 1.5 + 3.5 * torch.rand(textures, generator=generator)  # [T] periods per image width
    phase = torch.rand(textures, generator=generator) * 2 * math.pi
    colour = torch.randn(textures, 3, generator=generator)  # [T, 3]
    coords = torch.arange(canvas, dtype=torch.float32) / image_size  # image widths
    y, x = coords[:, None], coords[None, :]
    wave = torch.cos(angle)[:, None, None] * x + torch.sin(angle)[:, None, None] * y  # [T, canvas, canvas]
    grating = torch.sin(2 * math.pi * cycles[:, None, None] * wave + phase[:, None, None])
    texture = colour[:, :, None, None] * grating[:, None]  # [T, 3, canvas, canvas]
    classes = torch.arange(num_classes)
    return FIELD_WEIGHT * field[classes // textures] + TEXTURE_WEIGHT * texture[classes % textures]


def _render(prototypes: Tensor, labels: Tensor, size: int, generator: torch.Generator) -> Tensor:
    """Images uint8 [n, 3, size, size] of classes `labels` [n]."""
    n, num_classes, canvas = len(labels), prototypes.shape[0], prototypes.shape[-1]

    def window(classes: Tensor) -> Tensor:
        top = torch.randint(0, canvas - size + 1, (n,), generator=generator)
        left = torch.randint(0, canvas - size + 1, (n,), generator=generator)
        flip = torch.rand(n, generator=generator) < 0.5
        return crop_flip(prototypes, top, left, flip, size=size, index=classes)  # [n, 3, size, size]

    image = window(labels)
    others = (labels + torch.randint(1, num_classes, (n,), generator=generator)) % num_classes
    distractor_weight = MAX_DISTRACTOR_WEIGHT * torch.rand(n, 1, 1, 1, generator=generator)
    contrast = 0.6 + 0.8 * torch.rand(n, 1, 1, 1, generator=generator)
    brightness = 0.4 * torch.randn(n, 3, 1, 1, generator=generator)
    noise = torch.randn(n, 3, size, size, generator=generator)
    # pixel = 128 + 40 * (contrast * (image + weight * distractor) + brightness + NOISE_STD * noise), in
    # place; the extra 0.5 makes the truncating uint8 conversion round to nearest.
    image.mul_(40 * contrast).add_(window(others).mul_(40 * contrast * distractor_weight))
    image.add_(128.5 + 40 * brightness).add_(noise.mul_(40 * NOISE_STD))
    return image.clamp_(0, 255).to(torch.uint8)


def _split(prototypes: Tensor, per_class: int, size: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
    num_classes = prototypes.shape[0]
    labels = torch.arange(num_classes * per_class) % num_classes  # interleaved: every slice is near-balanced
    images = torch.empty(len(labels), 3, size, size, dtype=torch.uint8)
    chunk_size = max(1, _CHUNK_VALUES // (3 * size * size))
    for start in range(0, len(labels), chunk_size):
        chunk = labels[start : start + chunk_size]
        images[start : start + len(chunk)] = _render(prototypes, chunk, size, generator)
    return images, labels


def make_synthetic(config: SyntheticConfig | None = None) -> SyntheticData:
    """The dataset of `config` as CPU tensors; a config always gives the same bytes (for one torch build)."""
    config = config or SyntheticConfig()
    size = config.stored_size
    canvas = size + size // 4  # shifts of up to an eighth of the image each way
    generator = torch.Generator().manual_seed(config.seed)
    prototypes = _prototypes(config.num_classes, canvas, size, generator)
    train_images, train_labels = _split(prototypes, config.train_per_class, size, generator)
    test_images, test_labels = _split(prototypes, config.test_per_class, size, generator)
    return SyntheticData(train_images, train_labels, test_images, test_labels)
