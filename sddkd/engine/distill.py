"""A distillation step: (student, teacher, batch, epoch) -> named loss terms.

Models know nothing of KD and losses know nothing of configs; this module joins them for one method. Every method
goes through the same path: the student and the teacher produce region logits `[B, K, N]` (N = 1 for plain KD, DKD
and vanilla, where region 0 is simply the global logits), and the method picks the loss. `kd_lskd` is therefore
literally `sdd_kd_lskd` at M = (1,).
"""

from __future__ import annotations

from typing import cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from sddkd.config import DKDMethod, KDMethod, VanillaMethod
from sddkd.losses import sdd_dkd_loss, sdd_kd_loss
from sddkd.models import ImageClassifier, region_logits
from sddkd.scales import Scales


class RegionModel(nn.Module):
    """A backbone whose forward returns region logits `[B, K, N]`, region 0 being the global logits.

    One module with one forward, so DDP's gradient hooks and torch.compile see the whole student. Its state dict is
    the backbone's under `backbone.`; checkpoints store `backbone.state_dict()` so published keys are kept.
    """

    backbone: ImageClassifier

    def __init__(self, backbone: ImageClassifier, scales: Scales):
        super().__init__()
        self.backbone = backbone
        self.scales = scales

    def forward(self, images: Tensor) -> Tensor:
        return region_logits(self.backbone, self.backbone.forward_features(images), self.scales)


Method = VanillaMethod | KDMethod | DKDMethod


def distill_weight(warmup_epochs: int, epoch: int) -> float:
    """w(e) = min(e / warmup, 1) for the 1-based epoch e; 1 without warm-up (METHOD.md)."""
    return min(epoch / warmup_epochs, 1.0) if warmup_epochs > 0 else 1.0


class LossFn:
    """`loss_fn(student_regions, teacher_regions, labels, epoch) -> {"ce": ..., "kd"|"dkd": ...}`, weighted.

    Inputs are region logits `[B, K, N]` (any dtype; the losses compute in float32) and labels `[B]`. The terms are
    already weighted, so the engine's objective is their plain sum. The call is `weights(epoch)` times `terms(...)`:
    the engine's fast path passes the per-epoch weights as a tensor, so a compiled step never depends on the epoch.
    """

    def __init__(self, method: Method):
        self.method = method
        self.names: tuple[str, ...] = ("ce",) if isinstance(method, VanillaMethod) else (
            "ce", "dkd" if isinstance(method, DKDMethod) else "kd",
        )  # fmt: skip

    def weights(self, epoch: int) -> dict[str, float]:
        """The multiplier of each term in the 1-based `epoch` (the distillation term ramps up over the warm-up)."""
        method = self.method
        if isinstance(method, VanillaMethod):
            return {"ce": method.ce_weight}
        return {"ce": method.ce_weight, self.names[1]: distill_weight(method.warmup, epoch) * method.kd_weight}

    def terms(self, student: Tensor, teacher: Tensor | None, labels: Tensor) -> dict[str, Tensor]:
        """The unweighted terms, in the order of `names`: float32 scalars."""
        method = self.method
        ce = F.cross_entropy(student[:, :, 0].float(), labels)
        if isinstance(method, VanillaMethod):
            return {"ce": ce}
        assert teacher is not None, "distillation needs teacher region logits"
        if isinstance(method, DKDMethod):
            dkd = sdd_dkd_loss(
                student, teacher, labels, method.alpha, method.beta, method.temperature,
                complementary_weight=method.complementary_weight, standardize=method.standardize,
            )  # fmt: skip
            return {"ce": ce, "dkd": dkd}
        kd = sdd_kd_loss(
            student, teacher, labels, method.temperature,
            complementary_weight=method.complementary_weight, standardize=method.standardize,
        )  # fmt: skip
        return {"ce": ce, "kd": kd}

    def __call__(self, student: Tensor, teacher: Tensor | None, labels: Tensor, epoch: int) -> dict[str, Tensor]:
        weights = self.weights(epoch)
        return {name: weights[name] * value for name, value in self.terms(student, teacher, labels).items()}


def make_loss_fn(method: Method) -> LossFn:
    """The loss of `method`: see `LossFn`."""
    return LossFn(method)


def teacher_regions(teacher: nn.Module, images: Tensor, scales: Scales) -> Tensor:
    """The frozen teacher's region logits `[B, K, N]`, computed without autograd bookkeeping.

    `no_grad`, not `inference_mode`: this runs inside the compiled step, and torch 2.11's AOTAutograd fails on
    inference tensors there ("weakref to UntypedStorage" while tracing); under no_grad the numbers are the same."""
    network = cast(ImageClassifier, teacher)  # a registered model, possibly BN-folded (sddkd.engine.step)
    with torch.no_grad():
        return region_logits(network, network.forward_features(images), scales)
