"""MLKD's strong view as batched tensor ops: RandAugment (two ops per image) and a Cutout, on uint8 crops.

METHOD.md ("Two views") defines the strong view by the PIL code of the MLKD/LSKD CIFAR-100 pipeline: its own
crop and flip, then two ops drawn with replacement from the 14 below, each with a value uniform in its range,
then a Cutout. Here every image of a batch carries its own ops and values, and the batch is transformed where
it lives (the GPU for CIFAR) with no CPU workers and no host synchronisation: each op is computed for the
whole batch and kept, per image, by `torch.where` on its op id, so nothing branches on data. That costs a few
cheap elementwise passes over 32x32 images instead of a per-image Python loop.

The ops are uint8 -> uint8 and round or truncate as PIL does (its luma weights, its blend truncation, its
pixel-centre affine sampling in fixed or floating point): on the CPU they reproduce Pillow's output on the
test images exactly. METHOD.md asks only for a few grey levels on average, which is what the tests hold them
to, so that a device whose float rounding differs by an ulp before a truncation still passes.

The random draws live in `StrongPlan`, drawn up front for an epoch on the CPU from a generator seeded by
(seed, epoch) like the weak view's crops, one row per global position: a resumed epoch sees the same views.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch import Tensor

# Op ids index this tuple; the order is the reference augment_list's.
OPS = (
    "autocontrast",
    "brightness",
    "color",
    "contrast",
    "equalize",
    "identity",
    "posterize",
    "rotate",
    "sharpness",
    "shear_x",
    "shear_y",
    "solarize",
    "translate_x",
    "translate_y",
)
# Value v of each op, uniform in [low, high) (the reference's "magnitude" is unused). Ops without a value draw one
# anyway, so every image consumes the same random numbers whatever its ops.
VALUE_RANGES = {
    "autocontrast": (0.0, 1.0),
    "brightness": (0.05, 0.95),
    "color": (0.05, 0.95),
    "contrast": (0.05, 0.95),
    "equalize": (0.0, 1.0),
    "identity": (0.0, 1.0),
    "posterize": (4.0, 8.0),
    "rotate": (-30.0, 30.0),
    "sharpness": (0.05, 0.95),
    "shear_x": (-0.3, 0.3),
    "shear_y": (-0.3, 0.3),
    "solarize": (0.0, 256.0),
    "translate_x": (-0.3, 0.3),
    "translate_y": (-0.3, 0.3),
}
OPS_PER_IMAGE = 2
CUTOUT_MAX_FRACTION = 0.5  # side = image width * U(0, 0.5)
CUTOUT_FILL = (125, 123, 114)
OP = {name: index for index, name in enumerate(OPS)}

__all__ = [
    "CUTOUT_FILL",
    "OPS",
    "VALUE_RANGES",
    "StrongPlan",
    "affine_nearest",
    "apply_op",
    "cutout",
    "draw_strong_plan",
    "rand_augment",
    "strong_view",
]


class StrongPlan(NamedTuple):
    """Per-image draws of the strong view, [n] rows (ops and values [n, 2]); index or slice it like a tensor."""

    top: Tensor  # int64 crop offsets in the zero-padded image, as the weak view's
    left: Tensor
    flip: Tensor  # bool
    ops: Tensor  # int64 [n, 2] ids into OPS, applied left to right
    values: Tensor  # float32 [n, 2] the ops' values, already in their ranges
    cutout_side: Tensor  # float32 side in pixels
    cutout_x: Tensor  # float32 centre, uniform in [0, width)
    cutout_y: Tensor

    def select(self, rows: Tensor | slice) -> StrongPlan:
        return StrongPlan(*(field[rows] for field in self))

    def to(self, device: torch.device | str) -> StrongPlan:
        return StrongPlan(*(field.to(device, non_blocking=True) for field in self))


def draw_strong_plan(
    generator: torch.Generator, total: int, *, height: int, width: int, crop_size: int, padding: int
) -> StrongPlan:
    """`total` rows of strong-view draws from `generator` (CPU), in a fixed order of calls."""
    top = torch.randint(0, height + 2 * padding - crop_size + 1, (total,), generator=generator)
    left = torch.randint(0, width + 2 * padding - crop_size + 1, (total,), generator=generator)
    flip = torch.rand(total, generator=generator) < 0.5
    ops = torch.randint(0, len(OPS), (total, OPS_PER_IMAGE), generator=generator)
    unit = torch.rand(total, OPS_PER_IMAGE, generator=generator, dtype=torch.float64)
    low = torch.tensor([VALUE_RANGES[name][0] for name in OPS], dtype=torch.float64)[ops]
    high = torch.tensor([VALUE_RANGES[name][1] for name in OPS], dtype=torch.float64)[ops]
    values = (low + (high - low) * unit).float()
    side = torch.rand(total, generator=generator, dtype=torch.float64) * CUTOUT_MAX_FRACTION * crop_size
    centre = torch.rand(total, 2, generator=generator, dtype=torch.float64) * crop_size
    return StrongPlan(top, left, flip, ops, values, side.float(), centre[:, 0].float(), centre[:, 1].float())


# ----------------------------------------------------------------------------------------------------
# Pixel ops: uint8 [B, C, H, W] -> uint8, per-image values [B]


def _per_image(values: Tensor) -> Tensor:
    return values.view(-1, 1, 1, 1)


def _truncate(x: Tensor) -> Tensor:
    """Float -> uint8 as PIL's blend stores it: clip to [0, 255], then truncate."""
    return x.clamp(0, 255).floor().to(torch.uint8)


def grayscale(images: Tensor) -> Tensor:
    """PIL's RGB -> L conversion (ITU-R 601-2 luma in 16-bit fixed point, rounded): int32 [B, 1, H, W]."""
    r, g, b = images.to(torch.int32).unbind(1)
    return ((r * 19595 + g * 38470 + b * 7471 + 0x8000) >> 16).unsqueeze(1)


def _blend(degenerate: Tensor, images: Tensor, factor: Tensor) -> Tensor:
    """ImageEnhance: Image.blend(degenerate, image, factor) = degenerate + factor * (image - degenerate)."""
    degenerate = degenerate.float()
    return _truncate(degenerate + _per_image(factor) * (images.float() - degenerate))


def _smooth(images: Tensor) -> Tensor:
    """PIL's ImageFilter.SMOOTH (3x3 kernel [[1,1,1],[1,5,1],[1,1,1]] / 13, rounded); border pixels unchanged.
    Integer sums, so no convolution backend (TF32 on CUDA) can move a pixel across a rounding edge."""
    x = images.to(torch.int32)
    h, w = x.shape[-2:]
    total = 4 * x[..., 1:-1, 1:-1]  # the centre weighs 5: once here plus once in the 3x3 window sum
    for dy in range(3):
        for dx in range(3):
            total = total + x[..., dy : dy + h - 2, dx : dx + w - 2]
    out = images.clone()
    out[..., 1:-1, 1:-1] = ((total + 6) // 13).clamp(0, 255).to(torch.uint8)  # round half up
    return out


def brightness(images: Tensor, factor: Tensor) -> Tensor:
    return _blend(torch.zeros_like(images[:, :1]), images, factor)


def color(images: Tensor, factor: Tensor) -> Tensor:
    return _blend(grayscale(images), images, factor)


def contrast(images: Tensor, factor: Tensor) -> Tensor:
    mean = grayscale(images).float().mean(dim=(1, 2, 3), keepdim=True)
    return _blend((mean + 0.5).floor(), images, factor)  # PIL: int(mean of L + 0.5)


def sharpness(images: Tensor, factor: Tensor) -> Tensor:
    return _blend(_smooth(images), images, factor)


def _apply_lut(images: Tensor, lut: Tensor) -> Tensor:
    """Per-(image, channel) lookup: lut int64 [B, C, 256] -> uint8 images."""
    b, c, h, w = images.shape
    flat = images.reshape(b, c, h * w).long()
    return lut.gather(2, flat).clamp(0, 255).to(torch.uint8).view(b, c, h, w)


def autocontrast(images: Tensor) -> Tensor:
    """ImageOps.autocontrast (cutoff 0), per channel: map [min, max] onto [0, 255], truncating; flat channels stay."""
    low = images.amin(dim=(2, 3), keepdim=True).double()
    high = images.amax(dim=(2, 3), keepdim=True).double()
    # A true division (a Python scalar over a tensor would be a reciprocal then a product, a rounding apart).
    scale = torch.full_like(low, 255.0) / (high - low).clamp(min=1)
    levels = torch.arange(256, dtype=torch.float64, device=images.device).view(1, 1, 256)
    lut = (levels * scale.squeeze(-1) - low.squeeze(-1) * scale.squeeze(-1)).clamp(0, 255).floor().long()
    lut = torch.where((high > low).squeeze(-1), lut, levels.long())
    return _apply_lut(images, lut)


def equalize(images: Tensor) -> Tensor:
    """ImageOps.equalize, per channel: lut[i] = (step // 2 + #pixels below i) // step with
    step = (#pixels - #pixels at the top level) // 255; identity when one level or step == 0."""
    b, c, h, w = images.shape
    flat = images.reshape(b, c, h * w).long()
    histogram = torch.zeros(b, c, 256, dtype=torch.int64, device=images.device)
    histogram.scatter_add_(2, flat, torch.ones_like(flat))
    top_count = histogram.gather(2, flat.amax(dim=2, keepdim=True))  # the last non-empty bin
    step = (h * w - top_count) // 255  # [B, C, 1]
    below = histogram.cumsum(dim=2) - histogram
    lut = (step // 2 + below) // step.clamp(min=1)
    levels = torch.arange(256, device=images.device).view(1, 1, 256)
    keep = ((histogram > 0).sum(dim=2, keepdim=True) <= 1) | (step == 0)
    return _apply_lut(images, torch.where(keep, levels, lut))


def posterize(images: Tensor, value: Tensor) -> Tensor:
    """ImageOps.posterize(img, max(1, int(v))): keep the top bits of every channel."""
    shift = (8 - value.trunc().clamp(1, 8)).to(torch.uint8)
    shift = _per_image(shift)
    return torch.bitwise_left_shift(torch.bitwise_right_shift(images, shift), shift)


def solarize(images: Tensor, threshold: Tensor) -> Tensor:
    """ImageOps.solarize(img, v): pixels >= v are inverted."""
    return torch.where(images.float() >= _per_image(threshold), 255 - images, images)


def affine_nearest(images: Tensor, matrix: Tensor) -> Tensor:
    """PIL's Image.transform(size, AFFINE, data, NEAREST) batched; reads outside the image are black.

    matrix: [B, 2, 3] output -> input, (a, b, c, d, e, f) as PIL takes it. Output pixel (x, y) reads input
    pixel floor(matrix @ (x + 0.5, y + 0.5, 1)). PIL samples axis-aligned maps (translations) in floating point
    and maps that mix the axes (rotations, shears) in 16.16 fixed point, each coefficient rounded on its own;
    both are reproduced, per image, because at the many exact half-pixel crossings of a shear by 0.2 or 0.25 the
    rounding decides which pixel is read.
    """
    b, c, h, w = images.shape
    device = images.device
    m = matrix.double().reshape(b, 6, 1, 1)
    a0, a1, a2, a3, a4, a5 = m.unbind(1)  # each [B, 1, 1]
    ys = torch.arange(h, device=device).view(1, h, 1)
    xs = torch.arange(w, device=device).view(1, 1, w)

    def fixed(v: Tensor) -> Tensor:
        return (v * 65536.0 + 0.5).floor().long()

    # Fixed point: the start of each row and the per-pixel steps are rounded separately, then shifted down.
    fx = (fixed(a2 + a0 * 0.5 + a1 * 0.5) + ys * fixed(a1) + xs * fixed(a0)) >> 16
    fy = (fixed(a5 + a3 * 0.5 + a4 * 0.5) + ys * fixed(a4) + xs * fixed(a3)) >> 16
    # Floating point (PIL's ImagingScaleAffine, used when b = d = 0).
    sx = (a0 * (xs + 0.5) + a2).floor().long()
    sy = (a4 * (ys + 0.5) + a5).floor().long()
    axis_aligned = (a1 == 0) & (a3 == 0)
    src_x = torch.where(axis_aligned, sx, fx)  # [B, H, W]
    src_y = torch.where(axis_aligned, sy, fy)
    inside = (src_x >= 0) & (src_x < w) & (src_y >= 0) & (src_y < h)
    flat = (src_y.clamp(0, h - 1) * w + src_x.clamp(0, w - 1)).view(b, 1, h * w).expand(b, c, h * w)
    out = images.reshape(b, c, h * w).gather(2, flat).view(b, c, h, w)
    return out.masked_fill(~inside.unsqueeze(1), 0)


def _geometric_matrix(op: Tensor, value: Tensor, height: int, width: int) -> Tensor:
    """[B, 2, 3] output -> input maps of the geometric ops (identity for every other op), as PIL builds them."""
    value = value.double()  # PIL builds its matrices in double precision

    def where(name: str) -> Tensor:
        return torch.where(op == OP[name], value, torch.zeros_like(value))

    # Image.rotate(v): about the centre (w/2, h/2), counter-clockwise; the inverse map is a rotation by -v.
    angle = where("rotate") * (math.pi / 180.0)
    cos, sin = torch.cos(angle).round(decimals=15), torch.sin(angle).round(decimals=15)  # as Image.rotate
    cx, cy = width / 2.0, height / 2.0
    a, b_, d, e = cos, -sin, sin, cos
    c = a * -cx + b_ * -cy + cx + where("translate_x") * width
    f = d * -cx + e * -cy + cy + where("translate_y") * height
    b_ = b_ + where("shear_x")  # affine (1, v, 0, 0, 1, 0): the shear ops never combine with a rotation
    d = d + where("shear_y")
    return torch.stack([torch.stack([a, b_, c], dim=1), torch.stack([d, e, f], dim=1)], dim=1)


def apply_op(images: Tensor, op: Tensor, value: Tensor) -> Tensor:
    """One RandAugment op per image: op int64 [B] ids into OPS, value [B]. uint8 in, uint8 out."""
    height, width = images.shape[-2:]
    out = affine_nearest(images, _geometric_matrix(op, value, height, width))  # identity rows copy exactly
    candidates = {
        "autocontrast": lambda: autocontrast(images),
        "brightness": lambda: brightness(images, value),
        "color": lambda: color(images, value),
        "contrast": lambda: contrast(images, value),
        "equalize": lambda: equalize(images),
        "posterize": lambda: posterize(images, value),
        "sharpness": lambda: sharpness(images, value),
        "solarize": lambda: solarize(images, value),
    }
    for name, compute in candidates.items():
        out = torch.where(_per_image(op == OP[name]), compute(), out)
    return out


def rand_augment(images: Tensor, ops: Tensor, values: Tensor) -> Tensor:
    """The ops of each image in turn: ops int64 [B, k], values [B, k]."""
    for k in range(ops.shape[1]):
        images = apply_op(images, ops[:, k], values[:, k])
    return images


def cutout(images: Tensor, side: Tensor, centre_x: Tensor, centre_y: Tensor) -> Tensor:
    """The reference CutoutAbs: corner int(max(0, c - side / 2)), far corner min(size, corner + side), filled
    with CUTOUT_FILL as PIL's rectangle fills it (both corners included, coordinates truncated); side 0 is none."""
    height, width = images.shape[-2:]
    x0 = (centre_x - side / 2).clamp(min=0).floor()
    y0 = (centre_y - side / 2).clamp(min=0).floor()
    x1 = torch.minimum(x0 + side, torch.full_like(x0, width)).floor()
    y1 = torch.minimum(y0 + side, torch.full_like(y0, height)).floor()
    xs = torch.arange(width, device=images.device, dtype=x0.dtype).view(1, 1, width)
    ys = torch.arange(height, device=images.device, dtype=y0.dtype).view(1, height, 1)
    mask = (xs >= x0.view(-1, 1, 1)) & (xs <= x1.view(-1, 1, 1)) & (ys >= y0.view(-1, 1, 1)) & (ys <= y1.view(-1, 1, 1))
    mask = mask & (side > 0).view(-1, 1, 1)
    # One Python scalar per channel: a fill tensor built here would be a blocking host-to-device copy every batch.
    out = images.clone()
    for channel, value in enumerate(CUTOUT_FILL):
        out[:, channel].masked_fill_(mask, value)
    return out


def strong_view(crops: Tensor, plan: StrongPlan) -> Tensor:
    """RandAugment then Cutout on uint8 crops [B, 3, S, S] (already cropped and flipped by `plan`)."""
    return cutout(rand_augment(crops, plan.ops, plan.values), plan.cutout_side, plan.cutout_x, plan.cutout_y)
