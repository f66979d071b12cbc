"""Atomic file writes for every module: a reader sees the old file or the new one, never half of one.

Each write goes to a temporary sibling (same directory, so the rename is atomic on POSIX and Windows), is flushed
to disk, then renamed over the target, and the directory itself is fsynced so the rename survives a power loss; on
any error the temporary file is removed. New files get the permissions `open()` would give them (0o666 less the
umask), so results and checkpoints on a shared machine stay readable by the group, as the rest of a run directory
is. A full disk (ENOSPC, EDQUOT) is a `DiskFullError` that names the path and the space it needed, whatever the
writer turned the OS error into (torch.save reports it as "unexpected pos ..."); a folder that refuses writes
(EACCES, EPERM, EROFS: made read-only, or a filesystem remounted read-only mid-run) is a `NotWritableError`.
No torch import: `report` and `suite` write files too.
"""

from __future__ import annotations

import errno
import json
import os
import re
import secrets
import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

from sddkd.errors import UserError

FULL_DISK_ERRNOS = (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC))
NOT_WRITABLE_ERRNOS = (errno.EACCES, errno.EPERM, errno.EROFS)
# temporary_path's names: `.<name>.<pid>.<8 hex>.tmp`
TEMPORARY_NAME = re.compile(r"^\..+\.\d+\.[0-9a-f]{8}\.tmp$")


class DiskFullError(UserError):
    """No space (or quota) left for a write; the message names the path and the space it needed."""


class NotWritableError(UserError):
    """A write refused by permissions or a read-only filesystem; the message names the path."""


def not_writable_error(path: Path, exc: OSError) -> NotWritableError:
    return NotWritableError(
        f"cannot write {path} ({exc.strerror or 'not writable'}): its folder does not accept writes (any more); "
        "make it writable and run the same command again (a run continues with --resume)"
    )


def _size(count: float) -> str:
    for unit in ("bytes", "KiB", "MiB", "GiB"):
        if count < 1024 or unit == "GiB":
            return f"{count:.0f} {unit}" if unit == "bytes" else f"{count:.1f} {unit}"
        count /= 1024
    raise AssertionError("unreachable")


def disk_full_error(path: Path, needed: int | None) -> DiskFullError:
    try:
        free = f"{_size(shutil.disk_usage(path.parent).free)} are free"
    except OSError:
        free = "the free space is unknown"
    need = f"about {_size(needed)}" if needed else "more space"
    return DiskFullError(
        f"no space left on the device of {path}: writing it needs {need} and {free}; free some space (or move "
        "the output elsewhere) and run the same command again (add --resume to continue a training run)",
    )


def is_disk_full(exc: BaseException) -> bool:
    return isinstance(exc, OSError) and exc.errno in FULL_DISK_ERRNOS


@contextmanager
def disk_full_as_user_error(path: Path, needed: int | None = None) -> Iterator[None]:
    """Turn ENOSPC/EDQUOT raised inside the block into one `DiskFullError` sentence about `path`, and a refused
    write (EACCES, EPERM, EROFS) into a `NotWritableError`."""
    try:
        yield
    except (DiskFullError, NotWritableError):
        raise
    except OSError as exc:
        if is_disk_full(exc):
            raise disk_full_error(path, needed) from exc
        if exc.errno in NOT_WRITABLE_ERRNOS:
            raise not_writable_error(path, exc) from exc
        raise


class _RecordingWriter:
    """A file that counts what is written and remembers an OS error, which writers like torch.save replace with
    errors of their own ("unexpected pos 414976 vs 414864") that no longer say the disk is full."""

    def __init__(self, handle: IO[bytes], path: Path) -> None:
        self.handle = handle
        self.path = path  # the temporary file being written
        self.written = 0
        self.error: OSError | None = None

    def write(self, data: Any) -> int:
        try:
            count = self.handle.write(data)
        except OSError as exc:
            self.error = exc
            raise
        self.written += count
        return count

    def __getattr__(self, name: str) -> Any:
        return getattr(self.handle, name)


def fsync_directory(path: Path) -> None:
    """Make a rename inside `path` durable (POSIX); a no-op where directories cannot be opened (Windows)."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # some filesystems refuse fsync on directories; the rename itself already happened
    finally:
        os.close(fd)


def remove_stale_temporaries(folder: Path) -> list[Path]:
    """Delete the temporary files of writes a killed process never finished (each may be checkpoint-sized).
    Only call this while owning the folder (the run lock): another process's write in flight looks the same."""
    removed = []
    for entry in folder.iterdir() if folder.is_dir() else ():
        if TEMPORARY_NAME.match(entry.name) and entry.is_file():
            entry.unlink(missing_ok=True)
            removed.append(entry)
    return removed


def temporary_path(path: Path) -> Path:
    """A fresh sibling of `path` to write first and then rename over it (unique per process and call)."""
    return path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")


def atomic_write(
    path: Path,
    write: Callable[[IO[bytes]], object],
    *,
    needed: int | None = None,
    before_rename: Callable[[], object] | None = None,
) -> Path:
    """Call `write(file)` on a new temporary sibling of `path`, flush it to disk, then rename it over `path`.

    `needed`: the expected size in bytes, for the message of a full disk; `before_rename`: called between the
    complete temporary file and its rename (the fault-injection tests end the process there).
    """
    with disk_full_as_user_error(path, needed):
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = temporary_path(path)
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
        fd = os.open(temporary, flags, 0o666)  # the umask applies, as for open(); mkstemp would force 0o600
    recording: _RecordingWriter | None = None
    try:
        with os.fdopen(fd, "wb") as handle:
            recording = _RecordingWriter(handle, temporary)
            write(recording)  # type: ignore[arg-type]  # a file in every respect the writer uses
            handle.flush()
            os.fsync(handle.fileno())
        if before_rename is not None:
            before_rename()
        os.replace(temporary, path)
    except BaseException as exc:
        temporary.unlink(missing_ok=True)
        cause = recording.error if recording is not None and recording.error is not None else exc
        if is_disk_full(cause) and not isinstance(exc, DiskFullError):
            written = recording.written if recording is not None else 0
            raise disk_full_error(path, max(needed or 0, written) or None) from cause
        if isinstance(cause, OSError) and cause.errno in NOT_WRITABLE_ERRNOS and not isinstance(exc, UserError):
            raise not_writable_error(path, cause) from cause
        raise
    fsync_directory(path.parent)
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
