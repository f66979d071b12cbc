"""A run directory is a transaction: real `python -m sddkd train` processes ended hard at named points (the
SDDKD_FAULT hook, `os._exit`), signalled, or racing each other; each time `--resume` must give the uninterrupted
run's weights, optimizer and RNG state, metrics lines and record exactly (timings, pids and timestamps aside)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from sddkd.engine.checkpoint import load_checkpoint
from sddkd.engine.faults import FAULT_EXIT
from sddkd.rundir.lock import LOCKED_EXIT, acquire_run_lock

REPO = Path(__file__).resolve().parents[2]
# 16 images of 2 classes, batches of 4: 4 steps an epoch, 3 epochs, fp32; a process is mostly its imports.
TINY = [
    "-p", "synthetic/vanilla/resnet8", "--set", "data.synthetic.num_classes=2",
    "--set", "data.synthetic.train_per_class=8", "--set", "data.synthetic.test_per_class=2",
    "--batch-size", "4", "--epochs", "3", "--set", "optim.lr_decay_epochs=[2]", "--set", "engine.progress=false",
    "--set", "engine.amp=off", "--device", "cpu",
    "--name", "synthetic-vanilla-resnet8-s0",  # fixed: the overrides would otherwise add a suffix to the name
]  # fmt: skip
RUN = "synthetic-vanilla-resnet8-s0"
TIMINGS = ("seconds", "images_per_s")
PROCESS = ("wall_seconds", "pid", "host", "updated")


def env(fault: str | None = None) -> dict[str, str]:
    variables = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    variables.pop("SDDKD_FAULT", None)
    return {**variables, "SDDKD_FAULT": fault} if fault else variables


def train(out: Path, *extra: str, fault: str | None = None) -> subprocess.CompletedProcess[str]:
    argv = [sys.executable, "-m", "sddkd", "train", *TINY, "--out", str(out), *extra]
    return subprocess.run(argv, env=env(fault), capture_output=True, text=True, timeout=600)


def outcome(run_dir: Path) -> dict:
    """What must equal the uninterrupted run: final weights, optimizer, RNG, metrics lines, record, best.pt."""
    last = load_checkpoint(run_dir / "checkpoints" / "last.pt", verify=True)
    best = load_checkpoint(run_dir / "checkpoints" / "best.pt", verify=True)
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    record = json.loads((run_dir / "result.json").read_text())
    leftovers = sorted(p.name for p in run_dir.rglob(".*.tmp"))
    return {
        "weights": last["model"], "optimizer": last["optimizer"], "rng": last["rng"], "epoch": last["epoch"],
        "global_step": last["global_step"], "best": (best["epoch"], best["model"]),
        "rows": [{k: v for k, v in row.items() if k not in TIMINGS} for row in rows],
        "record": {k: v for k, v in record.items() if k not in PROCESS}, "temporary files": leftovers,
    }  # fmt: skip


def assert_same(a: object, b: object, where: str = "") -> None:
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b), where
    elif isinstance(a, dict):
        assert isinstance(b, dict) and a.keys() == b.keys(), f"{where}: {sorted(map(str, a))} != {sorted(map(str, b))}"
        for key in a:
            assert_same(a[key], b[key], f"{where}/{key}")
    elif isinstance(a, (list, tuple)):
        assert isinstance(b, type(a)) and len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            assert_same(x, y, f"{where}/{i}")
    else:
        assert a == b, f"{where}: {a!r} != {b!r}"


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory: pytest.TempPathFactory) -> dict:
    out = tmp_path_factory.mktemp("uninterrupted")
    done = train(out)
    assert done.returncode == 0, done.stderr
    return outcome(out / RUN)


@pytest.mark.parametrize(
    "fault",
    ["after-metrics:2", "before-rename:2", "after-rename:1", "before-final-record:1", "mid-epoch:6"],
)
def test_a_hard_end_at_any_point_resumes_to_the_uninterrupted_run(fault: str, uninterrupted: dict, tmp_path: Path):
    ended = train(tmp_path, fault=fault)
    assert ended.returncode == FAULT_EXIT, ended.stderr
    for _ in range(2):  # "once or twice": a resume must never need more
        resumed = train(tmp_path, "--resume")
        if resumed.returncode == 0:
            break
    assert resumed.returncode == 0, resumed.stderr
    assert_same(outcome(tmp_path / RUN), uninterrupted, fault)


def test_sigterm_stops_at_a_step_with_a_checkpoint_and_resumes_bit_for_bit(uninterrupted: dict, tmp_path: Path):
    stopped = train(tmp_path, fault="sigterm:6")  # a real SIGTERM at step 6: epoch 2, after its second step
    assert stopped.returncode == 143, stopped.stderr
    said = stopped.stderr.strip().splitlines()[-1]
    assert "interrupted" in said and f"--out {tmp_path} --resume" in said, said
    record = json.loads((tmp_path / RUN / "result.json").read_text())
    assert record["status"] == "interrupted" and record["epochs_done"] == 1
    partial = load_checkpoint(tmp_path / RUN / "checkpoints" / "last.pt", verify=True)["partial"]
    assert (partial["epoch"], partial["steps"]) == (2, 2)
    resumed = train(tmp_path, "--resume")
    assert resumed.returncode == 0, resumed.stderr
    assert "Resuming synthetic-vanilla-resnet8-s0 at epoch 2 (step 2 of 4)" in resumed.stderr
    assert_same(outcome(tmp_path / RUN), uninterrupted, "sigterm")


def test_a_second_process_on_a_run_is_refused_naming_the_holder(tmp_path: Path):
    lock = acquire_run_lock(tmp_path / RUN)  # this test process owns the run, as a `sddkd train` would
    try:
        refused = train(tmp_path)
    finally:
        lock.release()
    assert refused.returncode == LOCKED_EXIT
    lines = refused.stderr.strip().splitlines()
    assert len(lines) == 1 and f"process {os.getpid()} on {os.uname().nodename}" in lines[0], refused.stderr
    assert sorted(p.name for p in (tmp_path / RUN).iterdir()) == ["lock"]  # nothing written by the refused one


def test_two_suites_on_one_out_never_train_a_run_twice(tmp_path: Path):
    suite = tmp_path / "tiny.yaml"
    settings = [a for a in TINY[2:] if a != "--set"]
    overrides = [s for s in settings if "=" in s] + ["optim.batch_size=4", "optim.epochs=2"]
    listed = "".join(f"  - '{o}'\n" for o in overrides)
    suite.write_text(f"set:\n{listed}seeds: [0, 1]\nruns:\n  - presets: synthetic/vanilla/resnet8\n")
    argv = [sys.executable, "-m", "sddkd", "suite", str(suite), "--out", str(tmp_path / "runs"), "--devices", "cpu"]
    suites = [subprocess.Popen(argv, env=env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
              for _ in range(2)]  # fmt: skip
    outputs = [p.communicate(timeout=600)[0] for p in suites]
    for seed in (0, 1):
        # The suite's overrides shrink the preset, so each name carries a suffix after its seed.
        (run_dir,) = (tmp_path / "runs").glob(f"synthetic-vanilla-resnet8-s{seed}[+-]*")
        rows = [json.loads(line)["epoch"] for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
        assert rows == [1, 2], outputs
        log = (run_dir / "stdout.log").read_text()
        assert log.count("epoch 1/2") == 1, log  # trained by one suite's child only
        assert json.loads((run_dir / "result.json").read_text())["status"] == "finished"
    assert all(p.returncode == 0 for p in suites), outputs
