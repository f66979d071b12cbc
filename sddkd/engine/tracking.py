"""Optional experiment tracking: TensorBoard event files (extra `tensorboard`) and Weights & Biases (extra `wandb`).

The metrics log (`metrics.jsonl`) stays the source of truth; trackers mirror each epoch's row as scalars so runs can
be compared in TensorBoard or W&B. Only rank 0 writes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sddkd.errors import UserError

INSTALL_HINT = "pip install 'sddkd[tensorboard]'"
WANDB_HINT = "pip install 'sddkd[wandb]'"


def require_tensorboard() -> None:
    """Fail before any work when TensorBoard logging is asked for but the package is missing."""
    try:
        from torch.utils.tensorboard import SummaryWriter  # noqa: F401
    except ImportError:
        raise UserError(f"engine.tensorboard=true needs the tensorboard package: {INSTALL_HINT}") from None


class TensorBoardLog:
    """Writes `<run_dir>/tensorboard/events.*`: losses, accuracies, learning rate and throughput per epoch."""

    def __init__(self, run_dir: Path):
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(log_dir=str(run_dir / "tensorboard"))

    def log_epoch(self, row: dict[str, Any]) -> None:
        epoch = row["epoch"]
        for name, value in row["losses"].items():
            self.writer.add_scalar(f"loss/{name}", value, epoch)
        for name, value in (row.get("method_metrics") or {}).items():
            self.writer.add_scalar(f"method/{name}", value, epoch)
        for key in ("train_top1", "test_top1", "test_top5", "lr", "images_per_s"):
            if row.get(key) is not None:
                self.writer.add_scalar(key.replace("_", "/", 1) if key.startswith(("train", "test")) else key,
                                       row[key], epoch)  # fmt: skip
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


def require_wandb() -> None:
    """Fail before any work when W&B logging is asked for but the package is missing."""
    try:
        import wandb  # noqa: F401
    except ImportError:
        raise UserError(f"engine.wandb=true needs the wandb package: {WANDB_HINT}") from None


def epoch_scalars(row: dict[str, Any]) -> dict[str, float]:
    """One metrics.jsonl row as flat scalar names: loss/<term>, train/top1, test/top1, test/top5, lr, images_per_s,
    and method/<name> for the method's own numbers (CTKD: method/temperature)."""
    scalars = {f"loss/{name}": float(value) for name, value in row["losses"].items()}
    scalars.update({f"method/{name}": float(value) for name, value in (row.get("method_metrics") or {}).items()})
    for key in ("train_top1", "test_top1", "test_top5", "lr", "images_per_s"):
        if row.get(key) is not None:
            scalars[key.replace("_", "/", 1) if key.startswith(("train", "test")) else key] = float(row[key])
    return scalars


class WandbLog:
    """A W&B run per run directory: the resolved config once, then every epoch's scalars at step = epoch.

    Its id derives from the run directory, so a resumed run continues the same W&B run. WANDB_MODE=offline
    (or `wandb offline`) keeps everything local under WANDB_DIR, else under `<run_dir>/wandb`.
    """

    def __init__(self, run_dir: Path, config: dict[str, Any], project: str):
        import hashlib
        import os

        import wandb

        run_id = hashlib.sha256(str(run_dir.resolve()).encode()).hexdigest()[:16]
        self.run = wandb.init(
            project=project, name=run_dir.name, id=run_id, resume="allow", config=config,
            dir=os.environ.get("WANDB_DIR") or str(run_dir),
        )  # fmt: skip

    def log_epoch(self, row: dict[str, Any]) -> None:
        self.run.log({**epoch_scalars(row), "epoch": row["epoch"]}, step=row["epoch"])

    def close(self) -> None:
        self.run.finish()


class Trackers:
    """Every tracker the engine config asks for, behind one log_epoch/close."""

    def __init__(self, trackers: list[Any]):
        self.trackers = trackers

    def log_epoch(self, row: dict[str, Any]) -> None:
        for tracker in self.trackers:
            tracker.log_epoch(row)

    def close(self) -> None:
        for tracker in self.trackers:
            tracker.close()


def require_trackers(tensorboard: bool, wandb: bool) -> None:
    if tensorboard:
        require_tensorboard()
    if wandb:
        require_wandb()


def open_trackers(
    run_dir: Path, config: dict[str, Any], *, tensorboard: bool, wandb: bool, project: str
) -> Trackers | None:
    """The run's trackers, or None when none is asked for."""
    trackers: list[Any] = [TensorBoardLog(run_dir)] if tensorboard else []
    if wandb:
        trackers.append(WandbLog(run_dir, config, project))
    return Trackers(trackers) if trackers else None
