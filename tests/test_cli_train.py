"""`sddkd train` and `sddkd eval` through the CLI: bad input fails in one line before any work; a tiny run works."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from sddkd.cli import app

runner = CliRunner()
TINY = ["--set", "data.synthetic.num_classes=4", "--set", "data.synthetic.train_per_class=16",
        "--set", "data.synthetic.test_per_class=4", "--set", "engine.progress=false"]  # fmt: skip


def invoke(*args: str):
    return runner.invoke(app, list(args))


@pytest.mark.parametrize(
    "args, message",
    [
        (["--preset", "res32x4_res8x4", "--set", "optim.lrr=0.1"], "unknown key 'optim.lrr'"),
        (["--preset", "res32x4_res8x4", "--set", "optim.epochs=many"], "optim.epochs: Input should be a valid integer"),
        (["--preset", "res32x4_res8x4", "--set", "method.name=magic"], "unknown method 'magic'"),
        (["--preset", "res32x4_res8x4", "--M", "2,4"], "M must be distinct positive integers"),
        (["--preset", "res32x4_res8x5"], "unknown preset 'res32x4_res8x5'; did you mean res32x4_res8x4"),
        (["--preset", "res32x4_res8x4", "--device", "tpu"], "device must be auto, cpu, cuda or cuda:N"),
    ],
)
def test_bad_input_is_one_line_and_nothing_is_written(args, message, tmp_path: Path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    device = [] if "--device" in args else ["--device", "cpu"]
    result = invoke("train", *args, *device, "--out", str(tmp_path / "logs"))
    assert result.exit_code == 2, result.output
    assert message in result.output
    assert result.output.count("error:") == 1 and "Traceback" not in result.output
    assert not (tmp_path / "logs").exists()


def test_missing_cifar_names_the_prepare_command(tmp_path: Path):
    result = invoke("train", "--preset", "res32x4_res8x4", "--data-root", str(tmp_path), "--device", "cpu",
                    "--out", str(tmp_path / "logs"))  # fmt: skip
    assert result.exit_code == 2 and "sddkd prepare-data cifar100" in result.output
    assert result.output.count("error:") == 1 and "Traceback" not in result.output
    # the failure is in the run's record (report, suite --status), written before anything could fail
    (record,) = (json.loads(p.read_text()) for p in (tmp_path / "logs").glob("*/result.json"))
    assert record["status"] == "failed" and "prepare-data cifar100" in record["error"]


def test_list_shows_presets():
    result = invoke("train", "--list")
    assert result.exit_code == 0
    assert "cifar100/sdd_kd_lskd/res32x4_res8x4" in result.output.split()


def test_a_tiny_run_then_eval_with_region_scales(tmp_path: Path):
    out = tmp_path / "logs"
    teacher = invoke("train", "--preset", "synthetic/vanilla/resnet8", "--max-steps", "2", "--out", str(out), *TINY)
    assert teacher.exit_code == 0, teacher.output
    # --max-steps marks the run partial, and TINY's overrides are named by their hash (too many to list)
    (teacher_dir,) = out.glob("synthetic-vanilla-resnet8-s0+3changes-*-partial-2steps")
    teacher_ckpt = teacher_dir / "checkpoints" / "best.pt"
    student = invoke(
        "train", "--preset", "synthetic/sdd_kd_lskd/res20_res8", "--set", "teacher.arch=resnet8",
        "--teacher", str(teacher_ckpt), "--M", "[1, 2]", "--max-steps", "2", "--out", str(out), *TINY,
    )  # fmt: skip
    assert student.exit_code == 0, student.output
    (run_dir,) = out.glob("synthetic-sdd_kd_lskd-resnet8_resnet8-M1-2-s0+*-partial-2steps")
    assert (run_dir / "result.json").is_file() and "best top-1" in student.output
    evaluated = invoke("eval", "--checkpoint", str(run_dir / "checkpoints" / "best.pt"), "--device", "cpu")
    assert evaluated.exit_code == 0, evaluated.output
    assert "top-1" in evaluated.output and "scale 2x2" in evaluated.output
    again = invoke(
        "train", "--preset", "synthetic/sdd_kd_lskd/res20_res8", "--set", "teacher.arch=resnet8",
        "--teacher", str(teacher_ckpt), "--M", "1,2", "--max-steps", "2", "--out", str(out), *TINY,
    )  # fmt: skip
    assert again.exit_code == 0 and "already finished" in again.output


def test_eval_of_a_missing_checkpoint_is_one_line(tmp_path: Path):
    result = invoke("eval", "--checkpoint", str(tmp_path / "nope.pt"))
    assert result.exit_code == 2 and "does not exist" in result.output


def test_help_starts_without_torch():
    code = "import sys; from sddkd.cli import app; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_bracketed_help_text_is_escaped_so_rich_keeps_it():
    """Rich reads `[default: x]` in a help string as a markup tag and drops it from `--help`; `\\[` keeps it."""
    import re

    import typer.main

    group = typer.main.get_command(app)
    unescaped = [
        f"sddkd {name} {param.name}: {param.help}"
        for name, command in group.commands.items()  # type: ignore[attr-defined]
        for param in command.params
        if re.search(r"(?<!\\)\[", getattr(param, "help", None) or "")
    ]
    assert not unescaped, unescaped
    wide = runner.invoke(app, ["train", "--help"], env={"COLUMNS": "300"})
    assert "put the data [default: $SDDKD_DATA, else data]." in wide.output
