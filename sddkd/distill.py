"""A distillation step: (student, teacher, batch, epoch) -> named loss terms.

Models know nothing of KD and losses know nothing of configs; this module joins them for one method. Every method
goes through the same path: the student and the teacher produce region logits `[B, K, N]` (N = 1 for plain KD, DKD
and vanilla, where region 0 is simply the global logits), and the method picks the loss. `kd_lskd` is therefore
literally `sdd_kd_lskd` at M = (1,).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from sddkd.config import DKDMethod, KDMethod, VanillaMethod
from sddkd.losses import sdd_dkd_loss, sdd_kd_loss
from sddkd.models import region_logits
from sddkd.scales import Scales


class RegionModel(nn.Module):
    """A backbone whose forward returns region logits `[B, K, N]`, region 0 being the global logits.

    One module with one forward, so DDP's gradient hooks and torch.compile see the whole student. Its state dict is
    the backbone's under `backbone.`; checkpoints store `backbone.state_dict()` so published keys are kept.
    """

    def __init__(self, backbone: nn.Module, scales: Scales):
        super().__init__()
        self.backbone = backbone
        self.scales = scales

    def forward(self, images: Tensor) -> Tensor:
        return region_logits(self.backbone, self.backbone.forward_features(images), self.scales)


Method = VanillaMethod | KDMethod | DKDMethod
LossFn = Callable[[Tensor, Tensor | None, Tensor, int], dict[str, Tensor]]


def distill_weight(warmup_epochs: int, epoch: int) -> float:
    """w(e) = min(e / warmup, 1) for the 1-based epoch e; 1 without warm-up (METHOD.md)."""
    return min(epoch / warmup_epochs, 1.0) if warmup_epochs > 0 else 1.0


def make_loss_fn(method: Method) -> LossFn:
    """Return `loss_fn(student_regions, teacher_regions, labels, epoch) -> {"ce": ..., "kd"|"dkd": ...}`.

    Inputs are region logits `[B, K, N]` (any dtype; the losses compute in float32) and labels `[B]`. The terms are
    already weighted, so the engine's objective is their plain sum.
    """
    if isinstance(method, VanillaMethod):
        ce_weight = method.ce_weight

        def vanilla_terms(student: Tensor, teacher: Tensor | None, labels: Tensor, epoch: int) -> dict[str, Tensor]:
            return {"ce": ce_weight * F.cross_entropy(student[:, :, 0].float(), labels)}

        return vanilla_terms

    def distill_terms(student: Tensor, teacher: Tensor | None, labels: Tensor, epoch: int) -> dict[str, Tensor]:
        assert teacher is not None, "distillation needs teacher region logits"
        ce = method.ce_weight * F.cross_entropy(student[:, :, 0].float(), labels)
        weight = distill_weight(method.warmup, epoch) * method.kd_weight
        if isinstance(method, DKDMethod):
            dkd = sdd_dkd_loss(
                student, teacher, labels, method.alpha, method.beta, method.temperature,
                complementary_weight=method.complementary_weight, standardize=method.standardize,
            )  # fmt: skip
            return {"ce": ce, "dkd": weight * dkd}
        kd = sdd_kd_loss(
            student, teacher, labels, method.temperature,
            complementary_weight=method.complementary_weight, standardize=method.standardize,
        )  # fmt: skip
        return {"ce": ce, "kd": weight * kd}

    return distill_terms


def teacher_regions(teacher: nn.Module, images: Tensor, scales: Scales) -> Tensor:
    """The frozen teacher's region logits `[B, K, N]`, computed in inference mode (no autograd bookkeeping)."""
    with torch.inference_mode():
        return region_logits(teacher, teacher.forward_features(images), scales)
