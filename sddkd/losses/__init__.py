"""The distillation losses of METHOD.md, the public API `from sddkd.losses import ...`: `core` (KD, DKD, NKD, their
SDD variants, LSKD z-scoring, CTKD's learnable temperature) and `mlkd` (MLKD and SD-MLKD)."""

from sddkd.losses.core import (
    complementary_mask,
    dkd_loss,
    kd_loss,
    learnable_temperature,
    nkd_loss,
    sdd_dkd_loss,
    sdd_kd_loss,
    sdd_nkd_loss,
    sdd_region_weights,
    standardize,
)
from sddkd.losses.mlkd import MLKD_FIXED_TEMPERATURES, median_fraction, mlkd_loss, sdd_mlkd_loss

__all__ = [
    "standardize",
    "kd_loss",
    "dkd_loss",
    "sdd_kd_loss",
    "sdd_dkd_loss",
    "nkd_loss",
    "sdd_nkd_loss",
    "learnable_temperature",
    "mlkd_loss",
    "sdd_mlkd_loss",
    "median_fraction",
    "MLKD_FIXED_TEMPERATURES",
    "complementary_mask",
    "sdd_region_weights",
]
