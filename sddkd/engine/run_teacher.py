"""A run's teacher, in one place: which file it is, loading and preparing it, and refusing another one on resume.

The training loop and the teacher-logit cache (`sddkd cache-teacher`, suites' prebuilds) both load the teacher
here, so a cache is always built from the very network a run distills from.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import nn

from sddkd.config import RunConfig
from sddkd.engine.placement import Placement
from sddkd.engine.step import prepare_teacher
from sddkd.errors import UserError
from sddkd.rundir.record import RunPaths


def teacher_path(cfg: RunConfig) -> Path:
    """The run's teacher file: `teacher.checkpoint`, else the store's; one line when neither exists."""
    from sddkd.teachers.sources import missing_teacher_message
    from sddkd.teachers.store import find_teacher

    assert cfg.teacher is not None
    arch, dataset = cfg.teacher.arch, cfg.data.name
    path = Path(cfg.teacher.checkpoint) if cfg.teacher.checkpoint else find_teacher(dataset, arch)
    if path is None:
        raise UserError(missing_teacher_message(dataset, arch))
    return path


def load_run_teacher(cfg: RunConfig, spec: Any, placement: Placement) -> tuple[nn.Module, dict[str, Any]]:
    """The run's teacher as the engine trains with it (eval mode, BatchNorm folded, on the device), and what the
    run records about it."""
    from sddkd.teachers.store import load_teacher

    assert cfg.teacher is not None
    teacher, info = load_teacher(teacher_path(cfg), cfg.teacher.arch, spec.model_dataset, spec.num_classes,
                                 data_name=cfg.data.name)  # fmt: skip
    return prepare_teacher(teacher, placement), info


def refuse_another_teacher(cfg: RunConfig, paths: RunPaths, checkpoint: dict[str, Any]) -> None:
    """A resumed run must distill from the very file it started with (its sha256 is in the checkpointed record):
    the teacher is not part of the config hash when it comes from `--teacher` or the store, so only its checksum
    can tell that another one took its place. Checked before the directory is touched."""
    from sddkd.teachers.store import teacher_sha256

    started = (checkpoint["record"].get("teacher_checkpoint") or {}) if cfg.teacher else {}
    wanted = started.get("sha256") if isinstance(started, dict) else None
    if not isinstance(wanted, str):
        return  # a run without a teacher, or a record from before teachers were recorded
    path = teacher_path(cfg)
    if not path.is_file():
        return  # load_teacher says so in its own words
    found = teacher_sha256(path)
    if found != wanted:
        raise UserError(
            f"{paths.root.name} was trained with teacher {started.get('path', '?')} (sha256 {wanted[:12]}), but "
            f"this resume would use {path} (sha256 {found[:12]}); resume with --teacher pointing to the first "
            "file, or pass --restart to start over with this one"
        )
