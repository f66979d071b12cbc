"""The live display of a training run: one rich bar for the whole run, on a terminal only.

It shows epoch e/E and the step within that epoch, this epoch's running mean loss and throughput, and the ETA of
the whole run (evaluation included; the bar itself spans the run). Steps advance without reading anything back
from the device; the loss is read back at most once every REFRESH_SECONDS (one device sync a second costs a GPU
run nothing it would notice, a sync per step would). On a non-terminal (a suite's stdout.log, a SLURM log) there
is no bar: the engine's one line per epoch is all there is.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, Progress, ProgressColumn, Task, TextColumn
from rich.text import Text
from torch import Tensor

REFRESH_SECONDS = 1.0  # how often the running loss and img/s are read and redrawn


def format_duration(seconds: float) -> str:
    seconds = max(0, int(round(seconds)))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


class RunEtaColumn(ProgressColumn):
    """Time left for the whole run, from this process's mean time per step so far (evaluations included)."""

    def render(self, task: Task) -> Text:
        done = task.completed - task.fields["first_step"]
        began = task.fields["began"]
        if done <= 0 or task.total is None:
            return Text("ETA -:--", style="progress.remaining")
        per_step = (time.perf_counter() - began) / done
        return Text(f"ETA {format_duration(per_step * (task.total - task.completed))}", style="progress.remaining")


class RunBar:
    """Advance per optimizer step with this epoch's running totals; `end_epoch` shows the epoch's final means."""

    def __init__(self, progress: Progress, task: Any, epochs: int):
        self.progress, self.task, self.epochs = progress, task, epochs
        self.epoch_steps, self.refreshed = 0, float("-inf")

    def __call__(
        self, steps: int | None = None, samples: int = 0, seconds: float = 0.0, loss_sum: Tensor | None = None
    ) -> None:  # fmt: skip
        """One more step; `steps`, `samples`, `seconds` and `loss_sum` ([T] weighted loss terms, on the device)
        are the epoch's totals so far (its carried part included after a resume)."""
        self.epoch_steps = self.epoch_steps + 1 if steps is None else steps
        fields: dict[str, str] = {"epoch_step": str(self.epoch_steps)}
        now = time.perf_counter()
        if steps and now - self.refreshed >= REFRESH_SECONDS:
            self.refreshed = now
            if loss_sum is not None:
                fields["loss"] = f"{float(loss_sum.sum()) / steps:.4f}"  # the one read-back, once a refresh
            if seconds > 0:
                fields["speed"] = f"{samples / seconds:.0f}"
        self.progress.update(self.task, advance=1, **fields)

    def start_epoch(self, epoch: int, steps: int | None = None, done: int = 0) -> None:
        """`steps`: this epoch's steps (fewer under --max-steps); `done`: those a resume skips."""
        self.epoch_steps, self.refreshed = done, float("-inf")
        self.progress.update(self.task, epoch=f"{epoch}/{self.epochs}", epoch_step=str(done),
                             epoch_total=str(steps) if steps is not None else "?", loss="-", speed="-")  # fmt: skip

    def end_epoch(self, loss: float, images_per_s: float) -> None:
        self.progress.update(self.task, loss=f"{loss:.4f}", speed=f"{images_per_s:.0f}")


@contextmanager
def run_bar(
    enabled: bool, console: Console, *, epochs: int, steps_per_epoch: int, max_steps: int | None, done_steps: int,
    start_epoch: int,
) -> Iterator[RunBar | None]:  # fmt: skip
    """The run's bar, or None when disabled or when the console is not a terminal."""
    if not enabled or not console.is_terminal:
        yield None
        return
    total = epochs * steps_per_epoch
    if max_steps is not None:
        total = min(total, max_steps)
    columns = (
        TextColumn("epoch {task.fields[epoch]}"),
        BarColumn(),
        TextColumn("step {task.fields[epoch_step]}/{task.fields[epoch_total]}"),
        TextColumn("loss {task.fields[loss]}"),
        TextColumn("{task.fields[speed]} img/s"),
        RunEtaColumn(),
    )
    done = min(done_steps or (start_epoch - 1) * steps_per_epoch, total)
    with Progress(*columns, console=console, transient=True) as progress:
        task = progress.add_task(
            "training", total=total, completed=done, epoch=f"{start_epoch}/{epochs}", loss="-", speed="-",
            epoch_step="0", epoch_total=str(steps_per_epoch), first_step=done, began=time.perf_counter(),
        )  # fmt: skip
        yield RunBar(progress, task, epochs)
