"""Optional experiment tracking: TensorBoard event files next to each run's metrics (extra `tensorboard`).

The metrics log (`metrics.jsonl`) stays the source of truth; this mirrors each epoch's row as scalars so runs can be
compared in TensorBoard. Only rank 0 writes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sddkd.errors import UserError

INSTALL_HINT = "pip install 'sddkd[tensorboard]'"


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
        for key in ("train_top1", "test_top1", "test_top5", "lr", "images_per_s"):
            if row.get(key) is not None:
                self.writer.add_scalar(key.replace("_", "/", 1) if key.startswith(("train", "test")) else key,
                                       row[key], epoch)  # fmt: skip
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()
