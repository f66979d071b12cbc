"""`sddkd cache-teacher`: build (or verify) the exact teacher-logit cache a preset's runs use."""

from __future__ import annotations

from typing import Annotated

import typer

from sddkd.cli.common import (
    DataRootOption,
    DeviceOption,
    ScalesOption,
    SetOption,
    SyntheticOption,
    TeacherOption,
    console,
    err_console,
    resolve_config,
    user_errors,
)  # fmt: skip


def cache_teacher_command(
    preset: Annotated[str, typer.Argument(help="Preset name (e.g. res32x4_res8x4) or YAML path.")],
    scales: ScalesOption = None,
    dataset: SyntheticOption = None,
    data_root: DataRootOption = None,
    device: DeviceOption = None,
    teacher: TeacherOption = None,
    overrides: SetOption = None,
    rebuild: Annotated[bool, typer.Option("--rebuild", help="Discard an existing cache and build it again.")] = False,
) -> None:
    """Build the exact teacher-logit cache runs of PRESET use (teacher.cache: auto|on): every training image under
    every augmentation view, once. Stored under $SDDKD_HOME/teacher_cache/; an existing cache is verified."""
    cfg = resolve_config(
        preset, scales=scales, dataset=dataset, overrides=overrides, data_root=data_root, device=device,
        teacher=teacher,
    )  # fmt: skip
    with user_errors():
        from sddkd.engine.teacher_cache_serve import build_for_config

        opened = build_for_config(cfg, err_console, rebuild=rebuild, progress=cfg.engine.progress)
    size = opened.logits.numel() * opened.logits.element_size()
    console.print(f"teacher cache ready: {opened.directory} ({size / 1e9:.2f} GB, verified)", highlight=False)
