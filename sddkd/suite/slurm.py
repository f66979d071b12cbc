"""`sddkd suite --backend slurm`: a suite as SLURM job arrays, submitted through submitit (the `slurm` extra).

Each array task runs one planned run with the local backend's child command,
`python -m sddkd train --preset <run_dir>/suite-config.yaml --out OUT --resume --device cuda`, under
`torchrun --standalone --nproc_per_node=G` when a run gets G > 1 GPUs (one node per run). The child's output is
appended to `<run_dir>/stdout.log` as locally; submitit's own logs go to `OUT/.submitit/`.

- Idempotent like the local backend: finished runs are skipped, the others resume from `checkpoints/last.pt`, and a
  run whose last submission (`<run_dir>/slurm-job.json`) is still in `squeue` is not submitted twice.
- Preemption and time limits: SLURM signals the job before it ends; submitit calls `RunTask.checkpoint`, which sends
  the child SIGTERM and waits: the run stops at its next step, checkpoints that point, and the requeued task's
  `--resume` continues from it, so a requeue loses at most one step.
- Teachers: the runs that wait for nothing go first; the students of trained teachers follow as arrays with
  `--dependency=afterok:<teacher jobs>` and `--kill-on-invalid-dep=yes`, so a failed teacher cancels its students
  instead of leaving them pending. submitit's local executor (cluster="local": tests, one workstation) has no
  dependencies, so the submitter waits for the teacher jobs itself.

No torch import; submitit is imported on first use.
"""

from __future__ import annotations

import getpass
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any, Literal

from sddkd.files import write_json_atomic
from sddkd.rundir.record import RunPaths
from sddkd.suite.processes import LOG_FILE, last_line, source_checkout
from sddkd.suite.runner import (
    STOP_GRACE_SECONDS,
    PlannedRun,
    RunProgress,
    SuiteError,
    SuitePlan,
    TeacherStore,
    block_dependents,
    default_launcher,
    default_store,
    require_stored_teachers,
    store_lacks,
    take_recorded_state,
    train_argv,
)

SUBMISSION_FILE = "slurm-job.json"  # in the run directory: the job that last took the run
SUBMITIT_FOLDER = ".submitit"  # under the output root: submitit's pickles and job logs
INSTALL_HINT = "pip install 'sddkd[slurm]'"
_TIME = re.compile(r"^(?:(\d+)-)?(\d+)(?::(\d+))?(?::(\d+))?$")


def require_submitit() -> ModuleType:
    """The submitit module, or one sentence naming the extra to install."""
    try:
        import submitit
    except ModuleNotFoundError as exc:
        if exc.name != "submitit":
            raise
        raise SuiteError(f"--backend slurm needs submitit, which is not installed: {INSTALL_HINT}") from None
    return submitit


def slurm_minutes(text: str) -> int:
    """A SLURM time limit in whole minutes: `M`, `M:S`, `H:M:S`, `D-H`, `D-H:M` or `D-H:M:S`, as sbatch reads them."""
    match = _TIME.match(text.strip())
    if not match:
        raise SuiteError(f"--slurm-time {text!r} is not a SLURM time; write minutes, HH:MM:SS or D-HH:MM:SS")
    days, first, second, third = (int(g) if g is not None else None for g in match.groups())
    assert first is not None
    if days is not None:  # D-H[:M[:S]]
        seconds = ((days * 24 + first) * 60 + (second or 0)) * 60 + (third or 0)
    elif third is not None:  # H:M:S
        seconds = (first * 60 + (second or 0)) * 60 + third
    else:  # M[:S]
        seconds = first * 60 + (second or 0)
    if seconds <= 0:
        raise SuiteError(f"--slurm-time {text!r} must be longer than zero")
    return -(-seconds // 60)


@dataclass(frozen=True)
class SlurmOptions:
    """Where and how long each run of a suite runs on the cluster; one run is one array task on one node."""

    partition: str | None = None
    gpus_per_run: int = 1  # G > 1: the run trains under torchrun with G processes (DDP); 0: on the CPU
    time: str = "24:00:00"  # per job; a run longer than that continues in its requeued job
    cpus_per_gpu: int = 8  # CPUs per GPU of the run (the CPUs of a CPU-only run)
    mem_gb: int | None = None
    account: str | None = None
    max_parallel: int | None = None  # array tasks running at once
    requeues: int = 10  # requeues after hitting the time limit (preemptions requeue without limit)
    extra: tuple[str, ...] = ()  # further sbatch options, `key=value` (e.g. qos=high, constraint=a100)
    cluster: Literal["slurm", "local"] = "slurm"  # local: submitit's local executor (tests, one workstation)

    def __post_init__(self) -> None:
        if self.gpus_per_run < 0 or self.cpus_per_gpu < 1 or self.requeues < 0:
            raise SuiteError("--slurm-gpus-per-run and --slurm-requeues must be >= 0, --slurm-cpus-per-gpu >= 1")
        if self.max_parallel is not None and self.max_parallel < 1:
            raise SuiteError("--slurm-max-parallel must be at least 1")
        slurm_minutes(self.time)
        self.sbatch_options()

    def sbatch_options(self) -> dict[str, str]:
        options = {}
        for item in self.extra:
            key, sep, value = item.partition("=")
            if not sep or not key.strip():
                raise SuiteError(f"--slurm-option {item!r} must be key=value, e.g. qos=high")
            options[key.strip().lstrip("-")] = value.strip()
        return options


@dataclass(frozen=True)
class TeacherRegistration:
    """Copy a finished teacher run's best checkpoint into the teacher store: always (`--train-teachers`), or, for
    a `teachers: train` suite's own teacher (`if_missing`), only where the store has none when the job ends."""

    dataset: str
    arch: str
    checkpoint: str
    origin: str
    if_missing: bool = False


_child: subprocess.Popen[bytes] | None = None  # the run a task is waiting for, stopped by `checkpoint`


@dataclass(frozen=True)
class RunTask:
    """One array task: one planned run's child command. Submitit pickles it to the node and calls it there."""

    run_name: str
    argv: tuple[str, ...]
    log: str
    env: dict[str, str] = field(default_factory=dict)
    teacher: TeacherRegistration | None = None

    def __call__(self) -> str:
        global _child
        log = Path(self.log)
        job = os.environ.get("SLURM_JOB_ID", "local")
        with log.open("a") as handle:
            handle.write(f"# {time.strftime('%Y-%m-%d %H:%M:%S')} SLURM job {job}: {shlex.join(self.argv)}\n")
            handle.flush()
            _child = subprocess.Popen(
                self.argv, stdout=handle, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                env={**os.environ, **self.env},
            )  # fmt: skip
            code = _child.wait()
            _child = None
        if code != 0:  # the job fails, so `afterok` cancels the runs that wait for it
            raise RuntimeError(f"run {self.run_name} failed with exit {code}: {last_line(log)} (log: {log})")
        if self.teacher is not None:
            self._register(self.teacher, log.parent)
        return self.run_name

    def checkpoint(self, *args: Any, **kwargs: Any) -> Any:
        """Called by submitit when the job is preempted or about to time out: stop the run and requeue this task."""
        import submitit

        if _child is not None and _child.poll() is None:
            _child.terminate()  # SIGTERM: the run checkpoints its current step; the requeued task resumes there
            try:
                _child.wait(timeout=STOP_GRACE_SECONDS)
            except subprocess.TimeoutExpired:
                _child.kill()
        return submitit.helpers.DelayedSubmission(self, *args, **kwargs)

    @staticmethod
    def _register(teacher: TeacherRegistration, run_dir: Path) -> None:
        store = default_store()
        # Decided on the node when the job ends, not at submission: the store may have gained a teacher meanwhile.
        if teacher.if_missing and not store_lacks(store, teacher.dataset, teacher.arch):
            return
        if store is None:
            raise RuntimeError("cannot register the teacher: this installation lacks sddkd.teachers")
        record = json.loads(RunPaths(run_dir).result.read_text())
        store.register_teacher(teacher.dataset, teacher.arch, Path(teacher.checkpoint), origin=teacher.origin,
                               accuracy=record.get("best_top1"))  # fmt: skip


@dataclass(frozen=True)
class Submission:
    plan: SuitePlan
    runs: tuple[RunProgress, ...]  # queued: submitted now (its note names the job); running: still in the queue
    jobs: dict[str, Any]  # run name -> the submitit Job of the runs submitted now

    @property
    def failures(self) -> list[RunProgress]:
        return [p for p in self.runs if p.status in ("failed", "blocked")]


def read_submission(run_dir: Path) -> dict[str, Any]:
    """The run's last SLURM submission (`slurm-job.json`), or {} when it never had one."""
    try:
        record = json.loads((run_dir / SUBMISSION_FILE).read_text())
    except (OSError, ValueError):
        return {}
    return record if isinstance(record, dict) else {}


def submit_suite(
    plan: SuitePlan,
    options: SlurmOptions,
    *,
    store: TeacherStore | None = None,
    launcher: Sequence[str] | None = None,
) -> Submission:
    """Submit every unfinished run of the plan as array tasks; teacher-dependent runs wait for their teachers."""
    submitit = require_submitit()
    store = store if store is not None else default_store()
    progress = {run.name: RunProgress(run) for run in plan.runs}
    for item in progress.values():
        take_recorded_state(plan, item, store)
    queued_jobs = _jobs_in_queue(plan, progress) if options.cluster == "slurm" else {}
    for name, job_id in queued_jobs.items():
        progress[name].status, progress[name].note = "running", f"still in the SLURM queue as job {job_id}"
    require_stored_teachers(plan, progress, store)
    block_dependents(progress)

    job_ids = dict(queued_jobs)
    jobs: dict[str, Any] = {}
    waiting = [p for p in progress.values() if p.status == "queued"]
    first = [p for p in waiting if all(progress[d].status == "skipped" for d in p.run.depends_on)]
    groups: dict[tuple[str, ...], list[RunProgress]] = {(): first}
    for item in waiting:
        if item not in first:
            groups.setdefault(tuple(sorted(item.run.depends_on)), []).append(item)
    for teachers, group in groups.items():
        if options.cluster != "slurm":  # no dependencies there: wait for the teacher jobs here
            _wait_for(teachers, jobs, progress)
            teachers = ()
        block_dependents(progress)  # a teacher whose submission failed
        items = [p for p in group if p.status == "queued"]
        dependency = sorted({job_ids[t] for t in teachers if t in job_ids})
        try:
            submitted = _submit(submitit, plan, options, items, dependency, launcher)
        except SuiteError as exc:
            for item in items:
                item.status, item.note = "failed", str(exc)
            continue
        for item, job in zip(items, submitted):
            jobs[item.run.name], job_ids[item.run.name] = job, job.job_id
            item.note = f"job {job.job_id}" + (f" after {', '.join(dependency)}" if dependency else "")
    return Submission(plan, tuple(progress.values()), jobs)


def _submit(
    submitit: ModuleType, plan: SuitePlan, options: SlurmOptions, items: list[RunProgress], dependency: list[str],
    launcher: Sequence[str] | None,
) -> list[Any]:  # fmt: skip
    """One job array (one job for a single run); a fresh executor each time, so no parameter leaks between arrays."""
    if not items:
        return []
    executor = submitit.AutoExecutor(
        folder=plan.out / SUBMITIT_FOLDER, cluster=options.cluster,
        slurm_max_num_timeout=options.requeues, local_max_num_timeout=options.requeues,
    )  # fmt: skip
    executor.update_parameters(**_parameters(plan, options, dependency))
    tasks = [_task(plan, item.run, options, launcher) for item in items]
    try:
        with executor.batch():
            jobs = [executor.submit(task) for task in tasks]
    except submitit.core.utils.FailedJobError as exc:  # sbatch refused: its own message says why
        said = [line for line in str(exc).splitlines() if line.strip()]
        raise SuiteError(f"sbatch refused the job: {said[-1] if said else exc}; check the --slurm-* options") from None
    for item, job in zip(items, jobs):
        _write_submission(plan.run_dir(item.run), job.job_id, options.cluster)
    return jobs


def _parameters(plan: SuitePlan, options: SlurmOptions, dependency: list[str]) -> dict[str, Any]:
    gpus = options.gpus_per_run
    checkout = source_checkout()
    # The job's python unpickles the task, so it must import sddkd: a source checkout goes on its PYTHONPATH.
    setup = [f"export PYTHONPATH={shlex.quote(str(checkout))}${{PYTHONPATH:+:$PYTHONPATH}}"] if checkout else []
    extra = options.sbatch_options()
    if dependency:
        extra["kill-on-invalid-dep"] = "yes"  # a failed teacher cancels its students rather than leaving them stuck
    parameters: dict[str, Any] = {
        "name": f"sddkd-{plan.name}", "timeout_min": slurm_minutes(options.time), "nodes": 1, "tasks_per_node": 1,
        "gpus_per_node": gpus, "cpus_per_task": max(gpus, 1) * options.cpus_per_gpu, "mem_gb": options.mem_gb,
        "slurm_partition": options.partition, "slurm_account": options.account,
        "slurm_dependency": f"afterok:{':'.join(dependency)}" if dependency else None,
        "slurm_additional_parameters": extra or None, "slurm_setup": setup or None, "local_setup": setup or None,
    }  # fmt: skip
    if options.max_parallel is not None:
        parameters["slurm_array_parallelism"] = options.max_parallel
    return parameters


def _task(plan: SuitePlan, run: PlannedRun, options: SlurmOptions, launcher: Sequence[str] | None) -> RunTask:
    gpus = options.gpus_per_run
    if launcher is None:
        launcher = default_launcher()
        if gpus > 1:
            launcher = (sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={gpus}",
                        "-m", "sddkd")  # fmt: skip
    env = {"PYTHONUNBUFFERED": "1"}
    checkout = source_checkout()
    if checkout is not None:
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(checkout), os.environ.get("PYTHONPATH")) if p)
    if gpus == 0:
        env["CUDA_VISIBLE_DEVICES"] = ""
    teacher = None
    if run.register_teacher or run.register_if_missing:
        best = RunPaths(plan.run_dir(run)).best
        origin = f"sddkd suite {plan.name}: {run.name}"
        teacher = TeacherRegistration(
            run.config.data.name, run.config.student, str(best), origin, if_missing=not run.register_teacher
        )
    argv = train_argv(plan, run, launcher, cuda=gpus > 0)
    return RunTask(run.name, tuple(argv), str(plan.run_dir(run) / LOG_FILE), env, teacher)


def _write_submission(run_dir: Path, job_id: str, cluster: str) -> None:
    body = {"job_id": job_id, "cluster": cluster, "submitted": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    write_json_atomic(run_dir / SUBMISSION_FILE, body)


def _jobs_in_queue(plan: SuitePlan, progress: dict[str, RunProgress]) -> dict[str, str]:
    """Runs to do whose last submitted job SLURM still lists (pending, running or requeued): name -> job id."""
    submitted = {
        name: job_id
        for name, item in progress.items()
        if item.status == "queued" and (job_id := read_submission(plan.run_dir(item.run)).get("job_id"))
    }
    if not submitted or shutil.which("squeue") is None:
        return {}
    try:  # one line per job and per array task (-r), for this user: ids that left the queue are simply absent
        listed = subprocess.run(
            ["squeue", "-h", "-r", "-o", "%i", "-u", getpass.getuser()], capture_output=True, text=True, check=True,
            timeout=60,
        ).stdout.split()  # fmt: skip
    except (OSError, subprocess.SubprocessError) as exc:
        raise SuiteError(f"squeue failed ({exc}), so runs still queued cannot be told apart; retry later") from None
    return {name: job_id for name, job_id in submitted.items() if str(job_id) in set(listed)}


def _wait_for(teachers: tuple[str, ...], jobs: dict[str, Any], progress: dict[str, RunProgress]) -> None:
    for name in teachers:
        job = jobs.get(name)
        if job is None:
            continue
        try:
            job.result()
        except Exception as exc:  # the job's own error, pickled back by submitit
            item = progress[name]
            item.status, item.note = "failed", f"job {job.job_id} failed: {str(exc).strip().splitlines()[-1]}"
        else:
            progress[name].status = "done"
