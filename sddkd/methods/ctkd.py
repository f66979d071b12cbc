"""CTKD (Li et al., AAAI 2023, as the LSKD repository runs it): KD at a learned global temperature.

T = t_start + t_range * sigmoid(theta), theta a scalar initialised to 1 and trained by the student's SGD (weight
decay included, as the official code does) through a gradient reversal whose factor follows a cosine schedule
over the first `reversal_epochs` epochs, from `reversal_max` to `reversal_min` (negative: theta ascends the KD loss).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, cast

from pydantic import Field, model_validator

from sddkd.methods.base import DistillConfig, Method

if TYPE_CHECKING:
    from torch import Tensor, nn

THETA_INIT = 1.0  # the official Global_T starts at ones(1)


class CTKDConfig(DistillConfig):
    """Curriculum temperature KD: no `temperature` field, T is learned."""

    t_start: float = Field(1.0, gt=0)
    t_range: float = Field(20.0, ge=0)
    reversal_max: float = 0.0
    reversal_min: float = -1.0
    reversal_epochs: int = Field(10, ge=1)

    @model_validator(mode="after")
    def _schedule_goes_down(self) -> CTKDConfig:
        if self.reversal_min > self.reversal_max:
            raise ValueError(
                f"reversal_min ({self.reversal_min:g}) must not exceed reversal_max ({self.reversal_max:g})"
            )
        return self


def reversal_at(cfg: CTKDConfig, epoch: int) -> float:
    """lambda(e) = min + (max - min) * (1 + cos(pi * min(e, L) / L)) / 2 for the 1-based epoch e (METHOD.md)."""
    done = min(max(epoch, 0), cfg.reversal_epochs) / cfg.reversal_epochs
    return cfg.reversal_min + (cfg.reversal_max - cfg.reversal_min) * (1.0 + math.cos(math.pi * done)) / 2.0


def temperature_of(cfg: CTKDConfig, theta: float) -> float:
    return cfg.t_start + cfg.t_range / (1.0 + math.exp(-theta))


def _parameters() -> nn.Module:
    import torch
    from torch import nn

    class GlobalTemperature(nn.Module):
        """Holds theta; a module so DDP averages its gradient and checkpoints save it."""

        def __init__(self) -> None:
            super().__init__()
            self.theta = nn.Parameter(torch.tensor(THETA_INIT))

    return GlobalTemperature()


class CTKD(Method):
    base = "ctkd"
    label = "CTKD"
    order = 20
    paper = "Li et al., Curriculum Temperature for Knowledge Distillation (AAAI 2023)"
    config = CTKDConfig
    terms = ("kd",)

    def epoch_inputs(self, cfg: Any, epoch: int) -> dict[str, float]:
        return {"reversal": reversal_at(cfg, epoch)}

    def make_parameters(self, cfg: Any) -> nn.Module:
        return _parameters()

    def loss_terms(
        self, cfg: Any, student: Tensor, teacher: Tensor, labels: Tensor, params: nn.Module | None,
        inputs: Mapping[str, Tensor],
    ) -> dict[str, Tensor]:  # fmt: skip
        from sddkd.losses import learnable_temperature, sdd_kd_loss

        assert params is not None, "CTKD needs its temperature parameter"
        theta = cast("Tensor", params.theta)
        temperature = learnable_temperature(theta, inputs["reversal"], cfg.t_start, cfg.t_range)
        # dL/dT flows through the teacher's softmax too, so autograd saves the teacher's logits [B, K, N]. The engine
        # makes them under no_grad (engine.distill.teacher_regions) or serves them from the cache: plain tensors it
        # may save as they are, so no copy. (Logits made under inference_mode could not be saved: pass no_grad ones.)
        kd = sdd_kd_loss(student, teacher, labels, temperature,
                         complementary_weight=cfg.complementary_weight, standardize=cfg.standardize)  # fmt: skip
        return {"kd": kd}

    def epoch_metrics(self, cfg: Any, params: nn.Module | None) -> dict[str, float]:
        assert params is not None
        theta = cast("Tensor", params.theta)
        return {"temperature": temperature_of(cfg, float(theta.detach()))}  # once per epoch, not per step

    def analysis_temperature(self, cfg: Any, metrics: Mapping[str, float]) -> float:
        """The temperature learned by the end of the run; the initial one if the run recorded none."""
        return float(metrics.get("temperature", temperature_of(cfg, THETA_INIT)))


METHOD = CTKD()
