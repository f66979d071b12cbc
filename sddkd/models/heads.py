"""The one multi-scale head of SDD: region logits from a model's last feature map and its own classifier.

For each m in `scales`: AdaptiveAvgPool2d(m) of the feature map, the m*m cells row-major, the model's
classifier on every cell (no new parameters); scales concatenated in order. Region 0 (m = 1) is the global
cell, whose logits are the model's ordinary output.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from sddkd.models.base import MultiScaleModel


def region_logits(
    model: MultiScaleModel, features: torch.Tensor, scales: Sequence[int], shortcut: bool = True
) -> torch.Tensor:
    """Region logits `[B, K, N]`, N = sum(m*m), from `features = model.forward_features(x)` `[B, C, H, W]`.

    With `shortcut=True`, when the classifier is an nn.Linear, H and W are multiples of the largest m
    and every m divides it, the classifier runs once on the finest grid and each coarser cell is the exact
    mean of the finer cell logits it covers (pooling is linear, the classifier affine). Otherwise every
    scale is pooled directly from the feature map (e.g. a 2x2 map at m = 4 repeats cells, as torch does;
    7x7 or 14x14 maps). Either way the classifier is called once, on all cells together. No dtype casts:
    under autocast the output follows autocast's choice.
    """
    if len(scales) == 0 or any(m < 1 for m in scales):
        raise ValueError(f"scales must be a non-empty sequence of positive ints, got {tuple(scales)!r}")
    classifier = model.get_classifier()
    _, _, height, width = features.shape
    finest = max(scales)
    if shortcut and finest_grid_applies(classifier, height, width, scales):
        return _region_logits_from_finest_grid(classifier, features, scales, finest)
    return _region_logits_pooled_directly(classifier, features, scales)


def finest_grid_applies(classifier: nn.Module, height: int, width: int, scales: Sequence[int]) -> bool:
    """Whether every scale's logits are exact means of the finest grid's (see `region_logits`): the teacher-logit
    cache relies on the same test, so it stores the finest grid exactly when the head derives the rest from it."""
    finest = max(scales)
    return (
        isinstance(classifier, nn.Linear)
        and height % finest == 0
        and width % finest == 0
        and all(finest % m == 0 for m in scales)
    )


def regions_from_finest_grid(grid_logits: torch.Tensor, scales: Sequence[int]) -> torch.Tensor:
    """Region logits `[B, K, N]` from the finest grid's cell logits `[B, K, f*f]` (f = max(scales), cells
    row-major): each coarser cell is the mean of the finer cells it covers, in the dtype of `grid_logits`."""
    batch, finest = grid_logits.shape[0], max(scales)
    grid = grid_logits.reshape(batch, -1, finest, finest)  # [B, K, f, f], row-major cells
    per_scale = [
        grid_logits if m == finest else F.avg_pool2d(grid, kernel_size=finest // m).flatten(2)  # [B, K, m*m]
        for m in scales
    ]
    return torch.cat(per_scale, dim=2)  # [B, K, N]


def _apply_to_cells(classifier: nn.Module, cells: torch.Tensor) -> torch.Tensor:
    """cells `[B, C, N]` -> logits `[B, K, N]` with one classifier call on `[B, N, C]`."""
    return classifier(cells.transpose(1, 2)).transpose(1, 2)


def _region_logits_pooled_directly(
    classifier: nn.Module, features: torch.Tensor, scales: Sequence[int]
) -> torch.Tensor:
    cells = torch.cat([F.adaptive_avg_pool2d(features, m).flatten(2) for m in scales], dim=2)  # [B, C, N]
    # Contiguous like the shortcut's output, so callers may `.view` either.
    return _apply_to_cells(classifier, cells).contiguous()  # [B, K, N]


def _region_logits_from_finest_grid(
    classifier: nn.Module, features: torch.Tensor, scales: Sequence[int], finest: int
) -> torch.Tensor:
    cells = F.adaptive_avg_pool2d(features, finest).flatten(2)  # [B, C, f*f], exact block means
    grid_logits = _apply_to_cells(classifier, cells)  # [B, K, f*f]
    return regions_from_finest_grid(grid_logits, scales)
