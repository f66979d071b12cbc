"""The suite's child processes, whatever the backend: where a source checkout is, each child's environment and
thread budget, its log (and the line of it that says why it failed), and the signal that stops the scheduler."""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import FrameType

LOG_FILE = "stdout.log"  # the child's stdout and stderr, appended across attempts


def source_checkout() -> Path | None:
    """The repository root when sddkd runs from a source checkout (children must import it too), else None."""
    package_root = Path(__file__).resolve().parent.parent
    return None if {"site-packages", "dist-packages"} & set(package_root.parts) else package_root


def child_threads(devices: int, per_device: int, cpus: int | None = None) -> int:
    """CPU threads per child when `devices * per_device` children run at once on this host's cores."""
    return max(1, (cpus or os.cpu_count() or 1) // (devices * per_device))


def child_env(device: str, threads: int) -> dict[str, str]:
    """A child's environment: its device, and at most `threads` CPU threads and inductor compile workers.

    GPU children need the bound as much as CPU ones: each would otherwise start one OpenMP thread per core for its
    CPU-side work and one inductor compile worker per core, so K runs sharing a GPU would oversubscribe the host
    K times over while they compile. A value the user exported wins.
    """
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "CUDA_VISIBLE_DEVICES": "" if device == "cpu" else device}
    env.setdefault("OMP_NUM_THREADS", str(threads))
    env.setdefault("TORCHINDUCTOR_COMPILE_THREADS", str(threads))
    return env


def last_line(log: Path | None) -> str:
    """The last line of a child's log that says something: usually the one-sentence error of a failed run."""
    if log is None or not log.is_file():
        return ""
    with log.open("rb") as handle:
        handle.seek(max(0, log.stat().st_size - 4096))
        lines = [ln.strip(" \t│┃|") for ln in handle.read().decode(errors="replace").splitlines()]
    said = [ln.strip() for ln in lines if any(c.isalnum() for c in ln)]  # not a blank line or a box border
    return said[-1][:200] if said else ""


@contextmanager
def interrupt_flag() -> Iterator[threading.Event]:
    """An event set by SIGINT or SIGTERM, checked between scheduling steps, so a signal never lands between starting
    a child and recording it (which would orphan the child)."""
    stop = threading.Event()
    if threading.current_thread() is not threading.main_thread():
        yield stop  # signal handlers can only be installed from the main thread
        return

    def handler(signum: int, frame: FrameType | None) -> None:
        stop.set()

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield stop
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)
