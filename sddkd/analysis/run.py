"""`sddkd analyze`: a student checkpoint, its teacher (and a vanilla baseline) -> PNGs and one analysis.json.

Everything the user can get wrong is checked before any data is built or model run: the checkpoint and its
config, the dataset, the teacher (given, or the one the run recorded, or the store's), the baseline's dataset,
the output folder, matplotlib and (for t-SNE) scikit-learn.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sddkd.analysis.embed import EmbeddingMethod, resolve_method
from sddkd.config import DataConfig, EngineConfig, RunConfig
from sddkd.errors import UserError
from sddkd.files import read_json, write_json_atomic
from sddkd.methods import method_of
from sddkd.report.analysis_files import ANALYSIS_DIR, ANALYSIS_JSON, analysis_dir
from sddkd.scales import Scales

DEFAULT_SCALES: Scales = (1, 2, 4)  # SDD's view of a single-scale run: the paper's M


@dataclass(frozen=True)
class Checkpoint:
    """A checkpoint written by `sddkd train`: its file, the run config it carries, and its run directory if any."""

    path: Path
    config: RunConfig
    run_dir: Path | None

    @property
    def record(self) -> dict[str, Any]:
        return (read_json(self.run_dir / "result.json") or {}) if self.run_dir else {}


@dataclass
class AnalysisResult:
    out_dir: Path
    files: list[Path] = field(default_factory=list)
    summary: dict[str, Any] = field(default_factory=dict)


def resolve_checkpoint(target: Path, what: str = "checkpoint") -> Checkpoint:
    """RUN_DIR (its checkpoints/best.pt, the epoch the run reports) or a checkpoint file from `sddkd train`."""
    from sddkd.engine.checkpoint import load_checkpoint

    path = target / "checkpoints" / "best.pt" if target.is_dir() else target
    if not path.is_file():
        where = f"{target} has no checkpoints/best.pt" if target.is_dir() else f"{target} does not exist"
        raise UserError(f"{what} {where}; pass a run directory written by `sddkd train` or its checkpoint file")
    try:
        state = load_checkpoint(path)
    except Exception as exc:  # a weights-only refusal or a corrupt file: name the file, not a traceback
        raise UserError(f"cannot read {what} {path}: {str(exc).splitlines()[0]}") from None
    if not isinstance(state.get("config"), dict):
        raise UserError(f"{what} {path} carries no run config; analyze a checkpoint written by `sddkd train`")
    try:
        config = RunConfig.model_validate(state["config"])
    except ValueError:
        raise UserError(f"{what} {path} carries a run config this sddkd cannot read; train it again") from None
    run_dir = path.parent.parent if path.parent.name == "checkpoints" else None
    if run_dir is not None and not (run_dir / "result.json").is_file():
        run_dir = None
    return Checkpoint(path, config, run_dir)


def describe_data(data: DataConfig) -> str:
    if data.synthetic is None:
        return data.name
    s = data.synthetic
    return f"synthetic data ({s.num_classes} classes, {s.image_size} px, seed {s.seed})"


def same_data(a: DataConfig, b: DataConfig) -> bool:
    """Same dataset and classes; where the files live (root) and how they are decoded do not matter."""
    return a.name == b.name and a.synthetic == b.synthetic


def check_dataset(student: Checkpoint, dataset: str | None) -> None:
    if dataset is not None and dataset != student.config.data.name:
        raise UserError(
            f"checkpoint {student.path} was trained on {describe_data(student.config.data)}, not {dataset}; "
            f"analyze it on its own dataset (drop --dataset) or pass a {dataset} checkpoint"
        )


def resolve_teacher(student: Checkpoint, teacher: Path | None, teacher_arch: str | None) -> tuple[Path, str, str]:
    """(teacher file, architecture, expected sha256 or "") : --teacher, else the file the run recorded (which must
    still have the sha256 it had in training), else the run config's file, else the teacher store."""
    from sddkd import teachers

    cfg = student.config
    arch = teacher_arch or (cfg.teacher.arch if cfg.teacher else None)
    if arch is None:
        raise UserError(
            f"{student.path} is a {cfg.method.name} run without a teacher; give one with --teacher FILE "
            "--teacher-arch ARCH"
        )
    if teacher is not None:
        if not teacher.is_file():
            raise UserError(f"teacher checkpoint {teacher} does not exist; check the --teacher path")
        return teacher, arch, ""
    recorded = student.record.get("teacher_checkpoint") or {}
    if recorded.get("path") and Path(recorded["path"]).is_file() and teacher_arch in (None, recorded.get("arch")):
        return Path(recorded["path"]), arch, str(recorded.get("sha256") or "")
    if cfg.teacher is not None and cfg.teacher.checkpoint and Path(cfg.teacher.checkpoint).is_file():
        return Path(cfg.teacher.checkpoint), arch, ""
    found = teachers.find_teacher(cfg.data.name, arch)
    if found is None:
        lost = f"the teacher {recorded['path']} this run recorded is gone, and " if recorded.get("path") else ""
        raise UserError(f"{lost}{teachers.missing_teacher_message(cfg.data.name, arch)}; or pass --teacher FILE")
    return found, arch, ""


def check_same_data(student: Checkpoint, other: Path, what: str) -> None:
    """A teacher or baseline that is itself an sddkd checkpoint must come from the student's dataset."""
    from sddkd.engine.checkpoint import load_checkpoint

    try:
        config = load_checkpoint(other).get("config")
    except Exception:
        return  # a published teacher file: load_teacher's strict load judges it and names the problem
    if not isinstance(config, dict) or not isinstance(config.get("data"), dict):
        return
    try:
        data = DataConfig.model_validate(config["data"])
    except ValueError:
        return
    if not same_data(data, student.config.data):
        raise UserError(
            f"{what} {other} was trained on {describe_data(data)}, but the student on "
            f"{describe_data(student.config.data)}; pass a {what} of the student's dataset"
        )


def default_out(student: Checkpoint) -> Path:
    if student.run_dir is not None and student.path.name == "best.pt":
        return analysis_dir(student.run_dir)
    return student.path.with_name(f"{student.path.stem}-{ANALYSIS_DIR}")


def run_temperature(cfg: RunConfig, run_dir: Path | None = None) -> float:
    """The temperature the run's method distils at, as its registry entry says (1 for vanilla); a learned one
    (CTKD) is read from the last epoch of the run's metrics.jsonl when the run directory is known."""
    return method_of(cfg.method.name).analysis_temperature(cfg.method, _last_method_metrics(run_dir))


def _last_method_metrics(run_dir: Path | None) -> dict[str, float]:
    path = None if run_dir is None else run_dir / "metrics.jsonl"
    if path is None or not path.is_file():
        return {}
    found: dict[str, float] = {}
    for line in path.read_text().splitlines():
        try:
            row = json.loads(line)
        except ValueError:
            continue  # a torn last line of an interrupted run
        if isinstance(row, dict) and isinstance(row.get("method_metrics"), dict):
            found = row["method_metrics"]
    return found


def analyze(
    checkpoint: Path, *, teacher: Path | None = None, teacher_arch: str | None = None, dataset: str | None = None,
    data_root: Path | None = None, baseline: Path | None = None, out: Path | None = None, scales: Scales | None = None,
    temperature: float | None = None, embedding: EmbeddingMethod = "auto", device: str = "auto",
    batch_size: int = 256, max_points: int = 2000,
) -> AnalysisResult:  # fmt: skip
    """One pass over the student's test set; write every figure of `layout.FIGURES` and analysis.json."""
    from sddkd.analysis.plots import require_matplotlib

    require_matplotlib()
    method = resolve_method(embedding)
    student = resolve_checkpoint(checkpoint)
    check_dataset(student, dataset)
    if temperature is not None and not temperature > 0:
        raise UserError(f"--temperature must be positive, got {temperature}")
    region_scales = scales or (  # `scales` comes parsed from the edge (`--M`)
        student.config.scales if len(student.config.scales) > 1 else DEFAULT_SCALES
    )  # fmt: skip
    teacher_path, arch, expected_sha = resolve_teacher(student, teacher, teacher_arch)
    check_same_data(student, teacher_path, "teacher")
    base = resolve_checkpoint(baseline, "baseline") if baseline is not None else None
    if base is not None and not same_data(base.config.data, student.config.data):
        raise UserError(
            f"baseline {base.path} was trained on {describe_data(base.config.data)}, but the student on "
            f"{describe_data(student.config.data)}; pass a baseline of the student's dataset"
        )
    out_dir = out or default_out(student)
    if out_dir.exists() and not out_dir.is_dir():
        raise UserError(f"--out {out_dir} is a file; pass a folder")
    temperature = temperature if temperature is not None else run_temperature(student.config, student.run_dir)
    return _analyze(student, teacher_path, arch, expected_sha, base, out_dir, region_scales, temperature,
                    method, data_root, device, batch_size, max_points)  # fmt: skip


def _analyze(
    student: Checkpoint, teacher_path: Path, arch: str, expected_sha: str, base: Checkpoint | None, out_dir: Path,
    scales: Scales, temperature: float, method: Any, data_root: Path | None, device: str, batch_size: int,
    max_points: int,
) -> AnalysisResult:  # fmt: skip
    from sddkd.analysis.collect import collect
    from sddkd.analysis.summary import figures, summarise
    from sddkd.engine.distributed import DistContext
    from sddkd.engine.placement import build_data, resolve_placement
    from sddkd.teachers import load_teacher

    cfg = student.config
    data = cfg.data.model_copy(update={"root": str(data_root)}) if data_root else cfg.data
    placement = resolve_placement(EngineConfig(device=device))
    spec, _, test_loader = build_data(data, batch_size, placement.device, 0, DistContext(), train=False)
    named = {"data_name": cfg.data.name}  # not the model geometry: a synthetic run's files say synthetic
    teacher_model, teacher_info = load_teacher(teacher_path, arch, spec.model_dataset, spec.num_classes, **named)
    if expected_sha and teacher_info["sha256"] != expected_sha:
        raise UserError(
            f"teacher {teacher_path} has sha256 {teacher_info['sha256'][:12]}…, not the {expected_sha[:12]}… the run "
            "trained against; pass --teacher FILE to analyze against this file anyway"
        )
    student_model, student_info = load_teacher(student.path, cfg.student, spec.model_dataset, spec.num_classes,
                                               **named)  # fmt: skip
    baseline_model, baseline_info = None, None
    if base is not None:
        baseline_model, baseline_info = load_teacher(base.path, base.config.student, spec.model_dataset,
                                                     spec.num_classes, **named)  # fmt: skip
    for model in (student_model, teacher_model, baseline_model):
        if model is not None:
            model.to(placement.device)
    outputs = collect(student_model, teacher_model, baseline_model, test_loader, placement, scales, temperature,
                      max_points)  # fmt: skip
    summary = summarise(outputs, scales, temperature, spec.num_classes)
    summary["inputs"] = {
        "student": {**student_info, "run_dir": str(student.run_dir) if student.run_dir else None,
                    "method": cfg.method.name, "run_scales": list(cfg.scales)},
        "teacher": teacher_info, "baseline": baseline_info, "dataset": describe_data(cfg.data),
        "test_samples": int(outputs.labels.numel()), "num_classes": spec.num_classes, "scales": list(scales),
        "temperature": temperature, "embedding": method, "device": str(placement.device),
    }  # fmt: skip
    result = AnalysisResult(out_dir)
    result.files = figures(summary, outputs, method, out_dir, seed=cfg.seed)
    result.files.append(write_json_atomic(out_dir / ANALYSIS_JSON, _finite(summary)))
    result.summary = summary
    return result


def _finite(value: Any) -> Any:
    """JSON has no NaN: NaNs (classes without test samples) become null."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value
