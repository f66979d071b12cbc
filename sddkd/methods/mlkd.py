"""MLKD (Jin et al., CVPR 2023, as the LSKD repository's MLKD.py computes it): instance, class and batch logit
terms over five temperatures, on a weak and a strong view of every image.

The step runs the student and the teacher on both views; the loss receives both views' region logits stacked
along the batch, weak rows first (`[2B, K, N]`, see `Method.views`). The cross-entropy of both views is the
engine's (`LossFn`); this module adds kd, cc and bc, each weighted by kd_weight, so the objective is
ce_weight * (CE_weak + CE_strong) + kd_weight * (kd + cc + bc) (METHOD.md).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from pydantic import Field

from sddkd.methods.base import DistillConfig, Method

if TYPE_CHECKING:
    from torch import Tensor, nn


class MLKDConfig(DistillConfig):
    """Multi-level logit distillation on two views; `temperature` is the first of its five (T, 3, 5, 2, 6)."""

    temperature: float = Field(gt=0)


class MLKD(Method):
    base = "mlkd"
    label = "MLKD"
    order = 40
    paper = "Jin et al., Multi-Level Logit Distillation (CVPR 2023)"
    config = MLKDConfig
    terms = ("kd", "cc", "bc")
    views = ("weak", "strong")
    example = {"temperature": 4.0}

    def loss_terms(
        self, cfg: Any, student: Tensor, teacher: Tensor, labels: Tensor, params: nn.Module | None,
        inputs: Mapping[str, Tensor],
    ) -> dict[str, Tensor]:  # fmt: skip
        from sddkd.losses import sdd_mlkd_loss

        if student.shape[0] != 2 * labels.shape[0] or teacher.shape[0] != student.shape[0]:  # static shapes only
            raise ValueError(
                f"{cfg.name} needs the weak and strong views' logits stacked along the batch ({2 * labels.shape[0]} "
                f"rows for {labels.shape[0]} labels), got student {tuple(student.shape)}, "
                f"teacher {tuple(teacher.shape)}"
            )
        student_weak, student_strong = student.chunk(2)
        teacher_weak, teacher_strong = teacher.chunk(2)
        # With one region (the plain variants) sdd_mlkd_loss is mlkd_loss on the global logits.
        return sdd_mlkd_loss(student_weak, student_strong, teacher_weak, teacher_strong, labels, cfg.temperature,
                             complementary_weight=cfg.complementary_weight, standardize=cfg.standardize)  # fmt: skip


METHOD = MLKD()
