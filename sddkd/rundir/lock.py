"""One owner per run directory: an exclusive `flock` on `<run>/lock`, held for the training process's life.

The kernel drops the lock when the process ends, however it ends (a crash, SIGKILL, an out-of-memory kill), so a
stale lock cannot exist and nothing has to be cleaned up. The file's content (pid, host, start time) only names
the holder in messages; the lock itself is the truth. Readers (`sddkd suite`, `--status`) probe it with a shared,
non-blocking lock released at once; the trainer retries for a moment so such a probe never refuses it.

Network filesystems: on Linux, NFSv4 (and NFSv3 with lockd) implements `flock` as a POSIX byte-range lock that
every client sees; Lustre does so only when mounted with `-o flock` (with `localflock` it is node-local, and
without either option `flock` fails: then this module says so). No torch import: the suite reads locks too.
"""

from __future__ import annotations

import errno
import json
import os
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sddkd.errors import UserError

try:
    import fcntl
except ImportError:  # Windows: no flock; a run directory there is not protected against a second process
    fcntl = None  # type: ignore[assignment]

LOCK_FILE = "lock"
ACQUIRE_RETRY_SECONDS = 2.0  # a reader's probe holds the lock for microseconds; never mistake it for an owner
LOCKED_EXIT = 75  # EX_TEMPFAIL: `sddkd train` refused because another process owns the run (not a failure)


class RunLockedError(UserError):
    """Another process owns the run directory."""


@dataclass
class RunLock:
    path: Path
    fd: int | None

    def release(self) -> None:
        if self.fd is not None:
            os.close(self.fd)  # closing the descriptor drops the flock
            self.fd = None


def _unsupported(path: Path, exc: OSError) -> UserError:
    return UserError(
        f"cannot lock {path} ({exc.strerror}): this filesystem does not support flock (on Lustre mount it with "
        "-o flock); use an --out on a filesystem that does"
    )


def describe_holder(holder: dict[str, Any]) -> str:
    pid, host = holder.get("pid", "?"), holder.get("host", "?")
    since = f" since {holder['started']}" if holder.get("started") else ""
    return f"process {pid} on {host}{since}"


def read_holder(path: Path) -> dict[str, Any]:
    try:
        holder = json.loads(path.read_text() or "{}")
    except (OSError, ValueError):
        return {}
    return holder if isinstance(holder, dict) else {}


def acquire_run_lock(root: Path) -> RunLock:
    """Own `root` (created if missing) until `release()` or the end of the process; refuse if another owns it."""
    path = root / LOCK_FILE
    try:
        root.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    except FileExistsError as exc:
        raise UserError(
            f"cannot create the run directory {root}: {exc.filename} is a file; choose another --out"
        ) from exc
    except NotADirectoryError as exc:
        raise UserError(
            f"cannot create the run directory {root}: a part of it is a file; choose another --out"
        ) from exc
    except PermissionError as exc:
        raise UserError(f"no permission to write in {root}; choose another --out or fix its permissions") from exc
    except OSError as exc:
        raise UserError(f"cannot write in {root} ({exc.strerror}); choose another --out") from exc
    if fcntl is None:
        return RunLock(path, fd)
    deadline = time.monotonic() + ACQUIRE_RETRY_SECONDS
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            break
        except BlockingIOError:
            if time.monotonic() < deadline:
                time.sleep(0.05)
                continue
            os.close(fd)
            raise RunLockedError(
                f"{root} is being trained by {describe_holder(read_holder(path))}; wait for it to finish or "
                "stop it, then run the same command again"
            ) from None
        except OSError as exc:
            os.close(fd)
            if exc.errno in (errno.ENOLCK, errno.EOPNOTSUPP, errno.EINVAL, errno.ENOSYS):
                raise _unsupported(path, exc) from exc
            raise
    holder = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.strftime("%Y-%m-%dT%H:%M:%SZ",
                                                                                         time.gmtime())}  # fmt: skip
    os.ftruncate(fd, 0)
    os.pwrite(fd, (json.dumps(holder) + "\n").encode(), 0)
    return RunLock(path, fd)


def locks_supported() -> bool:
    """Whether this platform has flock, so that an unlocked run directory is known to have no live owner."""
    return fcntl is not None


def lock_holder(root: Path) -> dict[str, Any] | None:
    """Who owns `root` now ({"pid", "host", "started"}, possibly empty), or None when no process does."""
    path = root / LOCK_FILE
    if fcntl is None:
        return None
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return None  # no lock file (never trained) or unreadable: nobody can be shown as owner
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return read_holder(path)
    except OSError:
        return None
    finally:
        os.close(fd)  # also drops the shared probe lock at once
    return None
