"""Checks that refuse a run before it starts, each with one sentence: unknown architectures (with close matches),
scales M finer than a network's last feature map (adaptive pooling would silently repeat its cells), and a
teacher whose logits are not finite (under `nonfinite=skip` it would skip every step and "finish" at chance).

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
from sddkd.models import close_matches, list_models
from sddkd.scales import Scales


def check_architectures(cfg: RunConfig) -> None:
    """The student and teacher names are registered models, built for the geometry of the config's dataset."""
    known, geometry = list_models(), cfg.data.spec.model_dataset
    where = cfg.data.name if geometry == cfg.data.name else f"{cfg.data.name} data ({geometry} geometry)"
    roles = [("student", cfg.student)] + ([("teacher.arch", cfg.teacher.arch)] if cfg.teacher else [])
    for role, name in roles:
        if name not in known:
            matches = close_matches(name, known)
            hint = f"; did you mean {' or '.join(matches)}?" if matches else ""
            raise UserError(
                f'unknown architecture {name!r} for {role}{hint} (`python -c "import sddkd.models as m; '
                'print(m.list_models())"` lists them all)'
            )
        if name not in list_models(geometry):
            matches = close_matches(name, list_models(geometry))
            hint = f"; for {cfg.data.name} did you mean {' or '.join(matches)}?" if matches else ""
            raise UserError(f"architecture {name!r} ({role}) is not available for {where}{hint}")


def refuse_scales_beyond_features(
    networks: list[tuple[str, nn.Module]], loader: Any, placement: Placement, scales: Scales
) -> None:
    """Every M in `scales` fits the last feature map of each network (`[B, C, H, W]`: M <= min(H, W)).

    One test image through each network in eval mode, without autograd: a fresh student's BatchNorm statistics
    stay untouched, so the run is the same as without this check."""
    finest = max(scales)
    if finest == 1:
        return
    with torch.random.fork_rng(devices=[]):  # a DataLoader's iterator draws its seed from the global RNG
        sample = next((placement.images(images[:1]) for images, *_ in loader), None)
    if sample is None:
        return
    for role, network in networks:
        was_training = network.training
        network.eval()
        try:
            with torch.inference_mode(), placement.autocast():
                height, width = network.forward_features(sample).shape[-2:]  # type: ignore[operator]
        finally:
            network.train(was_training)
        if finest > min(height, width):
            raise UserError(
                f"M {','.join(map(str, scales))} asks for a {finest}x{finest} grid, but the {role}'s last feature map "
                f"is {height}x{width} on these {sample.shape[-1]}-px images; use scales up to {min(height, width)}"
            )


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
