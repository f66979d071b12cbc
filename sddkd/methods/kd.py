"""KD (Hinton et al., 2015): KL between the temperature softmaxes of teacher and student, times T^2."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from pydantic import Field

from sddkd.methods.base import DistillConfig, Method

if TYPE_CHECKING:
    from torch import Tensor, nn


class KDConfig(DistillConfig):
    """KD, its logit-standardized variant (LSKD) and their scale-decoupled versions (SDD)."""

    temperature: float = Field(gt=0)


class KD(Method):
    base = "kd"
    label = "KD"
    order = 10
    paper = "Hinton et al., Distilling the Knowledge in a Neural Network (2015)"
    config = KDConfig
    terms = ("kd",)
    example = {"temperature": 4.0}

    def loss_terms(
        self, cfg: Any, student: Tensor, teacher: Tensor, labels: Tensor, params: nn.Module | None,
        inputs: Mapping[str, Tensor],
    ) -> dict[str, Tensor]:  # fmt: skip
        from sddkd.losses import sdd_kd_loss

        kd = sdd_kd_loss(student, teacher, labels, cfg.temperature,
                         complementary_weight=cfg.complementary_weight, standardize=cfg.standardize)  # fmt: skip
        return {"kd": kd}


METHOD = KD()
