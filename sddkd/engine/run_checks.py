"""Checks that refuse a run before it starts, each with one sentence: unknown architectures (with close matches)
and a teacher whose logits are not finite (under `nonfinite=skip` it would skip every step and "finish" at chance).

`sddkd.config` validates names it can know without torch; the model registry needs torch, so architecture names
are checked here, at the engine's edge, before any file or any data is touched.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from sddkd.config import RunConfig
from sddkd.engine.distill import teacher_regions
from sddkd.engine.placement import Placement
from sddkd.errors import UserError
from sddkd.models import list_models
from sddkd.models.registry import DATASETS, _close_matches
from sddkd.scales import Scales


def check_architectures(cfg: RunConfig) -> None:
    """The student and teacher names are registered models (for the config's dataset, where it is a real one)."""
    known = list_models()
    roles = [("student", cfg.student)] + ([("teacher.arch", cfg.teacher.arch)] if cfg.teacher else [])
    for role, name in roles:
        if name not in known:
            matches = _close_matches(name, known)
            hint = f"; did you mean {' or '.join(matches)}?" if matches else ""
            raise UserError(
                f'unknown architecture {name!r} for {role}{hint} (`python -c "import sddkd.models as m; '
                'print(m.list_models())"` lists them all)'
            )
        if cfg.data.name in DATASETS and name not in list_models(cfg.data.name):
            matches = _close_matches(name, list_models(cfg.data.name))
            hint = f"; for {cfg.data.name} did you mean {' or '.join(matches)}?" if matches else ""
            raise UserError(f"architecture {name!r} ({role}) is not available for {cfg.data.name}{hint}")


def refuse_nonfinite_teacher(teacher: nn.Module, loader: Any, placement: Placement, scales: Scales) -> None:
    """One batch through the teacher, exactly as training runs it; NaN or inf logits end the run here."""
    for images, _ in loader:
        with placement.autocast():
            regions = teacher_regions(teacher, placement.images(images), scales)  # [B, K, N]
        bad = int((~torch.isfinite(regions)).sum())
        if bad:
            raise UserError(
                f"the teacher's logits are not finite ({bad} of {regions.numel()} NaN or inf on the first test "
                "batch): its checkpoint is broken; fetch or train it again"
            )
        return
