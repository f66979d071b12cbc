"""Plain cross-entropy training: teachers and student baselines. It has no variants and takes no teacher."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from sddkd.methods.base import Method, StrictModel


class VanillaConfig(StrictModel):
    name: Literal["vanilla"]
    ce_weight: float = Field(1.0, gt=0)


class Vanilla(Method):
    base = "vanilla"
    label = "vanilla"
    order = 0
    paper = "cross-entropy only (teachers and student baselines)"
    config = VanillaConfig
    distills = False
    terms = ()


METHOD = Vanilla()
