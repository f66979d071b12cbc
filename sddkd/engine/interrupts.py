"""SIGTERM and SIGINT end a run at the next step boundary instead of killing it mid-write.

The handler only records the signal; the training loop looks at it between steps, writes a mid-epoch checkpoint
and returns with status `interrupted`. SLURM (preemption, time limits, scancel), `sddkd suite` and Ctrl-C all send
one of these. A second Ctrl-C while the checkpoint is being written raises KeyboardInterrupt as usual (the old
checkpoint stays intact: every write is atomic). Under DDP every rank must stop at the same step, so the ranks
agree on the flag with one all-reduce every `DDP_CHECK_EVERY` steps.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType
from typing import Any

import torch

DDP_CHECK_EVERY = 10  # steps between the ranks' agreement on a stop request (one tiny all-reduce)
SIGNALS = (signal.SIGTERM, signal.SIGINT)


class StoppedBySignal(Exception):
    """A stop request honoured before the training loop (e.g. between teacher-cache chunks): the run ends as
    `interrupted`, with what it had committed so far; the message says where it stopped ("while ...")."""


class StopRequest:
    """Set by a signal handler; `due(step)` says whether the loop stops before its next step."""

    def __init__(self, dist: Any = None) -> None:
        self.signum: int | None = None
        self.dist = dist

    def set(self, signum: int) -> None:
        self.signum = signum

    @property
    def name(self) -> str:
        return signal.Signals(self.signum).name if self.signum else ""

    def due(self, step: int, device: torch.device) -> bool:
        if self.dist is None or self.dist.world_size <= 1:
            return self.signum is not None
        if step % DDP_CHECK_EVERY:
            return False
        flag = torch.tensor(1 if self.signum is not None else 0, device=device)
        if int(self.dist.all_reduce_max(flag)) and self.signum is None:
            self.signum = signal.SIGTERM  # another rank was signalled: stop with it
        return self.signum is not None


@contextmanager
def stop_on_signals(dist: Any = None, announce: Any = None) -> Iterator[StopRequest]:
    """Install the handlers for the block (main thread only; elsewhere the request is never set)."""
    request = StopRequest(dist)
    if threading.current_thread() is not threading.main_thread():
        yield request
        return

    def handler(signum: int, frame: FrameType | None) -> None:
        if request.signum == signal.SIGINT and signum == signal.SIGINT:
            raise KeyboardInterrupt  # Ctrl-C twice: the user insists
        request.set(signum)
        if announce is not None:
            announce(f"{signal.Signals(signum).name}: stopping at the next step, then writing a checkpoint")

    previous = {sig: signal.signal(sig, handler) for sig in SIGNALS}
    try:
        yield request
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)
