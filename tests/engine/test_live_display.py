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
