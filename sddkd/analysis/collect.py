"""The one pass over the test set: student, teacher (and a baseline) -> what every analysis metric needs.

Global logits are kept for every sample (calibration, per-class accuracy and the class-mean matrices need them
all: S·K floats per model); region logits are reduced per batch to per-sample statistics, so memory stays
S·len(M) instead of S·K·N; pooled features are kept for an evenly strided subset of at most `max_points` samples.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, cast

import torch
from torch import Tensor, nn

from sddkd.analysis.metrics import region_statistics
from sddkd.engine.placement import Placement
from sddkd.models import ImageClassifier, region_logits
from sddkd.scales import Scales


@dataclass
class Outputs:
    labels: Tensor  # [S] int64
    student_logits: Tensor  # [S, K] float32, region 0 == the model's output
    teacher_logits: Tensor  # [S, K]
    baseline_logits: Tensor | None  # [S, K] with a baseline
    region_stats: dict[str, Tensor]  # name -> [S, len(scales)], see metrics.region_statistics
    student_features: Tensor  # [P, C_s] globally pooled last feature map of the embedded samples
    teacher_features: Tensor  # [P, C_t]
    feature_labels: Tensor  # [P]


def _regions(model: nn.Module, images: Tensor, scales: Scales) -> tuple[Tensor, Tensor]:
    """(region logits [B, K, N] in float32, globally pooled features [B, C]) from one forward pass."""
    network = cast(ImageClassifier, model)  # every registered model has the multi-scale interface
    features = network.forward_features(images)  # [B, C, H, W]
    return region_logits(network, features, scales).float(), features.float().mean(dim=(2, 3))


def collect(
    student: nn.Module, teacher: nn.Module, baseline: nn.Module | None, loader: Any, placement: Placement,
    scales: Scales, temperature: float, max_points: int = 2000,
) -> Outputs:  # fmt: skip
    """Run the test loader once in float32 (as `sddkd eval`); all outputs are on the CPU."""
    for model in (student, teacher, baseline):
        if model is not None:
            model.eval()
    stride = max(1, math.ceil(loader.num_samples / max_points))  # embed every stride-th sample
    labels, s_logits, t_logits, b_logits, s_feats, t_feats, f_labels = [], [], [], [], [], [], []
    stats: dict[str, list[Tensor]] = {}
    seen = 0
    with torch.inference_mode():
        for images, batch_labels in loader:
            images = placement.images(images)
            s_regions, s_pooled = _regions(student, images, scales)
            t_regions, t_pooled = _regions(teacher, images, scales)
            for name, values in region_statistics(s_regions, t_regions, batch_labels, scales, temperature).items():
                stats.setdefault(name, []).append(values)
            labels.append(batch_labels.cpu())
            s_logits.append(s_regions[:, :, 0].cpu())
            t_logits.append(t_regions[:, :, 0].cpu())
            if baseline is not None:
                b_logits.append(baseline(images).float().cpu())
            keep = (torch.arange(seen, seen + len(batch_labels), device=batch_labels.device) % stride) == 0
            s_feats.append(s_pooled[keep].cpu())
            t_feats.append(t_pooled[keep].cpu())
            f_labels.append(batch_labels[keep].cpu())
            seen += len(batch_labels)
    if seen == 0:
        raise ValueError("the test loader yielded no samples")
    return Outputs(
        labels=torch.cat(labels), student_logits=torch.cat(s_logits), teacher_logits=torch.cat(t_logits),
        baseline_logits=torch.cat(b_logits) if baseline is not None else None,
        region_stats={name: torch.cat(values) for name, values in stats.items()},
        student_features=torch.cat(s_feats), teacher_features=torch.cat(t_feats), feature_labels=torch.cat(f_labels),
    )  # fmt: skip
