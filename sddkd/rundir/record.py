"""What a run directory holds: its paths, the record (`result.json`), the resolved config and the metrics lines.

Layout (docs/architecture.md): `config.yaml`, `metrics.jsonl`, `result.json`, `checkpoints/{last,best}.pt`.
No torch import: `suite` and `report` read these files too.
"""

from __future__ import annotations

import json
import os
import platform
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from sddkd import __version__
from sddkd.config import RunConfig, config_hash
from sddkd.errors import UserError
from sddkd.files import disk_full_as_user_error, write_json_atomic, write_text_atomic
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


def fold_epoch(record: dict[str, Any], epoch: int, test: dict[str, Any] | None, wall_seconds: float) -> None:
    """An epoch's results into the record: when it was tested, its accuracy as the last and, when its top-1 beats
    the best so far (a tie keeps the earlier epoch), as the best; then the epochs done and the wall time so far."""
    if test is not None:
        record.update(last_top1=test["top1"], last_top5=test["top5"])
        if record["best_top1"] is None or test["top1"] > record["best_top1"]:
            record.update(best_top1=test["top1"], best_top5=test["top5"], best_epoch=epoch)
    record.update(epochs_done=epoch, wall_seconds=wall_seconds)


def save_record(paths: RunPaths, record: dict[str, Any]) -> None:
    record["updated"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    write_json_atomic(paths.result, record)


def save_final_record(paths: RunPaths, record: dict[str, Any], failure: BaseException | None) -> None:
    """The record's last write, whatever ended the run (`failure`: the exception that will propagate, if any)."""
    try:
        save_record(paths, record)
    except (OSError, UserError):
        if failure is None:
            raise
        # the run already fails (often: the very disk that is full); its own error is the one to report


def save_config(cfg: RunConfig, paths: RunPaths) -> None:
    header = f"# Resolved config of run {paths.root.name} (config hash {config_hash(cfg)}).\n"
    write_text_atomic(paths.config, header + yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False))


def write_metrics(paths: RunPaths, rows: list[dict[str, Any]]) -> None:
    """`metrics.jsonl` rewritten whole from epoch rows (a resume's, from its checkpoint), atomically."""
    write_text_atomic(paths.metrics, "".join(json.dumps(row, sort_keys=True) + "\n" for row in rows))


def append_metrics(paths: RunPaths, row: dict[str, Any]) -> None:
    # A torn line (a crash or a full disk mid-write) is harmless: a resume rewrites the file from the checkpoint.
    with disk_full_as_user_error(paths.metrics), paths.metrics.open("a") as handle:
        handle.write(json.dumps(row, sort_keys=True) + "\n")
        handle.flush()
        os.fsync(handle.fileno())
