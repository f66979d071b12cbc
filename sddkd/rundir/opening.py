"""Opening a run directory as a transaction: own it (the lock), sweep what killed writes left, decide its state,
and make a fresh start really fresh. What the directory says is then rebuilt from the checkpoint alone
(`sddkd.rundir.resume`), so a crash at any point leaves nothing that a later `--resume` would count twice.

No torch import (like the rest of `sddkd.rundir`): the suite and the report read run directories too.
"""

from __future__ import annotations

import shutil

from sddkd.config import RunConfig, config_hash
from sddkd.errors import UserError
from sddkd.files import remove_stale_temporaries
from sddkd.rundir.lock import RunLock, acquire_run_lock
from sddkd.rundir.record import RunPaths, read_result

# What one training attempt writes; a fresh start removes all of it (the suite's own files and the lock stay).
RUN_OUTPUTS = ("metrics.jsonl", "result.json", "config.yaml", "checkpoints/last.pt", "checkpoints/best.pt")
RUN_OUTPUT_FOLDERS = ("tensorboard",)


def clear_run_outputs(paths: RunPaths) -> None:
    """Remove everything an earlier attempt of this run wrote (its metrics lines would otherwise be counted twice)."""
    for name in RUN_OUTPUTS:
        (paths.root / name).unlink(missing_ok=True)
    for name in RUN_OUTPUT_FOLDERS:
        shutil.rmtree(paths.root / name, ignore_errors=True)


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


def open_run_directory(cfg: RunConfig, paths: RunPaths, *, resume: bool, restart: bool) -> tuple[RunLock, str]:
    """Own the run directory and decide what to do: "fresh", "resume" or "finished" (see `check_run_directory`).

    restart=True discards an unfinished (or damaged) attempt of the same recipe and starts over; a directory of
    another recipe is still never touched. The lock is held until the caller releases it or the process ends.
    """
    lock = acquire_run_lock(paths.root)
    try:
        for folder in (paths.root, paths.last.parent):
            remove_stale_temporaries(folder)
        state = check_run_directory(cfg, paths, resume or restart)
        if restart and state != "finished":
            state = "fresh"
        if state == "fresh":
            clear_run_outputs(paths)
    except BaseException:
        lock.release()
        raise
    return lock, state
