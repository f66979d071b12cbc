"""What a newcomer's mistakes get: one sentence that fits the mistake and advice that works (no advice to fetch
a teacher nobody publishes, no clipped torch paragraph, no blame for an option nobody passed)."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from sddkd.cli import app

runner = CliRunner()
REPO = Path(__file__).resolve().parents[1]
TINY = [
    "--set", "data.synthetic.num_classes=2", "--set", "data.synthetic.train_per_class=8",
    "--set", "data.synthetic.test_per_class=2", "--batch-size", "4", "--epochs", "1",
    "--set", "engine.progress=false", "--set", "engine.amp=off", "--device", "cpu",
]  # fmt: skip


def error_line(result, code: int = 2) -> str:
    assert result.exit_code == code, result.output
    assert "Traceback" not in result.output, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    lines = [ln for ln in result.output.splitlines() if ln.lower().startswith("error")]
    assert len(lines) == 1, result.output
    return lines[0]


@pytest.fixture(autouse=True)
def empty_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SDDKD_HOME", str(tmp_path / "home"))


def test_a_missing_synthetic_teacher_is_not_sent_to_fetch_teachers(tmp_path: Path):
    shown = runner.invoke(app, ["train", "-p", "synthetic/kd/res20_res8", "--dry-run", "--out", str(tmp_path)])
    assert shown.exit_code == 0, shown.output
    assert "fetch-teachers --dataset synthetic" not in shown.output and "sddkd suite smoke" in shown.output
    line = error_line(runner.invoke(app, ["train", "-p", "synthetic/kd/res20_res8", *TINY, "--out", str(tmp_path)]))
    assert "fetch-teachers" not in line and "sddkd suite smoke" in line and "teacher.checkpoint" in line, line


def test_fetchable_datasets_match_the_teacher_sources():
    from sddkd.datasets import PUBLISHED_DATASETS as FETCHABLE_DATASETS
    from sddkd.teachers.sources import SOURCES

    assert set(FETCHABLE_DATASETS) == set(SOURCES)


def test_eval_of_a_text_file_says_what_it_is_in_a_whole_sentence():
    line = error_line(runner.invoke(app, ["eval", "--checkpoint", str(REPO / "README.md")]))
    assert "not a PyTorch checkpoint of weights" in line and "Weights only load failed" not in line, line
    assert line.count("README.md") == 1, line


def test_eval_takes_a_run_directory(tmp_path: Path):
    trained = runner.invoke(app, ["train", "-p", "synthetic/vanilla/resnet8", *TINY, "--name", "r",
                                  "--out", str(tmp_path)])  # fmt: skip
    assert trained.exit_code == 0, trained.output
    result = runner.invoke(app, ["eval", "--checkpoint", str(tmp_path / "r"), "--device", "cpu"])
    assert result.exit_code == 0 and "top-1" in result.output.lower(), result.output
    empty = tmp_path / "empty"
    empty.mkdir()
    assert "folder without checkpoints/best.pt" in error_line(runner.invoke(app, ["eval", "--checkpoint", str(empty)]))


def test_a_teacher_that_is_not_a_file_is_named_as_such(tmp_path: Path):
    args = ["train", "-p", "synthetic/kd/res20_res8", *TINY, "--out", str(tmp_path)]
    line = error_line(runner.invoke(app, [*args, "--teacher", "/dev/null"]))
    assert "/dev/null is not a regular file" in line and "does not exist" not in line, line
    line = error_line(runner.invoke(app, [*args, "--teacher", str(tmp_path)]))
    assert "is a folder" in line, line


def test_report_of_a_file_blames_the_argument_given():
    line = error_line(runner.invoke(app, ["report", str(REPO / "README.md")]))
    assert "README.md is a file, not a folder of runs" in line and "--out README.md" not in line, line


def test_a_yaml_error_is_one_readable_sentence(tmp_path: Path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("optim:\n  lr: [1, 2\n  epochs: 3\n")
    line = error_line(runner.invoke(app, ["train", "-p", str(bad)]))
    assert "line 3, column 9: expected ',' or ']', but got ':'" in line and "<unicode string>" not in line, line
    bad.write_text("optim:\n\tlr: 1\n")
    line = error_line(runner.invoke(app, ["train", "-p", str(bad)]))
    assert "line 2, column 1" in line and "spaces, not tabs" in line, line


def test_config_show_with_a_home_that_is_a_file_is_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    (tmp_path / "home-file").write_text("")
    monkeypatch.setenv("SDDKD_HOME", str(tmp_path / "home-file"))
    line = error_line(runner.invoke(app, ["config", "show", "res32x4_res8x4", "--out", str(tmp_path / "logs")]))
    assert "SDDKD_HOME" in line, line


def test_report_into_a_folder_that_refuses_writes_is_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    from sddkd.files import NotWritableError
    from sddkd.report import render
    from tests.report.test_report import write_run

    write_run(tmp_path / "logs", "a")

    def refuse(path: Path, data: bytes) -> Path:
        raise NotWritableError(f"cannot write {path}: read-only file system")

    monkeypatch.setattr(render, "write_bytes_atomic", refuse)
    line = error_line(runner.invoke(app, ["report", str(tmp_path / "logs"), "--out", str(tmp_path / "out")]))
    assert "read-only" in line, line
