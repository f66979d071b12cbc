"""`sddkd analyze` through the CLI on tiny synthetic runs, and `sddkd report --analysis`.

The run directories are written directly (a checkpoint of a freshly initialised resnet8 plus its result.json), so
no test trains: the student is given exactly its teacher's weights, which fixes the answer of every number.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from sddkd.cli import app
from sddkd.config import RunConfig, config_hash, load_config
from sddkd.download import file_digest
from sddkd.engine.checkpoint import save_checkpoint
from sddkd.files import write_json_atomic
from sddkd.models import create_model
from sddkd.report.analysis_files import ANALYSIS_JSON, FIGURES
from sddkd.rundir.naming import run_name

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def tiny_data(classes: int = 4) -> list[str]:
    return [f"data.synthetic.num_classes={classes}", "data.synthetic.train_per_class=2",
            "data.synthetic.test_per_class=6", "engine.progress=false"]  # fmt: skip


def weights(seed: int, classes: int = 4) -> dict[str, torch.Tensor]:
    torch.manual_seed(seed)
    return create_model("resnet8", num_classes=classes, dataset="cifar100").state_dict()


def write_run(root: Path, cfg: RunConfig, state_dict: dict[str, torch.Tensor], **record: object) -> Path:
    """A finished run directory as `sddkd train` leaves it: checkpoints/best.pt and result.json."""
    run_dir = root / run_name(cfg)
    save_checkpoint(run_dir / "checkpoints" / "best.pt", {
        "model": state_dict, "epoch": 1, "accuracy": 0.0, "config": cfg.model_dump(mode="json"),
        "config_hash": config_hash(cfg),
    })  # fmt: skip
    method = cfg.method.name
    write_json_atomic(run_dir / "result.json", {
        "run_name": run_dir.name, "config_hash": config_hash(cfg), "status": "finished", "dataset": cfg.data.name,
        "method": method, "teacher": cfg.teacher.arch if cfg.teacher else None, "student": cfg.student,
        "scales": list(cfg.scales) if method != "vanilla" else None, "seed": cfg.seed, "epochs": 1,
        "epochs_done": 1, "best_top1": 0.0, "best_top5": 0.0, "best_epoch": 1, "last_top1": 0.0, "last_top5": 0.0,
        "wall_seconds": 1.0, "updated": "2026-01-01T00:00:00Z", "pid": None, "host": "h", "error": None, **record,
    })  # fmt: skip
    return run_dir


def teacher_run(root: Path, seed: int = 0, classes: int = 4) -> Path:
    cfg = load_config("synthetic/vanilla/resnet8", overrides=tiny_data(classes))
    return write_run(root, cfg, weights(seed, classes))


def student_run(root: Path, teacher: Path | None, state: dict[str, torch.Tensor], record_teacher: bool = True) -> Path:
    overrides = [*tiny_data(), "teacher.arch=resnet8"] + ([f"teacher.checkpoint={teacher}"] if teacher else [])
    cfg = load_config("synthetic/sdd_kd_lskd/res20_res8", scales="1,2", overrides=overrides)
    record = {}
    if teacher is not None and record_teacher:
        record["teacher_checkpoint"] = {"path": str(teacher), "sha256": file_digest(teacher), "arch": "resnet8"}
    return write_run(root, cfg, state, **record)


@pytest.fixture(autouse=True)
def empty_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SDDKD_HOME", str(tmp_path / "home"))


def analyze(*args: str) -> tuple[int, list[str]]:
    result = CliRunner().invoke(app, ["analyze", "--device", "cpu", "--embedding", "pca", *args])
    return result.exit_code, [line for line in result.output.splitlines() if line.strip()]


@pytest.fixture(scope="module")
def analysed(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A student identical to its teacher, analysed with a vanilla baseline (other weights)."""
    root = tmp_path_factory.mktemp("runs")
    teacher = teacher_run(root / "teachers") / "checkpoints" / "best.pt"
    student = student_run(root, teacher, weights(0))
    baseline = write_run(root, load_config("synthetic/vanilla/resnet8", overrides=tiny_data()), weights(1))
    result = CliRunner().invoke(app, ["analyze", "--checkpoint", str(student), "--baseline", str(baseline),
                                      "--device", "cpu", "--embedding", "pca"])  # fmt: skip
    assert result.exit_code == 0, result.output
    return {"root": root, "student": student, "baseline": baseline}


def test_every_figure_and_the_json_are_written(analysed: dict[str, Path]):
    from matplotlib import image

    folder = analysed["student"] / "analysis"
    for name in FIGURES.values():
        png = folder / name
        assert png.read_bytes().startswith(PNG_SIGNATURE), name
        height, width = image.imread(png).shape[:2]
        assert width in (1050, 2100), f"{name} is {width} px wide: 3.5 or 7 in at 300 dpi"
        assert 300 < height < 2100
    numbers = json.loads((folder / ANALYSIS_JSON).read_text())
    assert numbers["inputs"]["test_samples"] == 24 and numbers["inputs"]["scales"] == [1, 2]
    # a synthetic run's files say synthetic, not the CIFAR-100 geometry its models share
    for role in ("student", "teacher", "baseline"):
        assert numbers["inputs"][role]["dataset"] == "synthetic", role
        assert numbers["inputs"][role]["published_top1"] is None, role
    assert not [p.name for p in folder.iterdir() if p.name.startswith(".")], "no temporary file left behind"


def test_a_student_identical_to_its_teacher(analysed: dict[str, Path]):
    numbers = json.loads((analysed["student"] / "analysis" / ANALYSIS_JSON).read_text())
    assert numbers["agreement"]["top1"] == 1.0
    for scale in ("1", "2"):
        entry = numbers["agreement"]["per_scale"][scale]
        assert entry["agreement"] == 1.0
        assert entry["kl"] == pytest.approx(0.0, abs=1e-9) and entry["kl_standardized"] == pytest.approx(0.0, abs=1e-9)
    assert numbers["correlation_difference"]["mean"] == 0.0 and numbers["correlation_difference"]["max"] == 0.0
    for histogram in numbers["logit_histograms"].values():
        assert histogram["counts"]["teacher"] == histogram["counts"]["student"]
    calibration = numbers["calibration"]
    assert calibration["teacher"] == calibration["student"]
    assert numbers["top1"]["teacher"] == numbers["top1"]["student"]
    assert numbers["per_class_top1"]["teacher"] == numbers["per_class_top1"]["student"]
    curve = numbers["top1_by_teacher_std"]
    assert curve["student_top1"] == curve["teacher_top1"]
    sdd = numbers["sdd"]["per_scale"]
    assert sdd["1"]["complementary"] == 0.0
    assert sdd["2"]["consistent"] + sdd["2"]["complementary"] == pytest.approx(1.0)
    groups = numbers["sdd"]["student_top1_by_group"]
    assert groups["with_complementary"]["samples"] + groups["without_complementary"]["samples"] == 24
    baseline = numbers["per_class_top1"]["baseline"]
    deltas = {c["class"]: c["delta"] for c in numbers["helped_hurt"]["helped"] + numbers["helped_hurt"]["hurt"]}
    for k, delta in deltas.items():
        assert delta == pytest.approx(numbers["per_class_top1"]["student"][k] - baseline[k])


def test_report_links_each_runs_figures(analysed: dict[str, Path], tmp_path: Path):
    out = tmp_path / "report"
    result = CliRunner().invoke(app, ["report", str(analysed["root"]), "--out", str(out), "--analysis"])
    assert result.exit_code == 0, result.output
    markdown = (out / "report.md").read_text()
    section = markdown[markdown.index("## Analysis") :]
    assert f"### {analysed['student'].name}" in section and "agreement 100.00%" in section
    links = re.findall(r"!\[[^]]*\]\(([^)]+)\)", section)
    assert len(links) == len(FIGURES)
    for link in links:
        assert not Path(link).is_absolute() and (out / link).resolve().is_file(), link
    plain = CliRunner().invoke(app, ["report", str(analysed["root"]), "--out", str(tmp_path / "plain")])
    assert plain.exit_code == 0 and "## Analysis" not in (tmp_path / "plain" / "report.md").read_text()


def test_report_lists_runs_not_analysed(tmp_path: Path):
    teacher = teacher_run(tmp_path / "runs" / "teachers") / "checkpoints" / "best.pt"
    student = student_run(tmp_path / "runs", teacher, weights(0))
    result = CliRunner().invoke(app, ["report", str(tmp_path / "runs"), "--analysis"])
    assert result.exit_code == 0, result.output
    section = (tmp_path / "runs" / "report.md").read_text().split("## Analysis", 1)[1]
    assert "Not analysed yet" in section and f"- {student.name}" in section and "![" not in section


def test_a_missing_teacher_is_one_line(tmp_path: Path):
    student = student_run(tmp_path, None, weights(0))
    code, lines = analyze("--checkpoint", str(student))
    assert code == 2 and len(lines) == 1
    assert "no resnet8 teacher for synthetic" in lines[0] and "--teacher" in lines[0]
    assert not (student / "analysis").exists()


def test_a_teacher_file_gone_since_training_is_one_line(tmp_path: Path):
    teacher = teacher_run(tmp_path / "teachers") / "checkpoints" / "best.pt"
    student = student_run(tmp_path, teacher, weights(0))
    teacher.unlink()
    code, lines = analyze("--checkpoint", str(student))
    assert code == 2 and len(lines) == 1 and "is gone" in lines[0]


def test_a_teacher_changed_since_training_is_one_line(tmp_path: Path):
    teacher = teacher_run(tmp_path / "teachers") / "checkpoints" / "best.pt"
    student = student_run(tmp_path, teacher, weights(0))
    teacher_run(tmp_path / "teachers", seed=5)  # overwrites the recorded file with other weights
    code, lines = analyze("--checkpoint", str(student))
    assert code == 2 and len(lines) == 1 and "sha256" in lines[0] and "--teacher" in lines[0]


def test_a_checkpoint_of_another_dataset_is_one_line(tmp_path: Path):
    teacher = teacher_run(tmp_path / "teachers") / "checkpoints" / "best.pt"
    student = student_run(tmp_path, teacher, weights(0))
    code, lines = analyze("--checkpoint", str(student / "checkpoints" / "best.pt"), "--dataset", "cifar100")
    assert code == 2 and len(lines) == 1
    assert "trained on synthetic data (4 classes" in lines[0] and "not cifar100" in lines[0]
    other = teacher_run(tmp_path / "other", seed=2, classes=5)
    code, lines = analyze("--checkpoint", str(student), "--baseline", str(other))
    assert code == 2 and len(lines) == 1 and "baseline" in lines[0] and "5 classes" in lines[0]
    code, lines = analyze("--checkpoint", str(student), "--teacher", str(other / "checkpoints" / "best.pt"))
    assert code == 2 and len(lines) == 1 and "teacher" in lines[0] and "5 classes" in lines[0]
    assert not (student / "analysis").exists()


def test_bad_inputs_are_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    code, lines = analyze("--checkpoint", str(tmp_path / "nowhere"))
    assert code == 2 and len(lines) == 1 and "does not exist" in lines[0]
    vanilla = teacher_run(tmp_path)
    code, lines = analyze("--checkpoint", str(vanilla))
    assert code == 2 and len(lines) == 1 and "--teacher-arch" in lines[0]
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # makes `import matplotlib` raise ImportError
    code, lines = analyze("--checkpoint", str(vanilla))
    assert code == 2 and len(lines) == 1 and "pip install 'sddkd[analysis]'" in lines[0]
    assert not (vanilla / "analysis").exists()


def test_a_vanilla_student_against_a_given_teacher(tmp_path: Path):
    """A baseline student has no teacher of its own: --teacher and --teacher-arch name one, --M and --out apply."""
    teacher = teacher_run(tmp_path / "teachers") / "checkpoints" / "best.pt"
    vanilla = teacher_run(tmp_path, seed=1)
    out = tmp_path / "out"
    code, lines = analyze("--checkpoint", str(vanilla), "--teacher", str(teacher), "--teacher-arch", "resnet8",
                          "--M", "1,4", "--out", str(out))  # fmt: skip
    assert code == 0, lines
    numbers = json.loads((out / ANALYSIS_JSON).read_text())
    assert numbers["inputs"]["scales"] == [1, 4] and numbers["inputs"]["temperature"] == 1.0
    assert set(numbers["agreement"]["per_scale"]) == {"1", "4"}
    assert 0.0 <= numbers["agreement"]["top1"] < 1.0 and numbers["agreement"]["per_scale"]["1"]["kl"] > 0.0
    assert not (out / FIGURES["helped_hurt"]).exists()  # only with --baseline
