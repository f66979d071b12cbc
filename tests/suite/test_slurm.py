"""`sddkd suite --backend slurm`: a suite through submitit's local executor end to end (resume included), the sbatch
scripts and teacher dependencies with stand-ins for sbatch/srun/squeue on PATH, requeue, and the missing extra."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest
from rich.console import Console
from typer.testing import CliRunner

import sddkd.suite.slurm as suite_slurm
from sddkd.cli import app
from sddkd.engine.loop import train
from sddkd.suite.plan import load_suite, plan_suite, status_rows
from sddkd.suite.runner import SuiteError
from sddkd.suite.slurm import RunTask, SlurmOptions, slurm_minutes, submit_suite
from sddkd.suite.view import print_submission, status_table
from tests.suite.test_plan import FakeStore

submitit = pytest.importorskip("submitit")
runner = CliRunner()

TWO_RUNS = textwrap.dedent(
    """
    seeds: [0, 1]
    set: [data.synthetic.num_classes=4, data.synthetic.train_per_class=8, data.synthetic.test_per_class=4,
          optim.batch_size=16, optim.epochs=2, engine.progress=false]
    runs:
      - presets: synthetic/vanilla/resnet8
    """
)


def dead_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


@pytest.mark.slow
def test_two_runs_through_submitits_local_executor_finish_and_resume(tmp_path: Path):
    (tmp_path / "two.yaml").write_text(TWO_RUNS)
    plan = plan_suite(load_suite(str(tmp_path / "two.yaml")), out=tmp_path / "logs")
    # Seed 0 was interrupted after its first epoch (a preempted job): its process is gone, its checkpoint stays.
    interrupted = plan.runs[0]
    train(interrupted.config, plan.out, stop_after_epoch=1)
    result = plan.run_dir(interrupted) / "result.json"
    result.write_text(json.dumps({**json.loads(result.read_text()), "pid": dead_pid()}))

    options = SlurmOptions(cluster="local", gpus_per_run=0, time="10")
    submission = submit_suite(plan, options)
    assert [p.status for p in submission.runs] == ["queued", "queued"] and set(submission.jobs) == {
        r.name for r in plan.runs}  # fmt: skip
    for job in submission.jobs.values():
        job.result()  # raises with the task's error if a run failed

    rows = {row["run_name"]: row for row in status_rows(plan)}
    assert {row["state"] for row in rows.values()} == {"finished"}
    assert all(row["slurm_job"] == submission.jobs[name].job_id for name, row in rows.items())
    log = (plan.run_dir(interrupted) / "stdout.log").read_text()
    assert "Resuming" in log and "--resume" in log, "the task resumed the interrupted run"
    metrics = (plan.run_dir(interrupted) / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in metrics] == [1, 2]

    again = submit_suite(plan, options)
    assert again.jobs == {} and {p.status for p in again.runs} == {"skipped"}


@pytest.fixture
def fake_slurm(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """sbatch (keeps each script, answers job 100, 101, ...), srun (submitit looks for it) and squeue (lists
    $FAKE_SQUEUE) on PATH."""
    bin_dir, records = tmp_path / "bin", tmp_path / "sbatch"
    bin_dir.mkdir()
    records.mkdir()
    scripts = {
        "sbatch": f'[ -n "$FAKE_REFUSE" ] && echo "sbatch: error: $FAKE_REFUSE" >&2 && exit 1\n'
        f'n=$((100 + $(ls {records} | wc -l))); cp "$1" {records}/$n.sh; echo "Submitted batch job $n"',
        "srun": "exit 0",
        "squeue": 'for id in $FAKE_SQUEUE; do echo "$id"; done',
    }
    for name, body in scripts.items():
        (bin_dir / name).write_text(f"#!/bin/sh\n{body}\n")
        (bin_dir / name).chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{Path(sys.executable).parent}:/usr/bin:/bin")
    monkeypatch.setenv("FAKE_SQUEUE", "")
    monkeypatch.setenv("FAKE_REFUSE", "")
    return records


def test_sbatch_scripts_arrays_and_teacher_dependencies(tmp_path: Path, fake_slurm: Path, monkeypatch):
    # The smoke suite: a teacher run, 4 students distilling from it, and a vanilla baseline that waits for nothing.
    plan = plan_suite(load_suite("smoke"), out=tmp_path / "logs")
    teacher, students, baseline = plan.runs[0], plan.runs[1:5], plan.runs[5]
    options = SlurmOptions(partition="gpu", gpus_per_run=2, time="1-00:00:00", account="lab", extra=("qos=high",))
    submission = submit_suite(plan, options)

    first, second = (fake_slurm / "100.sh").read_text(), (fake_slurm / "101.sh").read_text()
    for script in (first, second):
        for line in ("--partition=gpu", "--gpus-per-node=2", "--cpus-per-task=16", "--time=1440", "--account=lab",
                     "--qos=high", "--signal=USR2@90", "--ntasks-per-node=1"):  # fmt: skip
            assert f"#SBATCH {line}" in script, line
    assert "#SBATCH --array=0-1%" in first and "--dependency" not in first
    assert "#SBATCH --array=0-3%" in second and "#SBATCH --dependency=afterok:100_0" in second
    assert "#SBATCH --kill-on-invalid-dep=yes" in second
    assert [submission.jobs[r.name].job_id for r in (teacher, baseline)] == ["100_0", "100_1"]
    assert sorted(submission.jobs[s.name].job_id for s in students) == [f"101_{i}" for i in range(4)]
    assert all(json.loads((plan.run_dir(r) / "slurm-job.json").read_text())["job_id"] for r in plan.runs)

    task = submission.jobs[students[0].name].submission().function  # what the node will run
    assert isinstance(task, RunTask) and task.argv[:6] == (
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m")  # fmt: skip
    assert task.argv[-5:] == ("--out", str(plan.out), "--resume", "--device", "cuda")

    # Submitting again while SLURM still lists the jobs submits nothing.
    monkeypatch.setenv("FAKE_SQUEUE", "100_0 100_1 101_0 101_1 101_2 101_3")
    again = submit_suite(plan, options)
    assert again.jobs == {} and {p.status for p in again.runs} == {"running"} and len(list(fake_slurm.iterdir())) == 2
    # A student that left the queue unfinished is resubmitted, after the teacher job still in the queue.
    monkeypatch.setenv("FAKE_SQUEUE", "100_0 100_1 101_1 101_2 101_3")
    third = submit_suite(plan, options)
    assert list(third.jobs) == [students[0].name] and "after 100_0" in third.runs[1].note
    assert "#SBATCH --dependency=afterok:100_0" in (fake_slurm / "102.sh").read_text()

    console = Console(record=True, width=200)
    assert print_submission(third, console, "smoke") == 0
    assert "sddkd suite smoke --status" in console.export_text()


def test_a_teachers_train_suite_registers_its_teacher_on_the_node_where_the_store_has_none(
    tmp_path: Path, fake_slurm: Path, monkeypatch
):
    """As locally: the smoke suite's own teacher goes into the store when its job ends, unless the store has one by
    then (a teacher of the user's own is never replaced)."""
    plan = plan_suite(load_suite("smoke"), out=tmp_path / "logs", store=FakeStore())
    teacher = plan.runs[0]
    assert teacher.register_if_missing and not teacher.register_teacher
    submission = submit_suite(plan, SlurmOptions(gpus_per_run=0), store=FakeStore())
    task = submission.jobs[teacher.name].submission().function  # what the node will run
    best = plan.run_dir(teacher) / "checkpoints" / "best.pt"
    finish = (f"import json, pathlib; best = pathlib.Path({str(best)!r}); best.parent.mkdir(exist_ok=True); "
              f"best.write_bytes(b'w'); (best.parent.parent / 'result.json').write_text(json.dumps("
              "{'best_top1': 50.0}))")  # fmt: skip
    task = dataclasses.replace(task, argv=(sys.executable, "-c", finish))

    empty = FakeStore()
    monkeypatch.setattr(suite_slurm, "default_store", lambda: empty)
    assert task() == teacher.name
    assert empty.registered == [("synthetic", "resnet20", best, 50.0)]

    gained = FakeStore(stored=[("synthetic", "resnet20")])  # registered by someone else while the job ran
    monkeypatch.setattr(suite_slurm, "default_store", lambda: gained)
    best.unlink()
    assert task() == teacher.name and gained.registered == []


def test_a_refused_submission_fails_its_runs_and_blocks_their_students(tmp_path: Path, fake_slurm: Path, monkeypatch):
    monkeypatch.setenv("FAKE_REFUSE", "invalid partition specified: nogpu")
    plan = plan_suite(load_suite("smoke"), out=tmp_path / "logs")
    submission = submit_suite(plan, SlurmOptions(partition="nogpu"))
    assert submission.jobs == {} and [p.status for p in submission.runs] == ["failed", *["blocked"] * 4, "failed"]
    assert "sbatch refused the job: sbatch: error: invalid partition specified: nogpu" in submission.runs[0].note
    assert print_submission(submission, Console(record=True, width=200), "smoke") == 1


def test_requeue_stops_the_run_and_resubmits_the_same_task(tmp_path: Path):
    sleeper = RunTask("run", (sys.executable, "-c", "import time; time.sleep(60)"), str(tmp_path / "stdout.log"))
    errors: list[BaseException] = []

    def call() -> None:
        try:
            sleeper()
        except RuntimeError as exc:
            errors.append(exc)

    thread = threading.Thread(target=call)
    thread.start()
    deadline = time.monotonic() + 30
    while suite_slurm._child is None and time.monotonic() < deadline:
        time.sleep(0.05)
    delayed = sleeper.checkpoint()
    thread.join(timeout=30)
    assert isinstance(delayed, submitit.helpers.DelayedSubmission) and delayed.function == sleeper
    assert not thread.is_alive() and "failed with exit -15" in str(errors[0])


def test_slurm_options_are_checked():
    assert [slurm_minutes(t) for t in ("90", "5:30", "2:00:00", "1-0", "1-2:30", "0:0:30")] == [90, 6, 120, 1440,
                                                                                               1590, 1]  # fmt: skip
    for bad, message in [({"time": "2h"}, "not a SLURM time"), ({"gpus_per_run": -1}, "must be >= 0"),
                         ({"extra": ("qos",)}, "key=value"), ({"max_parallel": 0}, "at least 1")]:  # fmt: skip
        with pytest.raises(SuiteError, match=message):
            SlurmOptions(**bad)  # type: ignore[arg-type]


def test_slurm_backend_without_submitit_names_the_extra(monkeypatch, tmp_path: Path):
    monkeypatch.setitem(sys.modules, "submitit", None)  # `import submitit` now fails as if it were not installed
    result = runner.invoke(app, ["suite", "smoke", "--backend", "slurm", "--out", str(tmp_path)])
    assert result.exit_code == 2 and "pip install 'sddkd[slurm]'" in result.output
    assert not any(tmp_path.iterdir())
    wrong = runner.invoke(app, ["suite", "smoke", "--slurm-partition", "gpu", "--out", str(tmp_path)])
    assert wrong.exit_code == 2 and "apply to --backend slurm" in wrong.output


def test_status_of_runs_recorded_on_other_hosts(tmp_path: Path):
    (tmp_path / "two.yaml").write_text(TWO_RUNS)
    plan = plan_suite(load_suite(str(tmp_path / "two.yaml")), out=tmp_path / "logs")
    now = time.time()
    for run, updated in zip(plan.runs, (now - 60, now - 5 * 3600)):  # fresh, and stale (no update for 5 hours)
        plan.run_dir(run).mkdir(parents=True)
        record = {"config_hash": run.config_hash, "status": "running", "host": "gpu-node-7", "pid": 1,
                  "epochs_done": 1, "wall_seconds": 60.0, "updated": time.strftime("%Y-%m-%dT%H:%M:%SZ",
                                                                                  time.gmtime(updated))}  # fmt: skip
        (plan.run_dir(run) / "result.json").write_text(json.dumps(record))
    (plan.run_dir(plan.runs[0]) / "slurm-job.json").write_text(json.dumps({"job_id": "123_0"}))
    rows = status_rows(plan)
    assert [(r["state"], r["host"], r["slurm_job"]) for r in rows] == [
        ("running", "gpu-node-7", "123_0"), ("incomplete", "gpu-node-7", None)]  # fmt: skip
    result = runner.invoke(app, ["suite", str(tmp_path / "two.yaml"), "--status", "--out", str(plan.out), "--format",
                                 "json"])  # fmt: skip
    assert result.exit_code == 0 and json.loads(result.stdout) == rows
    console = Console(record=True, width=200)
    console.print(status_table(plan))
    text = console.export_text()
    assert "123_0" in text and "gpu-node-7" in text
