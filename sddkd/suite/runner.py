"""Execute a suite plan: one child process per run, spread over devices, idempotent and crash-isolated.

Each run is `python -m sddkd train --preset <run_dir>/suite-config.yaml --out OUT --resume --device ...` in a process
of its own, so a crash (or an out-of-memory kill) ends that run only; its exit code is the truth. A run whose
`result.json` says `finished` with the planned config hash is skipped; anything else is (re)started with `--resume`,
which continues from `checkpoints/last.pt` when the engine finds one of the same hash.

No torch import at module level: `torch` is imported only to count GPUs when no device list is given.
"""

from __future__ import annotations

import importlib
import os
import shlex
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Literal, Protocol, cast

import yaml

from sddkd.config import RunConfig
from sddkd.errors import UserError
from sddkd.files import write_text_atomic
from sddkd.rundir.lock import LOCKED_EXIT
from sddkd.rundir.record import RunPaths
from sddkd.rundir.state import read_run_state
from sddkd.suite.processes import LOG_FILE, child_env, child_threads, interrupt_flag, last_line, source_checkout

RESOLVED_CONFIG_FILE = "suite-config.yaml"  # what the child trains: the run exactly as the suite expanded it
# An interrupted child (SIGTERM) stops at its next step and writes a checkpoint: give it this long before a kill.
STOP_GRACE_SECONDS = 60.0


class SuiteError(UserError, ValueError):
    """A user-caused suite problem; its message is one sentence that names the fix."""


class TeacherStore(Protocol):
    """The part of `sddkd.teachers` a suite uses (the module itself satisfies it)."""

    def find_teacher(self, dataset: str, arch: str) -> Path | None: ...

    def register_teacher(
        self, dataset: str, arch: str, checkpoint: Path, *, origin: str, accuracy: float | None = None
    ) -> Path: ...


def default_store() -> TeacherStore | None:
    """`sddkd.teachers`, imported on first use; None where this installation lacks it."""
    try:
        module = importlib.import_module("sddkd.teachers")
    except ModuleNotFoundError as exc:
        if exc.name != "sddkd.teachers":
            raise  # the store exists but something it needs is missing: say so, don't hide it
        return None
    return cast(TeacherStore, module)


def default_launcher() -> tuple[str, ...]:
    """The command a run's `train ...` arguments follow: this interpreter running the package."""
    return (sys.executable, "-m", "sddkd")


@dataclass(frozen=True)
class PlannedRun:
    name: str  # run_name(config): the run directory under the output root
    preset: str  # where the recipe came from (shown in plans; the child reads the resolved config instead)
    config: RunConfig
    config_hash: str
    depends_on: tuple[str, ...] = ()  # runs of the plan that must finish first (the teacher it distils from)
    trains_teacher: bool = False  # a vanilla run whose best checkpoint other runs distil from
    register_teacher: bool = False  # copy its best checkpoint into the teacher store once it finishes
    # `teachers: train`: the teacher a suite trains for itself is also registered, where the store has none, so
    # that later `sddkd train` runs find it by name (the smoke suite's synthetic teacher); never a replacement
    register_if_missing: bool = False


@dataclass(frozen=True)
class SuitePlan:
    name: str
    out: Path  # the output root; run directories are out / run.name
    runs: tuple[PlannedRun, ...]  # teacher runs first

    def run_dir(self, run: PlannedRun) -> Path:
        return self.out / run.name


# --- devices ---------------------------------------------------------------------------------------------------


def resolve_devices(devices: str | None) -> tuple[str, ...]:
    """`cpu`, or CUDA device ids for the children's CUDA_VISIBLE_DEVICES; None: every visible GPU, else the CPU."""
    if devices is not None:
        tokens = [t.strip() for t in devices.split(",")]
        if not all(tokens) or len(set(tokens)) != len(tokens):
            raise SuiteError(f"--devices {devices!r} must be `cpu` or distinct CUDA device ids, e.g. 0,1")
        if "cpu" in tokens and tokens != ["cpu"]:
            raise SuiteError("--devices lists either `cpu` or CUDA device ids, not both")
        return tuple(tokens)
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        ids = tuple(t.strip() for t in visible.split(",") if t.strip())
        return ids or ("cpu",)
    import torch  # only here: counting GPUs needs it, and a dry run never gets here

    return tuple(str(i) for i in range(torch.cuda.device_count())) or ("cpu",)


# --- progress --------------------------------------------------------------------------------------------------

# elsewhere: another process (another suite, a SLURM job, a `sddkd train`) owns the run directory; never started
# here and not counted as a failure
RunStatus = Literal["queued", "running", "done", "failed", "skipped", "blocked", "elsewhere"]
RUN_STATUSES: tuple[RunStatus, ...] = ("queued", "running", "done", "failed", "skipped", "blocked", "elsewhere")


@dataclass
class RunProgress:
    run: PlannedRun
    status: RunStatus = "queued"
    device: str = ""
    started: float | None = None
    seconds: float = 0.0
    returncode: int | None = None
    note: str = ""
    log: Path | None = None


@dataclass(frozen=True)
class SuiteOutcome:
    plan: SuitePlan
    runs: tuple[RunProgress, ...]
    interrupted: bool = False

    @property
    def failures(self) -> list[RunProgress]:
        return [p for p in self.runs if p.status in ("failed", "blocked")]

    @property
    def ok(self) -> bool:
        return not self.interrupted and all(p.status in ("done", "skipped", "elsewhere") for p in self.runs)

    def counts(self) -> dict[str, int]:
        return {s: sum(p.status == s for p in self.runs) for s in RUN_STATUSES}


# --- the scheduler ---------------------------------------------------------------------------------------------


def run_suite(
    plan: SuitePlan,
    *,
    devices: str | None = None,
    per_device: int = 1,
    launcher: Sequence[str] | None = None,
    store: TeacherStore | None = None,
    on_update: Callable[[Sequence[RunProgress]], None] | None = None,
    poll_seconds: float = 0.1,
) -> SuiteOutcome:
    """Run every unfinished run of the plan, at most `per_device` at a time on each device; a failed run never stops
    the others (its status says why). `launcher` replaces `python -m sddkd` (tests); `on_update` gets every run's
    progress after each scheduling step (the live status table)."""
    if per_device < 1:
        raise SuiteError(f"--per-device must be at least 1, not {per_device}")
    slots = resolve_devices(devices)
    store = store if store is not None else default_store()
    launcher = tuple(launcher) if launcher else default_launcher()
    progress = {run.name: RunProgress(run) for run in plan.runs}
    for item in progress.values():
        take_recorded_state(plan, item, store)
    require_stored_teachers(plan, progress, store)
    prebuild_teacher_caches(plan, progress, slots)

    threads = child_threads(len(slots), per_device)
    running: dict[str, tuple[subprocess.Popen[bytes], IO[str]]] = {}
    load = dict.fromkeys(slots, 0)
    update = on_update or (lambda _: None)
    with interrupt_flag() as stop:
        try:
            while not stop.is_set():
                for name, (proc, log) in list(running.items()):
                    if proc.poll() is not None:
                        log.close()
                        del running[name]
                        load[progress[name].device] -= 1
                        _finish(plan, progress[name], proc.returncode, store)
                block_dependents(progress)
                for item in _ready(progress):
                    device = min(slots, key=load.__getitem__)
                    if load[device] >= per_device:
                        break
                    try:
                        running[item.run.name] = _launch(plan, item, device, launcher, threads)
                    except OSError as exc:  # no such launcher, an unwritable run directory: this run fails alone
                        item.status, item.note = "failed", f"could not start: {exc}"
                        continue
                    load[device] += 1
                update(tuple(progress.values()))
                if not running and not any(p.status == "queued" for p in progress.values()):
                    break
                stop.wait(poll_seconds)
        except KeyboardInterrupt:  # Ctrl-C outside the main thread's handler (e.g. a caller's own handler)
            stop.set()
        finally:
            interrupted = stop.is_set()
            _stop_children(progress, running)
            update(tuple(progress.values()))
    return SuiteOutcome(plan, tuple(progress.values()), interrupted)


def take_recorded_state(plan: SuitePlan, item: RunProgress, store: TeacherStore | None) -> None:
    recorded = read_run_state(plan.run_dir(item.run), item.run.config_hash)
    if recorded.state == "finished":
        item.status, item.note = "skipped", "finished earlier"
        if item.run.register_teacher or item.run.register_if_missing:
            _register(plan, item, recorded.record, store)
    elif recorded.state == "running":
        holder = recorded.record.get("holder") or f"process {recorded.record.get('pid')}"
        item.status, item.note = "elsewhere", f"running elsewhere ({holder}): not started here"
    elif recorded.state == "conflict":
        item.status = "failed"
        item.note = (
            f"{plan.run_dir(item.run)} holds another recipe (config hash {recorded.record.get('config_hash')}); "
            "remove that directory or use another --out"
        )
    elif recorded.state in ("incomplete", "failed"):
        item.note = f"{recorded.state}: resume"


def require_stored_teachers(plan: SuitePlan, progress: dict[str, RunProgress], store: TeacherStore | None) -> None:
    """Fail before starting anything when a run to do needs a teacher that is neither in the store nor planned."""
    if store is None:
        return  # no store module here: the engine reports a missing teacher itself
    missing: set[str] = set()
    for item in progress.values():
        teacher = item.run.config.teacher
        if item.status != "queued" or teacher is None or teacher.checkpoint is not None:
            continue
        if store.find_teacher(item.run.config.data.name, teacher.arch) is None:
            missing.add(f"{item.run.config.data.name}/{teacher.arch}")
    if missing:
        raise SuiteError(
            f"suite {plan.name} needs teachers the store lacks ({', '.join(sorted(missing))}): fetch them with "
            "`sddkd fetch-teachers`, train them with --train-teachers, or leave those runs out with --only"
        )


def prebuild_teacher_caches(plan: SuitePlan, progress: dict[str, RunProgress], slots: Sequence[str]) -> None:
    """Runs to do that share a teacher and data share one teacher-logit cache, built here before any of them trains
    (sddkd.suite.prebuild decides which groups pay for their cache)."""
    configs = [p.run.config for p in progress.values() if p.status == "queued" and p.run.config.teacher is not None]
    if not any(c.teacher is not None and c.teacher.cache != "off" for c in configs):
        return
    from rich.console import Console

    from sddkd.suite.prebuild import prebuild_for_suite

    prebuild_for_suite(configs, Console(stderr=True), "cpu" if slots[0] == "cpu" else "cuda")


def _ready(progress: dict[str, RunProgress]) -> list[RunProgress]:
    settled = {name for name, p in progress.items() if p.status in ("done", "skipped")}
    return [p for p in progress.values() if p.status == "queued" and set(p.run.depends_on) <= settled]


def block_dependents(progress: dict[str, RunProgress]) -> None:
    for item in progress.values():
        broken = [d for d in item.run.depends_on if progress[d].status in ("failed", "blocked", "elsewhere")]
        if item.status == "queued" and broken:
            elsewhere = progress[broken[0]].status == "elsewhere"
            why = "is running elsewhere: rerun when it is done" if elsewhere else "did not finish"
            item.status, item.note = "blocked", f"teacher run {broken[0]} {why}"


def write_resolved_config(plan: SuitePlan, run: PlannedRun) -> Path:
    """The run's fully resolved config as a preset file the child trains from."""
    path = plan.run_dir(run) / RESOLVED_CONFIG_FILE  # written atomically, its folder created if missing
    header = f"# Resolved by `sddkd suite {plan.name}` (config hash {run.config_hash}, from {run.preset}).\n"
    text = header + yaml.safe_dump(run.config.model_dump(mode="json"), sort_keys=False)
    return write_text_atomic(path, text)


def train_argv(plan: SuitePlan, run: PlannedRun, launcher: Sequence[str], cuda: bool) -> list[str]:
    """The child command of a run, whatever the backend: train the resolved config, resuming what is there."""
    config_path = write_resolved_config(plan, run)
    argv = [*launcher, "train", "--preset", str(config_path), "--out", str(plan.out), "--resume"]
    return argv + ["--device", "cuda" if cuda else "cpu"]


def _launch(
    plan: SuitePlan, item: RunProgress, device: str, launcher: tuple[str, ...], threads: int
) -> tuple[subprocess.Popen[bytes], IO[str]]:
    argv = train_argv(plan, item.run, launcher, cuda=device != "cpu")
    env = child_env(device, threads)
    checkout = source_checkout()
    if checkout is not None:
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(checkout), env.get("PYTHONPATH")) if p)
    item.log = plan.run_dir(item.run) / LOG_FILE
    log = item.log.open("a")
    log.write(f"# {time.strftime('%Y-%m-%d %H:%M:%S')} sddkd suite {plan.name}: {shlex.join(argv)}\n")
    log.flush()
    try:
        proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env)
    except OSError:
        log.close()
        raise
    item.status, item.device, item.started, item.note = "running", device, time.monotonic(), ""
    return proc, log


def _finish(plan: SuitePlan, item: RunProgress, returncode: int, store: TeacherStore | None) -> None:
    item.returncode = returncode
    item.seconds = time.monotonic() - (item.started or time.monotonic())
    if returncode == LOCKED_EXIT:  # another process took the run between our check and the child's start
        item.status, item.note = "elsewhere", f"running elsewhere: {last_line(item.log)}"
        return
    if returncode != 0:
        item.status = "failed"
        cause = f"killed by signal {-returncode}" if returncode < 0 else f"exit {returncode}"
        last = last_line(item.log)
        item.note = f"{cause}: {last}" if last else cause
        return
    item.status = "done"
    if item.run.register_teacher or item.run.register_if_missing:
        record = read_run_state(plan.run_dir(item.run), item.run.config_hash).record
        _register(plan, item, record, store)


def _register(plan: SuitePlan, item: RunProgress, record: dict[str, Any], store: TeacherStore | None) -> None:
    """Copy a trained teacher's best checkpoint into the store; a failure fails the run and blocks its students."""
    cfg = item.run.config
    best = RunPaths(plan.run_dir(item.run)).best
    if not item.run.register_teacher and not store_lacks(store, cfg.data.name, cfg.student):
        return  # a suite's own teacher: its students read it from the run directory, the store keeps its own
    if store is None:
        item.status, item.note = "failed", "cannot register the teacher: this installation lacks sddkd.teachers"
        return
    if not best.is_file():
        item.status, item.note = "failed", f"finished without {best}, so its teacher cannot be registered"
        return
    try:
        stored = store.register_teacher(
            cfg.data.name, cfg.student, best, origin=f"sddkd suite {plan.name}: {item.run.name}",
            accuracy=record.get("best_top1"),
        )  # fmt: skip
    except Exception as exc:  # the store's errors are user-facing sentences; keep the suite going either way
        item.status, item.note = "failed", f"registering the teacher failed: {exc}"
        return
    item.note = f"registered as teacher {cfg.data.name}/{cfg.student} ({stored})"


def store_lacks(store: TeacherStore | None, dataset: str, arch: str) -> bool:
    """Whether a `register_if_missing` teacher goes into the store: only where it has none (never a replacement)."""
    if store is None:
        return False  # nowhere to register it
    try:
        return store.find_teacher(dataset, arch) is None
    except UserError:
        return False  # a damaged stored teacher: `fetch-teachers --force` is the way to replace it, not a suite


def _stop_children(
    progress: dict[str, RunProgress], running: dict[str, tuple[subprocess.Popen[bytes], IO[str]]]
) -> None:
    """Terminate children still running (the suite was interrupted), then kill those that outlive the grace time."""
    for proc, _ in running.values():
        if proc.poll() is None:
            proc.terminate()
    deadline = time.monotonic() + STOP_GRACE_SECONDS
    for name, (proc, log) in running.items():
        try:
            proc.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
        item = progress[name]
        item.status, item.returncode, item.note = "failed", proc.returncode, "interrupted: rerun the suite to resume it"
        item.seconds = time.monotonic() - (item.started or time.monotonic())
