"""Resuming from `last.pt`, which is the truth about a run: the record, the metrics lines and `best.pt` are rebuilt
from it, so whatever a killed process wrote after its last checkpoint never counts.

A checkpoint is either at an epoch boundary or, after SIGTERM/SIGINT, in the middle of an epoch: then it also
carries the partial epoch (`PartialEpoch`: the position in the epoch and the running loss sums and accuracy
counts), so the resumed epoch ends with the very metrics line the uninterrupted run writes. The data order is a
function of (seed, epoch), so the position is all the loader needs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from sddkd.config import RunConfig, config_hash
from sddkd.engine.checkpoint import DamagedCheckpointError, load_checkpoint, rng_state, save_checkpoint, set_rng_state
from sddkd.engine.distributed import DistContext
from sddkd.engine.faults import fault_point
from sddkd.errors import UserError
from sddkd.files import write_text_atomic
from sddkd.rundir.record import RunPaths, new_record, read_result, save_record

# `best.pt` keeps what a teacher file needs, in the RepDistiller layout ({"model", "epoch", "accuracy"}) plus the
# config that produced it; `last.pt` adds the optimizer and RNG state for an exact resume.
BEST_CHECKPOINT_KEYS = ("model", "epoch", "accuracy", "config", "config_hash")
PROCESS_KEYS = ("pid", "host", "versions", "execution")  # describe the process that writes the record, not the run


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


def damaged_message(paths: RunPaths, problem: str) -> str:
    return (
        f"{problem}; run the same command with --restart to start this run over (the best weights so far may "
        f"still be in {paths.best}: check them with `sddkd eval --checkpoint {paths.best}`)"
    )


def load_resume_checkpoint(cfg: RunConfig, paths: RunPaths) -> dict[str, Any]:
    """`last.pt`, verified (checksum) and of this recipe (the hash stored in the checkpoint itself), on the CPU."""
    try:
        checkpoint = load_checkpoint(paths.last, map_location="cpu", verify=True)
    except DamagedCheckpointError as exc:
        raise DamagedCheckpointError(damaged_message(paths, str(exc))) from exc
    wanted, found = config_hash(cfg), checkpoint.get("config_hash")
    if found != wanted:
        raise UserError(
            f"{paths.last} belongs to another recipe (config hash {found}, this one is {wanted}); choose another "
            "--out, or run with --restart to discard it"
        )
    missing = [k for k in ("model", "optimizer", "rng", "epoch", "global_step", "record", "metrics")
               if k not in checkpoint]  # fmt: skip
    if missing:
        raise DamagedCheckpointError(damaged_message(paths, f"{paths.last} lacks {', '.join(missing)}"))
    return checkpoint


def record_from_checkpoint(cfg: RunConfig, paths: RunPaths, checkpoint: dict[str, Any]) -> dict[str, Any]:
    """The record as of the checkpoint: later in-memory updates of a killed process never count."""
    record = new_record(cfg, paths)
    record.update({k: v for k, v in checkpoint["record"].items() if k not in PROCESS_KEYS})
    record.update(status="running", error=None)
    return record


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
    """Rewrite `metrics.jsonl` from the checkpoint's rows and make `best.pt` agree with the checkpointed record."""
    import json

    rows = checkpoint["metrics"]
    write_text_atomic(paths.metrics, "".join(json.dumps(row, sort_keys=True) + "\n" for row in rows))
    record = checkpoint["record"]
    if record.get("best_epoch") is None or record["best_epoch"] != checkpoint["epoch"]:
        return  # best.pt was written (and renamed) before an earlier checkpoint: it is that epoch's
    try:
        best_epoch = load_checkpoint(paths.best, verify=True).get("epoch") if paths.best.is_file() else None
    except (DamagedCheckpointError, UserError):
        best_epoch = None
    if best_epoch != record["best_epoch"]:  # killed between last.pt and best.pt: the best epoch is the checkpoint's
        save_checkpoint(paths.best, best_state(checkpoint))


def best_state(state: dict[str, Any]) -> dict[str, Any]:
    return {k: state[k] for k in BEST_CHECKPOINT_KEYS}


# --- writing: what every checkpoint holds, in the order that keeps the directory consistent at every point ---


def load_for_resume(cfg: RunConfig, paths: RunPaths, dist: DistContext) -> dict[str, Any]:
    """`last.pt` verified and of this recipe; a damaged one is also recorded as the run's failure."""
    try:
        return load_resume_checkpoint(cfg, paths)
    except DamagedCheckpointError as exc:
        if dist.is_main:
            record = read_result(paths) or new_record(cfg, paths)
            record.update(status="failed", error=str(exc))
            save_final_record(paths, record, exc)
        raise


def save_final_record(paths: RunPaths, record: dict[str, Any], failure: BaseException | None) -> None:
    try:
        save_record(paths, record)
    except (OSError, UserError):
        if failure is None:
            raise
        # the run already fails (often: the very disk that is full); its own error is the one to report


def training_state(
    cfg: RunConfig, backbone: nn.Module, optimizer: torch.optim.Optimizer, epoch: int, global_step: int,
    record: dict[str, Any], rows: list[dict[str, Any]], method_parameters: nn.Module | None = None,
) -> dict[str, Any]:  # fmt: skip
    """Everything a resume needs; `metrics` are the epoch rows, from which metrics.jsonl is rebuilt. The method's
    own parameters (if any) go under `method_parameters`; `model` stays the backbone in the published layout."""
    state = {
        "model": backbone.state_dict(), "optimizer": optimizer.state_dict(), "epoch": epoch,
        "global_step": global_step, "rng": rng_state(), "config": cfg.model_dump(mode="json"),
        "config_hash": config_hash(cfg), "accuracy": record["best_top1"], "record": dict(record),
        "metrics": list(rows), "partial": None,
    }  # fmt: skip
    if method_parameters is not None:
        state["method_parameters"] = method_parameters.state_dict()
    return state


def save_last(paths: RunPaths, state: dict[str, Any]) -> None:
    save_checkpoint(paths.last, state, before_rename=lambda: fault_point("before-rename"))
    fault_point("after-rename")


def save_epoch(
    cfg: RunConfig, paths: RunPaths, backbone: nn.Module, optimizer: torch.optim.Optimizer, epoch: int,
    global_step: int, record: dict[str, Any], rows: list[dict[str, Any]], improved: bool,
    method_parameters: nn.Module | None = None,
) -> None:  # fmt: skip
    """Atomically write `last.pt`, then `best.pt` when the epoch improved (a crash between the two is repaired on
    resume from `last.pt`, whose weights are that epoch's), then the record."""
    state = training_state(cfg, backbone, optimizer, epoch, global_step, record, rows, method_parameters)
    save_last(paths, state)
    if improved:
        save_checkpoint(paths.best, best_state(state))
    save_record(paths, record)


def save_partial(
    cfg: RunConfig, paths: RunPaths, backbone: nn.Module, optimizer: torch.optim.Optimizer, global_step: int,
    record: dict[str, Any], rows: list[dict[str, Any]], partial: PartialEpoch,
    method_parameters: nn.Module | None = None,
) -> None:  # fmt: skip
    """A mid-epoch `last.pt`: the epochs done, plus where this epoch stopped and its running totals."""
    state = training_state(cfg, backbone, optimizer, partial.epoch - 1, global_step, record, rows, method_parameters)
    state["partial"] = partial.to_state()
    save_last(paths, state)
