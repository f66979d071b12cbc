"""The live display: one bar for the whole run on a terminal; on a pipe, one unwrapped line per epoch only."""

from __future__ import annotations

import io
import re

from rich.console import Console
from typer.testing import CliRunner

from sddkd.cli import app
from sddkd.engine.progress import format_duration, run_bar

TINY = ["--set", "data.synthetic.num_classes=4", "--set", "data.synthetic.train_per_class=8",
        "--set", "data.synthetic.test_per_class=2", "--device", "cpu"]  # fmt: skip


def _terminal() -> Console:
    return Console(file=io.StringIO(), force_terminal=True, width=120)


def test_the_bar_spans_the_whole_run_and_shows_epoch_loss_and_speed():
    with run_bar(True, _terminal(), epochs=3, steps_per_epoch=5, max_steps=None, done_steps=0, start_epoch=1) as bar:
        assert bar is not None
        task = bar.progress.tasks[0]
        for epoch in (1, 2, 3):
            bar.start_epoch(epoch)
            for _ in range(5):
                bar()
            bar.end_epoch(loss=1.0 / epoch, images_per_s=100.0 * epoch)
        assert task.total == 15 and task.completed == 15  # never 28/19: one total for the run
        assert task.fields["epoch"] == "3/3" and task.fields["loss"] == "0.3333" and task.fields["speed"] == "300"


def test_during_an_epoch_the_bar_shows_that_epoch_its_step_loss_and_speed(monkeypatch):
    import torch

    from sddkd.engine import progress

    clock = iter(float(t) for t in range(1000))  # every call a second later: every step may refresh
    monkeypatch.setattr(progress.time, "perf_counter", lambda: next(clock))
    with run_bar(True, _terminal(), epochs=3, steps_per_epoch=19, max_steps=None, done_steps=0, start_epoch=1) as bar:
        assert bar is not None
        task = bar.progress.tasks[0]
        bar.start_epoch(1, 19)
        for step in range(1, 20):
            bar(step, 4 * step, 0.1 * step, torch.tensor(9.0 * step))  # loss 9 all epoch, 40 img/s
        bar.end_epoch(loss=9.0, images_per_s=40.0)
        bar.start_epoch(2, 19)
        assert (task.fields["loss"], task.fields["speed"], task.fields["epoch_step"]) == ("-", "-", "0")
        for step in range(1, 6):
            bar(step, 4 * step, 0.2 * step, torch.tensor(2.5 * step))  # epoch 2: loss 2.5, 20 img/s
        assert task.fields["epoch"] == "2/3" and task.fields["epoch_step"] == "5" and task.fields["epoch_total"] == "19"
        assert task.fields["loss"] == "2.5000" and task.fields["speed"] == "20"  # this epoch's, not epoch 1's
        assert task.completed == 24 and task.total == 57  # the bar and the ETA still span the run
    text = _rendered(3, 19, 2, 5)
    assert "epoch 2/3" in text and "step 5/19" in text and "loss 2.5000" in text and "20 img/s" in text, text


def _rendered(epochs: int, steps_per_epoch: int, epoch: int, steps: int) -> str:
    """What the terminal shows mid-epoch (a rich Progress renders its columns into a Table)."""
    import torch
    from rich.console import Console

    console = Console(file=io.StringIO(), force_terminal=True, width=100)
    with run_bar(True, console, epochs=epochs, steps_per_epoch=steps_per_epoch, max_steps=None, done_steps=0,
                 start_epoch=epoch) as bar:  # fmt: skip
        assert bar is not None
        bar.start_epoch(epoch, steps_per_epoch)
        for step in range(1, steps + 1):
            bar(step, 4 * step, 0.2 * step, torch.tensor(2.5 * step))
        capture = Console(file=io.StringIO(), width=100)
        capture.print(bar.progress.get_renderable())
        return capture.file.getvalue()


def test_the_bar_of_a_resumed_or_step_limited_run():
    console = _terminal()
    with run_bar(True, console, epochs=10, steps_per_epoch=4, max_steps=None, done_steps=12, start_epoch=4) as bar:
        assert bar is not None and (bar.progress.tasks[0].completed, bar.progress.tasks[0].total) == (12, 40)
        assert bar.progress.tasks[0].fields["epoch"] == "4/10"
    with run_bar(True, console, epochs=10, steps_per_epoch=4, max_steps=6, done_steps=0, start_epoch=1) as bar:
        assert bar is not None and bar.progress.tasks[0].total == 6


def test_no_bar_on_a_non_terminal_or_when_disabled():
    piped = Console(file=io.StringIO(), force_terminal=False, width=80)
    with run_bar(True, piped, epochs=2, steps_per_epoch=2, max_steps=None, done_steps=0, start_epoch=1) as bar:
        assert bar is None
    with run_bar(False, _terminal(), epochs=2, steps_per_epoch=2, max_steps=None, done_steps=0, start_epoch=1) as bar:
        assert bar is None


def test_durations():
    assert (format_duration(0), format_duration(61.4), format_duration(3725)) == ("0:00", "1:01", "1:02:05")


def test_a_piped_run_prints_one_whole_line_per_epoch_and_nothing_else(tmp_path):
    # CliRunner's streams are not terminals, and rich would wrap them at 80 columns: the long run name (a hash
    # suffix and the partial marker) makes every epoch line longer than that.
    result = CliRunner().invoke(
        app, ["train", "-p", "synthetic/vanilla/resnet8", "--epochs", "3", "--out", str(tmp_path), *TINY]
    )
    assert result.exit_code == 0, result.output
    lines = result.stderr.splitlines()
    epochs = [line for line in lines if line.startswith("epoch ")]
    assert [line.split()[1] for line in epochs] == ["1/3", "2/3", "3/3"]
    assert all(re.search(r"\(\d+ img/s, [\d.]+s\)$", line) for line in epochs), epochs  # whole, unwrapped
    assert len(lines) == 1 + len(epochs)  # the "on cpu" line, then one line per epoch: no bar, no fragments
    assert (
        lines[0].startswith("synthetic-vanilla-resnet8-s0+")
        and lines[0].endswith(" on cpu: fp32")
        or "bf16" in lines[0]
    )
    summary = result.stdout.strip().splitlines()
    assert len(summary) == 1 and summary[0].endswith("(partial run: e3of8)")
