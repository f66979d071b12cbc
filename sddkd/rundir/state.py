"""The one reader of a run directory's state, for the suite (scheduling, `--status`), the report and `config show`.

The lock is the truth where there is one (a pid can be reused by an unrelated process); a record of another host
whose directory is not locked may be a copy of a live run's folder, so there a reader that knows the time (`now`)
lets the record's `updated` decide. No torch import.
"""

from __future__ import annotations

import json
import os
import socket
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Literal

from sddkd.rundir.lock import describe_holder, lock_holder, locks_supported

RunState = Literal["finished", "running", "incomplete", "failed"]
STATES: tuple[RunState, ...] = ("finished", "running", "incomplete", "failed")
RecordedState = Literal["new", "finished", "conflict", "incomplete", "failed", "running"]
# A running run is stale (so incomplete) once `updated` is older than this many of its mean epoch durations,
# and never sooner than STALE_AFTER_MIN: the first epoch of a large run can take long.
STALE_EPOCHS = 3
STALE_AFTER_MIN = timedelta(hours=2)


def pid_alive(pid: int) -> bool:
    """A process of that id exists on this machine."""
    try:
        os.kill(pid, 0)  # signal 0: an existence check only
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by someone else
    except OSError:
        return False
    return True


def parse_time(text: object) -> datetime | None:
    """An ISO-8601 time (`updated`) in UTC, or None when it is not one."""
    if not isinstance(text, str):
        return None
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
        moment = moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)
        return moment.astimezone(timezone.utc)  # an offset at the ends of the calendar overflows here, not later
    except (ValueError, OverflowError):
        return None


def owned(run_dir: Path) -> bool | None:
    """Whether a process holds the run directory's lock; None where this platform has no flock."""
    if not locks_supported():
        return None
    return lock_holder(run_dir) is not None


def run_state(record: dict[str, Any], now: datetime | None, hostname: str, owned: bool | None = None) -> RunState:
    """The state of a run from its record and its lock: a `running` record whose process is gone is `incomplete`.

    `owned`: whether a process holds the lock (None: not known, no flock on this platform). `now`: the reader's
    time; None for a scheduler, which counts a record it cannot check (another host's, unlocked) as not running
    (it reruns it, and the lock stops a live copy). A finished run stays finished: nothing starts it again.
    """
    status = record.get("status")
    if status == "finished":
        return "finished"
    if owned:
        return "running"
    if status == "failed":
        return "failed"
    if status != "running":  # interrupted by a signal with a checkpoint (`--resume` continues it), or unknown
        return "incomplete"
    pid = record.get("pid")
    live_pid = isinstance(pid, int) and not isinstance(pid, bool) and pid > 0
    if record.get("host") == hostname:
        if owned is False or (live_pid and not pid_alive(pid)):
            return "incomplete"
        if now is None:
            return "running" if live_pid else "incomplete"  # without flock the pid is the only sign of life
    elif now is None:
        return "incomplete"
    updated = parse_time(record.get("updated"))
    epochs_done, wall = record.get("epochs_done"), record.get("wall_seconds")
    done = epochs_done if isinstance(epochs_done, int) and not isinstance(epochs_done, bool) else 0
    epoch_seconds = wall / done if isinstance(wall, (int, float)) and done > 0 else 0.0
    stale_after = max(STALE_AFTER_MIN, timedelta(seconds=STALE_EPOCHS * epoch_seconds))
    if updated is not None and now - updated > stale_after:
        return "incomplete"
    return "running"


@dataclass(frozen=True)
class RecordedRun:
    state: RecordedState  # conflict: the directory holds another recipe (config hash), never overwritten
    record: dict[str, Any] = field(default_factory=dict)


def read_run_state(run_dir: Path, expected_hash: str, now: datetime | None = None) -> RecordedRun:
    """The state of a run directory from its `result.json` and its lock (docs/architecture.md "Run directories").

    A process that owns the directory (its lock, on this host or another of a shared filesystem) is running it,
    whatever its record says yet: the scheduler neither starts it again nor counts it.
    """
    holder = lock_holder(run_dir)
    held = {"holder": describe_holder(holder)} if holder is not None else None
    path = run_dir / "result.json"
    if not path.is_file():
        return RecordedRun("running", held) if held else RecordedRun("new")
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError):
        record = None  # unreadable: rerun it, --resume decides from the checkpoint
    if not isinstance(record, dict):
        return RecordedRun("running", held) if held else RecordedRun("incomplete")
    if record.get("config_hash") != expected_hash:
        return RecordedRun("conflict", record)
    ownership = (holder is not None) if locks_supported() else None
    state = run_state(record, now, socket.gethostname(), ownership)
    return RecordedRun(state, {**record, **held} if state == "running" and held else record)
