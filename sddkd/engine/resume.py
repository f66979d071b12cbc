"""Resuming from `last.pt`, which is the truth about a run, and writing it: the torch half. What a resume accepts,
what it rebuilds and the order of the writes are the run directory's, torch-free, in `sddkd.rundir.resume`; here are
the files' tensors: loading and verifying them, restoring weights, optimizer and RNG, saving every checkpoint.

A checkpoint is either at an epoch boundary or, after SIGTERM/SIGINT, in the middle of an epoch: then it also
carries the partial epoch (`PartialEpoch`: the position in the epoch and the running loss sums and accuracy
counts), so the resumed epoch ends with the very metrics line the uninterrupted run writes. The data order is a
function of (seed, epoch), so the position is all the loader needs.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from sddkd.config import RunConfig
from sddkd.engine.checkpoint import DamagedCheckpointError, load_checkpoint, rng_state, save_checkpoint, set_rng_state
from sddkd.engine.distributed import DistContext
from sddkd.engine.faults import fault_point
from sddkd.errors import UserError
from sddkd.rundir.record import RunPaths
from sddkd.rundir.resume import (
    check_resume_checkpoint,
    checkpoint_fields,
    commit_epoch,
    damaged_message,
    rebuild_from_checkpoint,
    record_resume_failure,
)  # fmt: skip


@dataclass
class PartialEpoch:
    """The running totals of an epoch cut short at a step boundary (device tensors while training)."""

    epoch: int
    steps: int  # optimizer steps of this epoch already done (the loader resumes at this batch)
    samples: int
    seconds: float
    sums: Tensor  # [T] weighted loss terms summed over those steps (all-reduced under DDP)
    correct: Tensor  # [] correct global predictions
    nonfinite: Tensor  # [] skipped steps

    def to_state(self) -> dict[str, Any]:
        return {"epoch": self.epoch, "steps": self.steps, "samples": self.samples, "seconds": self.seconds,
                "sums": self.sums.detach().cpu(), "correct": self.correct.detach().cpu(),
                "nonfinite": self.nonfinite.detach().cpu()}  # fmt: skip

    @classmethod
    def from_state(cls, state: dict[str, Any], device: torch.device) -> PartialEpoch:
        return cls(state["epoch"], state["steps"], state["samples"], state["seconds"],
                   state["sums"].to(device), state["correct"].to(device), state["nonfinite"].to(device))  # fmt: skip


def load_resume_checkpoint(cfg: RunConfig, paths: RunPaths) -> dict[str, Any]:
    """`last.pt`, verified (checksum) and of this recipe (the hash stored in the checkpoint itself), on the CPU."""
    try:
        checkpoint = load_checkpoint(paths.last, map_location="cpu", verify=True)
    except DamagedCheckpointError as exc:
        raise DamagedCheckpointError(damaged_message(paths, str(exc))) from exc
    check_resume_checkpoint(cfg, paths, checkpoint)
    return checkpoint


def load_for_resume(cfg: RunConfig, paths: RunPaths, dist: DistContext) -> dict[str, Any]:
    """`last.pt` verified and of this recipe; a damaged one is also recorded as the run's failure."""
    try:
        return load_resume_checkpoint(cfg, paths)
    except DamagedCheckpointError as exc:
        if dist.is_main:
            record_resume_failure(cfg, paths, exc)
        raise


def restore_training_state(
    checkpoint: dict[str, Any], backbone: nn.Module, optimizer: torch.optim.Optimizer,
    method_parameters: nn.Module | None = None,
) -> None:  # fmt: skip
    """Weights and optimizer state onto the devices of the live objects; RNG states from the CPU ByteTensors.
    `method_parameters`: the method's own trained parameters (CTKD's temperature), saved beside the model."""
    backbone.load_state_dict(checkpoint["model"])  # copies into the parameters, wherever they live
    if method_parameters is not None:
        if not isinstance(checkpoint.get("method_parameters"), dict):
            raise DamagedCheckpointError("the checkpoint holds no trained parameters of this run's method (CTKD's "
                                         "temperature); resume the run that wrote it, or pass --restart")  # fmt: skip
        method_parameters.load_state_dict(checkpoint["method_parameters"])
    optimizer.load_state_dict(checkpoint["optimizer"])  # moves the momentum buffers to their parameters' device
    set_rng_state(checkpoint["rng"])


def rebuild_outputs(paths: RunPaths, checkpoint: dict[str, Any]) -> None:
    """`metrics.jsonl` and `best.pt` made to agree with the checkpoint (`rebuild_from_checkpoint`)."""
    rebuild_from_checkpoint(paths, checkpoint, saved_epoch=saved_epoch, save_best=save_checkpoint)


def saved_epoch(path: Path) -> int | None:
    """The epoch a checkpoint file of this sddkd holds; None when there is none or it is damaged."""
    try:
        return load_checkpoint(path, verify=True).get("epoch") if path.is_file() else None
    except (DamagedCheckpointError, UserError):
        return None


# --- writing: what every checkpoint holds; the order of the writes is `sddkd.rundir.resume.commit_epoch` ---


def training_state(
    cfg: RunConfig, backbone: nn.Module, optimizer: torch.optim.Optimizer, epoch: int, global_step: int,
    record: dict[str, Any], rows: list[dict[str, Any]], method_parameters: nn.Module | None = None,
) -> dict[str, Any]:  # fmt: skip
    """Everything a resume needs: the tensors (weights, optimizer, RNG) beside what the checkpoint says of the run
    (`checkpoint_fields`). The method's own parameters (if any) go under `method_parameters`; `model` stays the
    backbone in the published layout."""
    state = {"model": backbone.state_dict(), "optimizer": optimizer.state_dict(), "rng": rng_state(),
             **checkpoint_fields(cfg, epoch, global_step, record, rows)}  # fmt: skip
    if method_parameters is not None:
        state["method_parameters"] = method_parameters.state_dict()
    return state


def save_last(path: Path, state: dict[str, Any]) -> None:
    """`last.pt`, with the fault points that prove a crash around its rename loses nothing."""
    save_checkpoint(path, state, before_rename=lambda: fault_point("before-rename"))
    fault_point("after-rename")


def save_epoch(
    cfg: RunConfig, paths: RunPaths, backbone: nn.Module, optimizer: torch.optim.Optimizer, epoch: int,
    global_step: int, record: dict[str, Any], rows: list[dict[str, Any]], improved: bool,
    method_parameters: nn.Module | None = None,
) -> None:  # fmt: skip
    """A finished epoch's checkpoints and record, committed in the run directory's order (`commit_epoch`)."""
    state = training_state(cfg, backbone, optimizer, epoch, global_step, record, rows, method_parameters)
    commit_epoch(paths, state, record, improved=improved, save_last=save_last, save_best=save_checkpoint)


def save_partial(
    cfg: RunConfig, paths: RunPaths, backbone: nn.Module, optimizer: torch.optim.Optimizer, global_step: int,
    record: dict[str, Any], rows: list[dict[str, Any]], partial: PartialEpoch,
    method_parameters: nn.Module | None = None,
) -> None:  # fmt: skip
    """A mid-epoch `last.pt`: the epochs done, plus where this epoch stopped and its running totals."""
    state = training_state(cfg, backbone, optimizer, partial.epoch - 1, global_step, record, rows, method_parameters)
    state["partial"] = partial.to_state()
    save_last(paths.last, state)
