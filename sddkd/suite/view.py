"""What `sddkd suite` shows: the expanded plan (--dry-run), each run's recorded state (--status), the live status
table while it runs, and the closing summary. Rich tables for people, JSON records for scripts; no torch import."""

from __future__ import annotations

import time
from collections.abc import Sequence
from datetime import datetime, timezone
from typing import Any

from rich import box
from rich.console import Console
from rich.live import Live
from rich.table import Table

from sddkd.rundir.state import read_run_state
from sddkd.suite.runner import RunProgress, SuiteOutcome, SuitePlan
from sddkd.suite.slurm import Submission, read_submission

RUN_STATUS_STYLE = {"queued": "dim", "running": "cyan", "done": "green", "failed": "bold red", "skipped": "green dim",
                    "blocked": "red", "elsewhere": "cyan dim"}  # fmt: skip
RECORDED_STATE_STYLE = {"finished": "green", "new": "dim", "conflict": "red", "incomplete": "yellow", "failed": "red",
                        "running": "cyan"}  # fmt: skip


def plan_rows(plan: SuitePlan) -> list[dict[str, Any]]:
    """One JSON-ready record per planned run (what `--dry-run --format json` prints)."""
    rows = []
    for run in plan.runs:
        cfg = run.config
        rows.append({
            "run_name": run.name, "preset": run.preset, "dataset": cfg.data.name, "method": cfg.method.name,
            "teacher": cfg.teacher.arch if cfg.teacher else None, "student": cfg.student,
            "scales": list(cfg.scales) if cfg.teacher else None, "seed": cfg.seed, "epochs": cfg.optim.epochs,
            "config_hash": run.config_hash, "trains_teacher": run.trains_teacher,
            "teacher_checkpoint": (cfg.teacher.checkpoint or "store") if cfg.teacher else None,
            "depends_on": list(run.depends_on), "run_dir": str(plan.run_dir(run)),
        })  # fmt: skip
    return rows


def status_rows(plan: SuitePlan) -> list[dict[str, Any]]:
    """Each planned run's state from its run directory alone, whatever backend ran it: new, finished, conflict,
    incomplete, failed or running. A run recorded as running on another host (a SLURM node) cannot be checked from
    here: it counts as running until its record is stale, as in `sddkd report`."""
    rows = []
    now = datetime.now(timezone.utc)  # a reader's time: another host's unlocked record is stale or running
    for run in plan.runs:
        recorded = read_run_state(plan.run_dir(run), run.config_hash, now)
        record, state = recorded.record, recorded.state
        rows.append({
            "run_name": run.name, "state": state, "epochs_done": record.get("epochs_done"),
            "epochs": run.config.optim.epochs, "best_top1": record.get("best_top1"),
            "last_top1": record.get("last_top1"), "updated": record.get("updated"), "error": record.get("error"),
            "host": record.get("host"), "slurm_job": read_submission(plan.run_dir(run)).get("job_id"),
        })  # fmt: skip
    return rows


def plan_table(plan: SuitePlan) -> Table:
    """Run names already say dataset, method, pair, M and seed (JSON adds epochs, preset, teacher checkpoint);
    `after` gives the runs to wait for by number."""
    table = _table(f"suite {plan.name}: {len(plan.runs)} runs into {plan.out}")
    number = {run.name: str(i) for i, run in enumerate(plan.runs, 1)}
    # Narrow terminals fold the run name onto a second line; numbers and hashes are never cut (`after` and
    # SLURM's array indices refer to the numbers).
    table.add_column("#", no_wrap=True, min_width=max(1, len(str(len(plan.runs)))))
    table.add_column("run", overflow="fold")
    table.add_column("hash", no_wrap=True, min_width=12)
    table.add_column("after", overflow="fold")
    for row in plan_rows(plan):
        after = ", ".join(f"#{number[d]}" for d in row["depends_on"])
        table.add_row(number[row["run_name"]], row["run_name"], row["config_hash"], after)
    return table


def status_table(plan: SuitePlan) -> Table:
    table = _table(f"suite {plan.name} in {plan.out} (top-1 %)")
    rows = status_rows(plan)
    slurm = any(row["slurm_job"] for row in rows)
    epochs = [f"{'-' if row['epochs_done'] is None else row['epochs_done']}/{row['epochs']}" for row in rows]
    # The state, epochs and accuracies are never cut: at 80 columns the run name folds onto a second line and
    # the host (the least needed) is shortened with an ellipsis.
    table.add_column("run", overflow="fold")
    table.add_column("state", no_wrap=True, min_width=max([len("state"), *(len(row["state"]) for row in rows)]))
    table.add_column("epochs", no_wrap=True, min_width=max([len("epochs"), *map(len, epochs)]))
    for column in ("best", "last"):
        table.add_column(column, no_wrap=True, min_width=5)
    hosts = any(row["host"] for row in rows)
    if hosts:  # a suite nobody ran yet has no hosts: no empty column
        table.add_column("host", no_wrap=True, overflow="ellipsis", max_width=16)
    if slurm:
        table.add_column("job", no_wrap=True, min_width=max(len(str(row["slurm_job"] or "")) for row in rows))
    for row in rows:
        done = "-" if row["epochs_done"] is None else row["epochs_done"]
        state = f"[{RECORDED_STATE_STYLE[row['state']]}]{row['state']}[/]"
        job = [str(row["slurm_job"] or "")] if slurm else []
        host = [row["host"] or ""] if hosts else []
        table.add_row(row["run_name"], state, f"{done}/{row['epochs']}", _percent(row["best_top1"]),
                      _percent(row["last_top1"]), *host, *job)  # fmt: skip
    return table


class LiveStatus:
    """A compact live table of every run while the suite runs; pass `update` as `run_suite(on_update=...)`."""

    def __init__(self, console: Console, plan: SuitePlan) -> None:
        self.plan = plan
        self.live = Live(console=console, auto_refresh=False, transient=False)
        self.last_refresh = 0.0

    def __enter__(self) -> LiveStatus:
        self.live.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.live.stop()
        if not self.live.console.is_terminal:
            self.live.console.line()  # a redirected final table ends without a newline

    def update(self, progress: Sequence[RunProgress]) -> None:
        """Called every scheduling step; redraws at most 4 times a second (stopping draws the last state)."""
        now = time.monotonic()
        redraw = now - self.last_refresh >= 0.25
        self.last_refresh = now if redraw else self.last_refresh
        self.live.update(self.render(progress), refresh=redraw)

    def render(self, progress: Sequence[RunProgress]) -> Table:
        counts = SuiteOutcome(self.plan, tuple(progress)).counts()
        summary = " · ".join(f"{n} {status}" for status, n in counts.items() if n)
        table = _table(f"suite {self.plan.name}: {summary}")
        show_note = self.live.console.width >= 110  # narrower, rich would squeeze other columns out; see the summary
        for column in ("run", "status", "device", "time", *(["note"] if show_note else [])):
            table.add_column(column, no_wrap=True, overflow="ellipsis")
        now = time.monotonic()
        for item in progress:
            seconds = now - item.started if item.status == "running" and item.started else item.seconds
            device = "" if not item.device else ("cpu" if item.device == "cpu" else f"cuda {item.device}")
            status = f"[{RUN_STATUS_STYLE[item.status]}]{item.status}[/]"
            table.add_row(item.run.name, status, device, _duration(seconds), *([item.note] if show_note else []))
        return table


def print_summary(outcome: SuiteOutcome, console: Console) -> int:
    """The closing lines: counts, then each failure with its cause and log; returns the command's exit code."""
    counts = ", ".join(f"{n} {status}" for status, n in outcome.counts().items() if n)
    console.print(f"suite {outcome.plan.name}: {counts}; run directories under {outcome.plan.out}", highlight=False)
    for item in outcome.failures:
        log = f" (log: {item.log})" if item.log else ""
        console.print(f"[red]{item.status}[/]: {item.run.name}: {item.note}{log}", highlight=False, soft_wrap=True)
    if outcome.interrupted:
        console.print("interrupted: run the same command again to resume the unfinished runs", highlight=False)
        return 130
    return 0 if outcome.ok else 1


SUBMISSION_STATUS = {"queued": "submitted", "running": "in queue"}  # what a RunProgress status means there


def print_submission(submission: Submission, console: Console, target: str) -> int:
    """The runs submitted to SLURM (with their jobs), those skipped or failed, and how to follow them; the exit code."""
    plan = submission.plan
    table = _table(f"suite {plan.name} on SLURM: run directories under {plan.out}")
    for column in ("run", "status", "note"):
        table.add_column(column, no_wrap=column != "note")
    for item in submission.runs:
        status = SUBMISSION_STATUS.get(item.status, item.status)
        table.add_row(item.run.name, f"[{RUN_STATUS_STYLE[item.status]}]{status}[/]", item.note)
    console.print(table)
    submitted = len(submission.jobs)
    follow = f"sddkd suite {target} --status --out {plan.out}"
    console.print(
        f"{submitted} runs submitted; follow them with `{follow}`; the same command resubmits what did not finish",
        highlight=False, soft_wrap=True,
    )  # fmt: skip
    return 1 if submission.failures else 0


def _table(title: str) -> Table:
    return Table(title=title, box=box.SIMPLE, title_justify="left", pad_edge=False)


def _duration(seconds: float) -> str:
    if not seconds:
        return ""
    return f"{seconds:.0f}s" if seconds < 60 else f"{seconds / 60:.1f}m" if seconds < 3600 else f"{seconds / 3600:.1f}h"


def _percent(value: object) -> str:
    return f"{value:.2f}" if isinstance(value, int | float) else ""
