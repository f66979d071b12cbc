"""File helpers of the data modules: atomic writes, so an interrupted write never looks complete."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any


def temporary_path(path: Path) -> Path:
    """A sibling of `path` to write first and then rename over it (same directory: the rename is atomic)."""
    return path.with_name(f".{path.name}.tmp-{os.getpid()}")


def write_json_atomic(path: Path, payload: Any) -> None:
    """Write `payload` as JSON to a temporary sibling, flush it to disk, then rename it over `path`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = temporary_path(path)
    try:
        with open(temporary, "w", encoding="utf-8") as handle:
            json.dump(payload, handle, separators=(",", ":"))
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


def read_json(path: Path) -> Any | None:
    """The JSON in `path`, or None when it is missing or unreadable."""
    try:
        with open(path, encoding="utf-8") as handle:
            return json.load(handle)
    except (OSError, ValueError):
        return None
