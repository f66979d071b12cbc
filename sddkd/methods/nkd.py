"""NKD (Yang et al., ICCV 2023): the target term -q_y log p_y plus gamma T^2 times the cross-entropy of the
normalized non-target distributions (METHOD.md)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from pydantic import Field

from sddkd.methods.base import DistillConfig, Method

if TYPE_CHECKING:
    from torch import Tensor, nn


class NKDConfig(DistillConfig):
    """Normalized KD. `non_target_only: false` keeps the target class in the second softmax, as the SDD
    repository's code does; SDD's published NKD and SD-NKD numbers come from that computation."""

    temperature: float = Field(gt=0)
    gamma: float = Field(ge=0)
    non_target_only: bool = True


class NKD(Method):
    base = "nkd"
    label = "NKD"
    order = 50
    paper = "Yang et al., From Knowledge Distillation to Self-Knowledge Distillation: NKD (ICCV 2023)"
    config = NKDConfig
    terms = ("nkd",)
    example = {"temperature": 4.0, "gamma": 1.5}

    def loss_terms(
        self, cfg: Any, student: Tensor, teacher: Tensor, labels: Tensor, params: nn.Module | None,
        inputs: Mapping[str, Tensor],
    ) -> dict[str, Tensor]:  # fmt: skip
        from sddkd.losses import sdd_nkd_loss

        nkd = sdd_nkd_loss(student, teacher, labels, cfg.temperature, cfg.gamma,
                           complementary_weight=cfg.complementary_weight, non_target_only=cfg.non_target_only,
                           standardize=cfg.standardize)  # fmt: skip
        return {"nkd": nkd}


METHOD = NKD()
