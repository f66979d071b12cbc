"""A resumed distillation run keeps its teacher: another file in its place is one line, before anything is
written, and the first teacher still resumes."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from typer.testing import CliRunner

from sddkd.cli import app

runner = CliRunner()
RUN = "synthetic-kd-res8-res8-s0"
TINY = [
    "-p", "synthetic/kd/res20_res8", "--set", "teacher.arch=resnet8", "--set", "data.synthetic.num_classes=2",
    "--set", "data.synthetic.train_per_class=8", "--set", "data.synthetic.test_per_class=2",
    "--batch-size", "4", "--epochs", "3", "--set", "engine.progress=false", "--set", "engine.amp=off",
    "--device", "cpu", "--name", RUN,
]  # fmt: skip


def _teacher(tmp_path: Path, name: str, seed: int) -> Path:
    """A resnet8 teacher file for 2 classes: random weights of the given seed (a teacher only has to load)."""
    from sddkd.models import create_model

    torch.manual_seed(seed)
    model = create_model("resnet8", num_classes=2, dataset="cifar100")
    path = tmp_path / name
    torch.save({"model": model.state_dict()}, path)
    return path


def test_resuming_with_another_teacher_is_one_line_and_the_first_one_resumes(tmp_path: Path):
    from sddkd.config import load_config
    from sddkd.engine.loop import train as engine_train

    first, other = _teacher(tmp_path, "a.pt", 0), _teacher(tmp_path, "b.pt", 1)
    overrides = [a for a in TINY if "=" in a] + ["optim.batch_size=4", "optim.epochs=3", "engine.device=cpu",
                                                 f"name={RUN}", f"teacher.checkpoint={first}"]  # fmt: skip
    engine_train(load_config("synthetic/kd/res20_res8", overrides=overrides), tmp_path / "logs", stop_after_epoch=1)
    run = tmp_path / "logs" / RUN
    before = (run / "result.json").read_text()

    result = runner.invoke(app, ["train", *TINY, "--teacher", str(other), "--out", str(tmp_path / "logs"), "--resume"])
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    (line,) = [ln for ln in result.output.splitlines() if ln.startswith("error:")]
    assert "was trained with teacher" in line and "--restart" in line, line
    assert (run / "result.json").read_text() == before  # refused before the directory was touched

    result = runner.invoke(app, ["train", *TINY, "--teacher", str(first), "--out", str(tmp_path / "logs"), "--resume"])
    assert result.exit_code == 0, result.output
    record = json.loads((run / "result.json").read_text())
    assert record["status"] == "finished" and record["epochs_done"] == 3
    assert Path(record["teacher_checkpoint"]["path"]) == first.resolve()
    assert record["teacher_checkpoint"]["dataset"] == "synthetic"  # not the cifar100 geometry of its model


def test_a_run_failed_before_its_first_epoch_is_reported_and_the_corrected_command_runs(tmp_path: Path):
    logs = tmp_path / "logs"
    failed = runner.invoke(app, ["train", *TINY, "--teacher", str(tmp_path / "typo.pt"), "--out", str(logs)])
    assert failed.exit_code == 2 and "does not exist" in failed.output, failed.output
    assert json.loads((logs / RUN / "result.json").read_text())["status"] == "failed"

    report = CliRunner(env={"COLUMNS": "200"}).invoke(app, ["report", str(logs), "--include-partial"])
    assert report.exit_code == 0, report.output
    assert RUN in report.stdout and "failed" in report.stdout and "skipping" not in report.output

    fixed = runner.invoke(app, ["train", *TINY, "--teacher", str(_teacher(tmp_path, "a.pt", 0)), "--out", str(logs)])
    assert fixed.exit_code == 0, fixed.output
    assert json.loads((logs / RUN / "result.json").read_text())["status"] == "finished"


def test_an_unfinished_run_names_both_ways_on(tmp_path: Path):
    from sddkd.config import load_config
    from sddkd.engine.loop import train as engine_train

    teacher = _teacher(tmp_path, "a.pt", 0)
    overrides = [a for a in TINY if "=" in a] + ["optim.batch_size=4", "optim.epochs=3", "engine.device=cpu",
                                                 f"name={RUN}", f"teacher.checkpoint={teacher}"]  # fmt: skip
    engine_train(load_config("synthetic/kd/res20_res8", overrides=overrides), tmp_path / "logs", stop_after_epoch=1)
    again = runner.invoke(app, ["train", *TINY, "--teacher", str(teacher), "--out", str(tmp_path / "logs")])
    assert again.exit_code == 2 and "--resume" in again.output and "--restart" in again.output, again.output


def test_scales_finer_than_the_feature_map_are_one_line(tmp_path: Path):
    args = [a.replace("synthetic/kd/res20_res8", "synthetic/sdd_kd_lskd/res20_res8") for a in TINY]
    teacher = str(_teacher(tmp_path, "a.pt", 0))
    result = runner.invoke(app, ["train", *args, "--teacher", teacher, "--M", "1,2,16", "--out", str(tmp_path)])
    assert result.exit_code == 2 and "Traceback" not in result.output, result.output
    (line,) = [ln for ln in result.output.splitlines() if ln.startswith("error:")]
    assert "asks for a 16x16 grid" in line and "8x8" in line and "up to 8" in line, line
    fits = runner.invoke(app, ["train", *args, "--teacher", teacher, "--M", "1,2,8", "--epochs", "1",
                               "--out", str(tmp_path / "fits")])  # fmt: skip
    assert fits.exit_code == 0, fits.output
