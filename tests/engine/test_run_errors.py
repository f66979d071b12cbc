"""Every error a user can cause or meet around a run directory is one line and a non-zero exit (damaged or foreign
checkpoints, a full disk, a bad --out, unknown architectures, a held lock), and what is left resumes; plus the
checkpoint-is-the-truth rules (fresh starts, leftovers, best.pt) and the non-finite limits."""

from __future__ import annotations

import errno
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from sddkd import files
from sddkd.cli import app
from sddkd.engine.checkpoint import CHECKSUM_KEY, load_checkpoint
from sddkd.rundir.lock import LOCKED_EXIT, acquire_run_lock
from sddkd.rundir.state import read_run_state

runner = CliRunner()
TINY = [
    "-p", "synthetic/vanilla/resnet8", "--set", "data.synthetic.num_classes=2",
    "--set", "data.synthetic.train_per_class=8", "--set", "data.synthetic.test_per_class=2",
    "--batch-size", "4", "--epochs", "3", "--set", "engine.progress=false", "--set", "engine.amp=off",
    "--device", "cpu",
    "--name", "synthetic-vanilla-resnet8-s0",  # fixed: the overrides would otherwise add a suffix to the name
]  # fmt: skip
RUN = "synthetic-vanilla-resnet8-s0"


def train(out: Path, *extra: str):
    return runner.invoke(app, ["train", *TINY, "--out", str(out), *extra])


def one_error_line(result, code: int = 2) -> str:
    assert result.exit_code == code, result.output
    assert "Traceback" not in result.output and result.output.count("error:") == 1, result.output
    (line,) = [ln for ln in result.output.splitlines() if ln.startswith("error:")]
    return line


def rows(run_dir: Path) -> list[int]:
    return [json.loads(line)["epoch"] for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def weights(run_dir: Path) -> dict:
    return load_checkpoint(run_dir / "checkpoints" / "last.pt")["model"]


def same_weights(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("reference")
    assert train(out).exit_code == 0
    return out / RUN


@pytest.fixture
def stopped(tmp_path: Path) -> Path:
    """A run killed after epoch 1 (its checkpoint and record as a dead process leaves them)."""
    from sddkd.config import load_config
    from sddkd.engine.loop import train as engine_train

    overrides = [a for a in TINY if "=" in a] + ["optim.batch_size=4", "optim.epochs=3"]
    cfg = load_config("synthetic/vanilla/resnet8", overrides=overrides + ["engine.device=cpu", f"name={RUN}"])
    engine_train(cfg, tmp_path, stop_after_epoch=1)
    return tmp_path / RUN


# --- damaged and foreign files ------------------------------------------------------------------------------------


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _flip_16_bytes(path: Path) -> None:
    data = bytearray(path.read_bytes())
    middle = len(data) // 2
    data[middle : middle + 16] = bytes(b ^ 0x5A for b in data[middle : middle + 16])
    path.write_bytes(bytes(data))


@pytest.mark.parametrize(
    "damage, said",
    [
        (_truncate, "cannot be read"),
        (lambda p: p.write_bytes(b""), "cannot be read"),
        (_flip_16_bytes, "cannot be read|is damaged"),
        (lambda p: p.write_text("not a checkpoint\n"), "cannot be read"),
        (lambda p: torch.save({"model": {}}, p), "carries no checksum"),
    ],
    ids=["truncated", "empty", "16-flipped-bytes", "text", "foreign-dict"],
)
def test_a_damaged_checkpoint_is_one_line_naming_the_way_out(damage, said, stopped: Path, reference: Path):
    import re

    damage(stopped / "checkpoints" / "last.pt")
    line = one_error_line(train(stopped.parent, "--resume"))
    assert re.search(said, line) and "--restart" in line and "best.pt" in line, line
    record = json.loads((stopped / "result.json").read_text())
    assert record["status"] == "failed" and re.search(said, record["error"])  # report and --status show it
    assert train(stopped.parent, "--restart").exit_code == 0
    assert rows(stopped) == [1, 2, 3] and same_weights(weights(stopped), weights(reference))


def test_flipped_tensor_bytes_fail_the_checksum(stopped: Path):
    path = stopped / "checkpoints" / "last.pt"
    state = torch.load(path, weights_only=True)
    key = next(k for k in state["model"] if "running_var" in k)
    state["model"][key][0] = -8.7  # what 16 flipped bytes did to a BatchNorm before checksums
    torch.save(state, path)  # a valid zip with the old checksum: only the content check can see it
    line = one_error_line(train(stopped.parent, "--resume"))
    assert "is damaged (its content does not match its sha256 checksum)" in line


def test_a_foreign_checkpoint_is_refused_even_without_a_record(stopped: Path):
    (stopped / "result.json").unlink()  # the record gone: the hash in the checkpoint itself decides
    line = one_error_line(train(stopped.parent, "--resume", "--lr", "0.02"))
    assert "belongs to another recipe" in line and str(stopped) not in line.split("belongs")[1]


def test_torn_metrics_and_unreadable_record_are_rebuilt_from_the_checkpoint(stopped: Path, reference: Path):
    with (stopped / "metrics.jsonl").open("a") as handle:
        handle.write('{"epoch": 2, "lo')  # killed mid-line
    (stopped / "result.json").write_text("{not json")
    assert train(stopped.parent, "--resume").exit_code == 0
    assert rows(stopped) == [1, 2, 3] and same_weights(weights(stopped), weights(reference))


def test_a_fresh_start_clears_what_an_earlier_attempt_left(tmp_path: Path, reference: Path):
    run_dir = tmp_path / RUN
    (run_dir / "checkpoints").mkdir(parents=True)
    shutil.copy(reference / "metrics.jsonl", run_dir / "metrics.jsonl")  # epoch lines without any checkpoint
    record = json.loads((reference / "result.json").read_text())
    (run_dir / "result.json").write_text(json.dumps({**record, "status": "running", "pid": 999999}))
    stale = run_dir / "checkpoints" / ".last.pt.12345.0123abcd.tmp"  # a killed write's temporary file
    stale.write_bytes(b"x" * 1000)
    assert train(tmp_path, "--resume").exit_code == 0
    assert rows(run_dir) == [1, 2, 3] and not stale.exists()  # not 1,2,3,1,2,3


def test_best_pt_is_repaired_from_last_pt_after_a_crash_between_them(stopped: Path, reference: Path):
    last = load_checkpoint(stopped / "checkpoints" / "last.pt")
    assert last["record"]["best_epoch"] == 1
    (stopped / "checkpoints" / "best.pt").unlink()  # killed after last.pt's rename, before best.pt's
    assert train(stopped.parent, "--resume").exit_code == 0
    best, expected = (load_checkpoint(d / "checkpoints" / "best.pt", verify=True) for d in (stopped, reference))
    assert best["epoch"] == expected["epoch"] and same_weights(best["model"], expected["model"])


def test_checkpoints_load_to_the_cpu_whatever_the_device(stopped: Path, monkeypatch: pytest.MonkeyPatch):
    """On an accelerator, loading a resume checkpoint onto the device put the RNG states there too, where
    torch.set_rng_state refuses them. This machine trains on the CPU, so an accelerator is stood in for: any
    map_location but an explicit "cpu" lands on the meta device, as it would land on cuda:0."""
    real_load = torch.load
    asked = []

    def load(path, *args, map_location=None, **kwargs):
        asked.append(map_location)
        where = "cpu" if isinstance(map_location, str) and map_location == "cpu" else "meta"
        return real_load(path, *args, map_location=where, **kwargs)

    monkeypatch.setattr(torch, "load", load)
    result = train(stopped.parent, "--resume")
    assert result.exit_code == 0, result.output
    assert asked and all(m == "cpu" for m in asked)


# --- full disk --------------------------------------------------------------------------------------------------


def test_a_full_disk_is_one_line_with_path_and_space_and_the_run_resumes(
    tmp_path: Path, reference: Path, monkeypatch: pytest.MonkeyPatch
):
    real_write = files._RecordingWriter.write
    writers: list[int] = []

    def write_after_first(self, data):
        if ".last.pt." in self.path.name:
            if id(self) not in writers:
                writers.append(id(self))
            if len(writers) > 1:  # the second epoch's last.pt finds the disk full
                raise OSError(errno.ENOSPC, "No space left on device")
        return real_write(self, data)

    monkeypatch.setattr(files._RecordingWriter, "write", write_after_first)
    line = one_error_line(train(tmp_path))
    assert "no space left on the device of" in line and "last.pt" in line and "needs about" in line, line
    assert not list((tmp_path / RUN).rglob(".*.tmp"))  # no half-written temporary file left
    monkeypatch.setattr(files._RecordingWriter, "write", real_write)
    assert train(tmp_path, "--resume").exit_code == 0
    assert rows(tmp_path / RUN) == [1, 2, 3] and same_weights(weights(tmp_path / RUN), weights(reference))


@pytest.mark.parametrize("code", [errno.EROFS, errno.EACCES])
def test_a_run_folder_turned_read_only_mid_run_is_one_line_and_the_run_resumes(
    tmp_path: Path, reference: Path, monkeypatch: pytest.MonkeyPatch, code: int
):
    real_open, opened = Path.open, []

    def refuse_second_epoch(self, *args, **kwargs):  # the folder turns read-only after the first metrics line
        if self.name == "metrics.jsonl" and args[:1] == ("a",):
            opened.append(self)
            if len(opened) > 1:
                raise OSError(code, os.strerror(code), str(self))
        return real_open(self, *args, **kwargs)

    monkeypatch.setattr(Path, "open", refuse_second_epoch)
    line = one_error_line(train(tmp_path))
    assert "cannot write" in line and "metrics.jsonl" in line and "--resume" in line, line
    monkeypatch.setattr(Path, "open", real_open)
    assert train(tmp_path, "--resume").exit_code == 0
    assert rows(tmp_path / RUN) == [1, 2, 3] and same_weights(weights(tmp_path / RUN), weights(reference))


def _mount_tmpfs(path: Path, size: str) -> bool:
    if os.geteuid() != 0 or shutil.which("mount") is None:
        return False
    path.mkdir(exist_ok=True)
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True)
    return done.returncode == 0


def test_a_really_full_tmpfs_gives_the_same_line(tmp_path: Path, reference: Path):
    disk = tmp_path / "disk"
    if not _mount_tmpfs(disk, "1200k"):
        pytest.skip("mounting a small tmpfs needs root and mount(8); the monkeypatched test covers the logic")
    try:
        line = one_error_line(train(disk))  # last.pt ~650 KB + best.pt ~330 KB: the second last.pt does not fit
        assert "no space left on the device of" in line and "needs about" in line, line
        subprocess.run(["mount", "-o", "remount,size=8m", str(disk)], check=True)
        assert train(disk, "--resume").exit_code == 0
        assert rows(disk / RUN) == [1, 2, 3] and same_weights(weights(disk / RUN), weights(reference))
    finally:
        subprocess.run(["umount", str(disk)], capture_output=True)


# --- bad --out, architectures, lock -------------------------------------------------------------------------------


def test_an_out_that_is_a_file_is_one_line(tmp_path: Path):
    (tmp_path / "file").write_text("")
    assert "choose another --out" in one_error_line(train(tmp_path / "file"))


def test_an_unwritable_out_is_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    real_open = os.open

    def refuse(path, *args, **kwargs):  # what a read-only directory does to a non-root user
        if str(path).startswith(str(tmp_path / "ro")):
            raise PermissionError(errno.EACCES, "Permission denied", str(path))
        return real_open(path, *args, **kwargs)

    (tmp_path / "ro" / RUN).mkdir(parents=True)
    monkeypatch.setattr(os, "open", refuse)
    assert "no permission to write in" in one_error_line(train(tmp_path / "ro"))


def test_an_unknown_architecture_in_a_yaml_names_close_matches(tmp_path: Path):
    from sddkd.config import resolve_preset

    preset = tmp_path / "mine.yaml"
    preset.write_text(resolve_preset("synthetic/vanilla/resnet8").read_text().replace("resnet8", "resnet88"))
    result = runner.invoke(app, ["train", "-p", str(preset), "--device", "cpu", "--out", str(tmp_path / "logs")])
    line = one_error_line(result)
    assert "unknown architecture 'resnet88' for student; did you mean" in line and "resnet8" in line
    assert not (tmp_path / "logs").exists()


def test_an_architecture_of_another_geometry_on_synthetic_data_is_refused_before_any_work(tmp_path: Path):
    # 32 px synthetic data is built with the CIFAR nets; an ImageNet-only net failed deep inside create_model
    args = ["train", "-p", "synthetic/vanilla/resnet8", "--set", "student=resnet18", "--device", "cpu",
            "--out", str(tmp_path / "logs")]  # fmt: skip
    line = one_error_line(runner.invoke(app, args))
    assert "architecture 'resnet18' (student) is not available for synthetic data (cifar100 geometry)" in line
    assert "did you mean ResNet18" in line and not (tmp_path / "logs").exists()


def test_a_held_run_is_refused_in_one_line_and_the_suite_sees_it_running(tmp_path: Path):
    lock = acquire_run_lock(tmp_path / RUN)
    try:
        line = one_error_line(train(tmp_path), code=LOCKED_EXIT)
        assert f"is being trained by process {os.getpid()}" in line
        state = read_run_state(tmp_path / RUN, "whatever")
        assert state.state == "running" and f"process {os.getpid()}" in state.record["holder"]
    finally:
        lock.release()
    assert read_run_state(tmp_path / RUN, "whatever").state == "new"


# --- non-finite ---------------------------------------------------------------------------------------------------


def test_skipping_most_steps_fails_the_run_naming_the_cause(tmp_path: Path):
    exploding = ["--lr", "1e30", "--set", "optim.momentum=0", "--set", "engine.nonfinite=skip"]
    line = one_error_line(train(tmp_path, *exploding))
    assert "had a non-finite loss and were skipped, more than engine.nonfinite_skip_limit=0.1" in line
    assert json.loads((tmp_path / RUN / "result.json").read_text())["status"] == "failed"


def test_a_teacher_with_nonfinite_logits_is_refused_before_training(tmp_path: Path, reference: Path):
    teacher = tmp_path / "teacher.pt"
    state = load_checkpoint(reference / "checkpoints" / "best.pt")
    state.pop(CHECKSUM_KEY)
    state["model"] = {k: v.float().fill_(float("nan")) if v.is_floating_point() else v
                      for k, v in state["model"].items()}  # fmt: skip
    torch.save(state, teacher)
    args = [a.replace("synthetic/vanilla/resnet8", "synthetic/kd/res20_res8") for a in TINY]
    args += ["--set", "teacher.arch=resnet8", "--teacher", str(teacher), "--set", "engine.nonfinite=skip"]
    result = runner.invoke(app, ["train", *args, "--out", str(tmp_path / "logs")])
    line = one_error_line(result)
    assert "the teacher's logits are not finite" in line, line
    (record,) = (json.loads(p.read_text()) for p in (tmp_path / "logs").glob("*/result.json"))
    assert record["status"] == "failed" and "not finite" in record["error"] and record["epochs_done"] == 0


def test_report_lists_an_interrupted_run_as_incomplete(stopped: Path):
    from sddkd.report.records import load_runs

    record = json.loads((stopped / "result.json").read_text())
    (stopped / "result.json").write_text(json.dumps({**record, "status": "interrupted", "error": "stopped by SIGTERM"}))
    runs, warnings = load_runs(stopped.parent)
    assert not warnings and [run.state for run in runs] == ["incomplete"]
