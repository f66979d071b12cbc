"""Checkpoints as the truth about a run directory, without torch: what a resume accepts, what it rebuilds from
`last.pt`, and the order in which a run writes its checkpoints.

`last.pt` is the truth: the record (`result.json`), the metrics lines and `best.pt` are rebuilt from it on resume, so
whatever a killed process wrote after its last checkpoint never counts. That holds at every point because an epoch
is committed in one order (`commit_epoch`): `last.pt`, then `best.pt` when the epoch improved, then the record. A
crash between `last.pt` and `best.pt` leaves a `best.pt` one improvement behind, which `rebuild_from_checkpoint` repairs
on resume; a crash before the record leaves a record one epoch behind, which `record_from_checkpoint` replaces.

The engine (`sddkd.engine.resume`) does the torch half: reading and writing the files, the tensors they hold.
Here checkpoints are plain dicts. No torch import: the rest of `sddkd.rundir` is read by the suite and the report.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from sddkd.config import RunConfig, config_hash
from sddkd.errors import DamagedCheckpointError, UserError
from sddkd.rundir.record import RunPaths, new_record, read_result, save_final_record, save_record, write_metrics

# What `last.pt` must hold for a resume (`partial`, `method_parameters` are optional: older files lack them).
RESUME_KEYS = ("model", "optimizer", "rng", "epoch", "global_step", "record", "metrics")
# `best.pt` keeps what a teacher file needs, in the RepDistiller layout ({"model", "epoch", "accuracy"}) plus the
# config that produced it; `last.pt` adds the optimizer and RNG state for an exact resume.
BEST_CHECKPOINT_KEYS = ("model", "epoch", "accuracy", "config", "config_hash")
PROCESS_KEYS = ("pid", "host", "versions", "execution")  # describe the process that writes the record, not the run

SaveCheckpoint = Callable[[Path, dict[str, Any]], None]


def checkpoint_fields(
    cfg: RunConfig, epoch: int, global_step: int, record: dict[str, Any], rows: list[dict[str, Any]]
) -> dict[str, Any]:
    """What a checkpoint says of the run, beside its tensors: the epochs done (and steps), the resolved config and
    its hash, the record, the epoch rows from which metrics.jsonl is rebuilt, and no partial epoch (a mid-epoch
    checkpoint sets one); `accuracy` is the best top-1, as a published teacher file has it."""
    return {
        "epoch": epoch, "global_step": global_step, "config": cfg.model_dump(mode="json"),
        "config_hash": config_hash(cfg), "accuracy": record["best_top1"], "record": dict(record),
        "metrics": list(rows), "partial": None,
    }  # fmt: skip


def damaged_message(paths: RunPaths, problem: str) -> str:
    """A damaged `last.pt` in one sentence: what is wrong, how to start over, where the best weights may still be."""
    return (
        f"{problem}; run the same command with --restart to start this run over (the best weights so far may "
        f"still be in {paths.best}: check them with `sddkd eval --checkpoint {paths.best}`)"
    )


def check_resume_checkpoint(cfg: RunConfig, paths: RunPaths, checkpoint: dict[str, Any]) -> None:
    """A verified `last.pt` may be resumed when it is of this recipe (the hash stored in the checkpoint itself) and
    holds everything a resume reads."""
    wanted, found = config_hash(cfg), checkpoint.get("config_hash")
    if found != wanted:
        raise UserError(
            f"{paths.last} belongs to another recipe (config hash {found}, this one is {wanted}); choose another "
            "--out, or run with --restart to discard it"
        )
    missing = [key for key in RESUME_KEYS if key not in checkpoint]
    if missing:
        raise DamagedCheckpointError(damaged_message(paths, f"{paths.last} lacks {', '.join(missing)}"))


def record_resume_failure(cfg: RunConfig, paths: RunPaths, failure: DamagedCheckpointError) -> None:
    """A `last.pt` that cannot be resumed is the run's failure: the report and --status show it."""
    record = read_result(paths) or new_record(cfg, paths)
    record.update(status="failed", error=str(failure))
    save_final_record(paths, record, failure)


def record_from_checkpoint(cfg: RunConfig, paths: RunPaths, checkpoint: dict[str, Any]) -> dict[str, Any]:
    """The record as of the checkpoint: later in-memory updates of a killed process never count."""
    record = new_record(cfg, paths)
    record.update({k: v for k, v in checkpoint["record"].items() if k not in PROCESS_KEYS})
    record.update(status="running", error=None)
    return record


def rebuild_from_checkpoint(
    paths: RunPaths, checkpoint: dict[str, Any], *, saved_epoch: Callable[[Path], int | None],
    save_best: SaveCheckpoint,
) -> None:  # fmt: skip
    """Rewrite `metrics.jsonl` from the checkpoint's rows and make `best.pt` agree with the checkpointed record.
    `saved_epoch` reads the epoch a checkpoint file holds (None: missing or damaged), `save_best` writes one (the
    engine's torch half)."""
    write_metrics(paths, checkpoint["metrics"])
    best = checkpoint["record"].get("best_epoch")
    if best is None or best != checkpoint["epoch"]:
        return  # best.pt was written (and renamed) before an earlier checkpoint: it is that epoch's
    if saved_epoch(paths.best) != best:  # killed between last.pt and best.pt: the best epoch is the checkpoint's
        save_best(paths.best, best_state(checkpoint))


def best_state(state: dict[str, Any]) -> dict[str, Any]:
    """What `best.pt` keeps of a `last.pt` state."""
    return {k: state[k] for k in BEST_CHECKPOINT_KEYS}


def commit_epoch(
    paths: RunPaths, state: dict[str, Any], record: dict[str, Any], *, improved: bool, save_last: SaveCheckpoint,
    save_best: SaveCheckpoint,
) -> None:  # fmt: skip
    """Commit a finished epoch in the one order that keeps the directory consistent at every point: `last.pt` (the
    truth), then `best.pt` when the epoch improved, then the record. `save_last` and `save_best` write one
    checkpoint file atomically (the engine's torch half)."""
    save_last(paths.last, state)
    if improved:
        save_best(paths.best, best_state(state))
    save_record(paths, record)
