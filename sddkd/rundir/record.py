"""Run directories: naming, the state a directory is in, and the records written into it.

Layout (docs/architecture.md): `config.yaml`, `metrics.jsonl`, `result.json`, `checkpoints/{last,best}.pt`.
No torch import: `suite` and `report` read these files too.
"""

from __future__ import annotations

import json
import os
import platform
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from sddkd import __version__
from sddkd.config import RunConfig, config_hash
from sddkd.errors import UserError
from sddkd.files import disk_full_as_user_error, write_json_atomic, write_text_atomic
from sddkd.rundir.lock import describe_holder, lock_holder, locks_supported
from sddkd.rundir.naming import identity_record, run_name


@dataclass(frozen=True)
class RunPaths:
    root: Path

    @property
    def config(self) -> Path:
        return self.root / "config.yaml"

    @property
    def metrics(self) -> Path:
        return self.root / "metrics.jsonl"

    @property
    def result(self) -> Path:
        return self.root / "result.json"

    @property
    def last(self) -> Path:
        return self.root / "checkpoints" / "last.pt"

    @property
    def best(self) -> Path:
        return self.root / "checkpoints" / "best.pt"


def run_paths(cfg: RunConfig, out_root: Path) -> RunPaths:
    return RunPaths(Path(out_root) / run_name(cfg))


def read_result(paths: RunPaths) -> dict[str, Any] | None:
    """The record, or None when it is missing or unreadable (a resume then goes by the checkpoint alone)."""
    try:
        record = json.loads(paths.result.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    return record if isinstance(record, dict) else None


def check_run_directory(cfg: RunConfig, paths: RunPaths, resume: bool) -> str:
    """Decide what to do with the run directory before any work starts: "fresh", "resume" or "finished".

    A directory holding another recipe (a different config hash) is never overwritten, and an unfinished run is only
    continued when asked, so two settings can never silently share or clobber a directory.
    """
    record = read_result(paths)
    has_checkpoint = paths.last.is_file()
    if record is None and not has_checkpoint:
        return "fresh"
    wanted = config_hash(cfg)
    found = record.get("config_hash") if record else None
    if found is not None and found != wanted:
        raise UserError(
            f"{paths.root} holds a different run (config hash {found}, this one is {wanted}); "
            "choose another --out or remove that directory"
        )
    if record is not None and record.get("status") == "finished":
        return "finished"
    if not has_checkpoint:
        return "fresh"  # it stopped (or failed) before its first checkpoint: nothing to continue or to lose
    if not resume:
        done = record.get("epochs_done") if record else None
        what = f"an unfinished run ({done} epochs done)" if isinstance(done, int) else "an unfinished run"
        raise UserError(
            f"{paths.root} holds {what}; pass --resume to continue it, --restart to start it over, or choose "
            "another --out"
        )
    return "resume"


def versions() -> dict[str, str]:
    import torch

    return {"sddkd": __version__, "torch": str(torch.__version__), "python": platform.python_version()}


def new_record(cfg: RunConfig, paths: RunPaths) -> dict[str, Any]:
    """The initial `result.json`: identity, planned length, and empty results."""
    return {
        "run_name": paths.root.name,
        "config_hash": config_hash(cfg),
        "status": "running",
        "dataset": cfg.data.name,
        "method": cfg.method.name,
        "teacher": cfg.teacher.arch if cfg.teacher else None,
        "student": cfg.student,
        "scales": list(cfg.scales),
        "seed": cfg.seed,
        "epochs": cfg.optim.epochs,
        "epochs_done": 0,
        "best_top1": None,
        "best_top5": None,
        "best_epoch": None,
        "last_top1": None,
        "last_top5": None,
        "wall_seconds": 0.0,
        "error": None,
        "versions": versions(),
        "teacher_checkpoint": None,
        "pid": os.getpid(),
        "host": socket.gethostname(),
        **identity_record(cfg),  # preset, changed keys, seedless recipe, partial (smoke) or not
    }


def save_record(paths: RunPaths, record: dict[str, Any]) -> None:
    record["updated"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    write_json_atomic(paths.result, record)


def save_config(cfg: RunConfig, paths: RunPaths) -> None:
    header = f"# Resolved config of run {paths.root.name} (config hash {config_hash(cfg)}).\n"
    write_text_atomic(paths.config, header + yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False))


def append_metrics(paths: RunPaths, row: dict[str, Any]) -> None:
    # A torn line (a crash or a full disk mid-write) is harmless: a resume rewrites the file from the checkpoint.
    with disk_full_as_user_error(paths.metrics), paths.metrics.open("a") as handle:
        handle.write(json.dumps(row, sort_keys=True) + "\n")
        handle.flush()
        os.fsync(handle.fileno())


# --- what a run directory says to a scheduler or a reader --------------------------------------------------------

RecordedState = Literal["new", "finished", "conflict", "incomplete", "failed", "running"]


@dataclass(frozen=True)
class RecordedRun:
    state: RecordedState  # conflict: the directory holds another recipe (config hash), never overwritten
    record: dict[str, Any] = field(default_factory=dict)


def read_run_state(run_dir: Path, expected_hash: str) -> RecordedRun:
    """The state of a run directory from its `result.json` (docs/architecture.md "Run directories")."""
    path = run_dir / "result.json"
    # A process that owns the directory (its lock, on this host or another of a shared filesystem) is running it,
    # whatever its record says yet: the scheduler neither starts it again nor counts it.
    holder = lock_holder(run_dir)
    owned = RecordedRun("running", {"holder": describe_holder(holder)}) if holder is not None else None
    if not path.is_file():
        return owned or RecordedRun("new")
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError):
        return owned or RecordedRun("incomplete")  # unreadable: rerun it, --resume decides from the checkpoint
    if not isinstance(record, dict):
        return owned or RecordedRun("incomplete")
    status = record.get("status")
    if record.get("config_hash") != expected_hash:
        return RecordedRun("conflict", record)
    if status == "finished":
        return RecordedRun("finished", record)
    if owned is not None:
        return RecordedRun("running", {**record, **owned.record})
    if status == "running" and not locks_supported() and _running_here(record):
        return RecordedRun("running", record)  # without flock (Windows) the pid is the only sign of life
    # Not locked: whatever the record says, no process trains this run (the kernel drops a dead owner's lock),
    # even when an unrelated process has since been given the dead one's pid.
    return RecordedRun("failed" if status == "failed" else "incomplete", record)


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


def _running_here(record: dict[str, Any]) -> bool:
    """The record's process still runs on this host (a killed run keeps `status: running` with a dead pid)."""
    pid = record.get("pid")
    return isinstance(pid, int) and pid > 0 and record.get("host") == socket.gethostname() and pid_alive(pid)
