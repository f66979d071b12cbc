"""A test-only hook that ends the process hard at a named point, to prove a run directory survives any crash.

`SDDKD_FAULT=point[:n]` makes the n-th arrival (default 1) of this process at `point` call `os._exit(FAULT_EXIT)`:
no clean-up, no `finally`, no flush, as a SIGKILL or a power cut would. `SDDKD_FAULT=sigterm:n` instead sends the
process a real SIGTERM at its n-th training step, to test the graceful stop deterministically. Points:

- `after-metrics`: right after an epoch's metrics line is on disk;
- `before-rename`: `last.pt` fully written to its temporary file, not yet renamed over the old one;
- `after-rename`: right after the rename of `last.pt`;
- `before-final-record`: the training is over, the final `result.json` not yet written;
- `mid-epoch`: after an optimizer step (counted over the process), between two step boundaries.

Unset (always, outside the tests), `fault_point` is one attribute test. No torch import.
"""

from __future__ import annotations

import os
import signal
import sys

FAULT_EXIT = 86  # what a process ended by a fault exits with (never a code sddkd uses otherwise)
POINTS = ("after-metrics", "before-rename", "after-rename", "before-final-record", "mid-epoch", "sigterm")


def _parse(value: str | None) -> tuple[str, int] | None:
    if not value:
        return None
    point, _, count = value.partition(":")
    if point not in POINTS or (count and not count.isdigit()):
        raise SystemExit(f"SDDKD_FAULT={value!r}: expected one of {', '.join(POINTS)}, optionally with :N")
    return point, int(count or 1)


ARMED = _parse(os.environ.get("SDDKD_FAULT"))
_arrivals: dict[str, int] = {}


def fault_point(point: str) -> None:
    """End the process here if SDDKD_FAULT names this point and this is its n-th arrival."""
    if ARMED is None or (ARMED[0] != point and not (ARMED[0] == "sigterm" and point == "mid-epoch")):
        return
    _arrivals[point] = _arrivals.get(point, 0) + 1
    if _arrivals[point] != ARMED[1]:
        return
    if ARMED[0] == "sigterm":
        os.kill(os.getpid(), signal.SIGTERM)  # the real signal, through the real handler
        return
    sys.stderr.write(f"SDDKD_FAULT: ending the process at {point} ({ARMED[1]})\n")
    sys.stderr.flush()
    os._exit(FAULT_EXIT)
