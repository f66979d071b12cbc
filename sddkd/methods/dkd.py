"""DKD (Zhao et al., CVPR 2022): alpha weighs the target-class term TCKD, beta the non-target term NCKD."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from pydantic import Field

from sddkd.methods.base import DistillConfig, Method

if TYPE_CHECKING:
    from torch import Tensor, nn


class DKDConfig(DistillConfig):
    """Decoupled KD: alpha weighs TCKD, beta weighs NCKD."""

    temperature: float = Field(gt=0)
    alpha: float = Field(ge=0)
    beta: float = Field(ge=0)


class DKD(Method):
    base = "dkd"
    label = "DKD"
    order = 30
    paper = "Zhao et al., Decoupled Knowledge Distillation (CVPR 2022)"
    config = DKDConfig
    terms = ("dkd",)
    example = {"temperature": 4.0, "alpha": 1.0, "beta": 8.0}

    def loss_terms(
        self, cfg: Any, student: Tensor, teacher: Tensor, labels: Tensor, params: nn.Module | None,
        inputs: Mapping[str, Tensor],
    ) -> dict[str, Tensor]:  # fmt: skip
        from sddkd.losses import sdd_dkd_loss

        dkd = sdd_dkd_loss(student, teacher, labels, cfg.alpha, cfg.beta, cfg.temperature,
                           complementary_weight=cfg.complementary_weight, standardize=cfg.standardize)  # fmt: skip
        return {"dkd": dkd}


METHOD = DKD()
