"""Atomic file writes for every module: a reader sees the old file or the new one, never half of one.

Each write goes to a temporary sibling (same directory, so the rename is atomic on POSIX and Windows), is flushed
to disk, then renamed over the target; on any error the temporary file is removed. New files get the permissions
`open()` would give them (0o666 less the umask), so results and checkpoints on a shared machine stay readable by
the group, as the rest of a run directory is. No torch import: `report` and `suite` write files too.
"""

from __future__ import annotations

import json
import os
import secrets
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any


def temporary_path(path: Path) -> Path:
    """A fresh sibling of `path` to write first and then rename over it (unique per process and call)."""
    return path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")


def atomic_write(path: Path, write: Callable[[IO[bytes]], object]) -> Path:
    """Call `write(file)` on a new temporary sibling of `path`, flush it to disk, then rename it over `path`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = temporary_path(path)
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
    fd = os.open(temporary, flags, 0o666)  # the umask applies, as for open(); mkstemp would force 0o600
    try:
        with os.fdopen(fd, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    return path


def write_bytes_atomic(path: Path, data: bytes) -> Path:
    return atomic_write(path, lambda handle: handle.write(data))


def write_text_atomic(path: Path, text: str) -> Path:
    return write_bytes_atomic(path, text.encode("utf-8"))


def write_json_atomic(path: Path, payload: Any, *, compact: bool = False) -> Path:
    """JSON for people (indented, sorted keys, final newline), or `compact` for large machine-read indexes."""
    text = json.dumps(payload, separators=(",", ":")) if compact else json.dumps(payload, indent=2, sort_keys=True)
    return write_text_atomic(path, text + "\n")


def read_json(path: Path) -> Any | None:
    """The JSON in `path`, or None when it is missing or unreadable."""
    try:
        with open(path, encoding="utf-8") as handle:
            return json.load(handle)
    except (OSError, ValueError):
        return None
