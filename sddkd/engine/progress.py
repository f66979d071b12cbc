"""The live display of a training run: one rich bar for the whole run, on a terminal only.

It shows epoch e/E, the step count of the run, the last epoch's loss and throughput, and the ETA of the whole run
(evaluation included). Step counts advance every step without reading anything back from the device; loss and
img/s are the epoch means the engine already has, so the bar is redrawn with them once per epoch. On a
non-terminal (a suite's stdout.log, a SLURM log) there is no bar: the engine's one line per epoch is all there is.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, Progress, ProgressColumn, Task, TextColumn
from rich.text import Text


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
    """Advance per optimizer step; `end_epoch` redraws the epoch, loss and img/s fields."""

    def __init__(self, progress: Progress, task: Any, epochs: int):
        self.progress, self.task, self.epochs = progress, task, epochs

    def __call__(self) -> None:
        self.progress.update(self.task, advance=1)

    def start_epoch(self, epoch: int) -> None:
        self.progress.update(self.task, epoch=f"{epoch}/{self.epochs}")

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
        TextColumn("step {task.completed}/{task.total}"),
        TextColumn("loss {task.fields[loss]}"),
        TextColumn("{task.fields[speed]} img/s"),
        RunEtaColumn(),
    )
    done = min(done_steps or (start_epoch - 1) * steps_per_epoch, total)
    with Progress(*columns, console=console, transient=True) as progress:
        task = progress.add_task(
            "training", total=total, completed=done, epoch=f"{start_epoch}/{epochs}", loss="-", speed="-",
            first_step=done, began=time.perf_counter(),
        )  # fmt: skip
        yield RunBar(progress, task, epochs)
