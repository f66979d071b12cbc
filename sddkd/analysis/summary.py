"""The collected outputs -> the numbers of analysis.json, and the figures drawn from those numbers."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from sddkd.analysis import metrics, plots
from sddkd.analysis.collect import Outputs
from sddkd.analysis.embed import embed_2d
from sddkd.report.analysis_files import FIGURES
from sddkd.scales import Scales


def summarise(outputs: Outputs, scales: Scales, temperature: float, num_classes: int) -> dict[str, Any]:
    """Every number of the analysis, JSON-ready (NaN marks a class without test samples)."""
    labels = outputs.labels
    student, teacher = outputs.student_logits, outputs.teacher_logits
    student_correct = student.argmax(dim=1) == labels
    teacher_correct = teacher.argmax(dim=1) == labels
    per_scale = metrics.summarise_regions(outputs.region_stats, scales)
    moments = {"teacher": metrics.logit_moments(teacher), "student": metrics.logit_moments(student)}
    # After the z-score every mean is 0 and every std 1 (less the 1e-7 of the std): fixed windows, an odd bin
    # count so 0 and 1 fall mid-bin, show that teacher and student then agree exactly.
    windows = {"mean": None, "std": None, "mean_standardized": (-1.0, 1.0), "std_standardized": (0.5, 1.5)}
    histograms = {
        key: metrics.shared_histograms({who: moments[who][key] for who in moments}, 41, window)
        for key, window in windows.items()
    }
    correlation = metrics.correlation_difference(student, teacher, labels, num_classes)
    per_class = {
        "teacher": metrics.per_class_accuracy(teacher, labels, num_classes),
        "student": metrics.per_class_accuracy(student, labels, num_classes),
    }
    if outputs.baseline_logits is not None:
        per_class["baseline"] = metrics.per_class_accuracy(outputs.baseline_logits, labels, num_classes)
    summary: dict[str, Any] = {
        "top1": {"teacher": 100.0 * float(teacher_correct.double().mean()),
                 "student": 100.0 * float(student_correct.double().mean())},
        "agreement": {
            "top1": per_scale["1"]["agreement"],
            "per_scale": {m: {k: v[k] for k in ("agreement", "kl", "kl_standardized")} for m, v in per_scale.items()},
        },
        "correlation_difference": {"mean": correlation["mean"], "max": correlation["max"],
                                   "matrix": correlation["matrix"].tolist()},
        "logit_moments": {
            who: {f"{key}_{stat}": float(getattr(values, stat)()) for key, values in m.items()
                  for stat in ("mean", "median")}
            for who, m in moments.items()
        },
        "logit_histograms": histograms,
        "top1_by_teacher_std": metrics.accuracy_by_teacher_std(student_correct, teacher_correct,
                                                               moments["teacher"]["std"]),
        "sdd": {
            "per_scale": {m: {k: v[k] for k in ("consistent", "complementary", "global_right_local_wrong",
                                                 "global_wrong_local_right")} for m, v in per_scale.items()},
            "student_top1_by_group": metrics.accuracy_by_complementary(student_correct,
                                                                       outputs.region_stats["complementary"]),
        },
        "calibration": {"teacher": metrics.reliability(teacher, labels),
                        "student": metrics.reliability(student, labels)},
        "per_class_top1": {who: [None if v != v else v for v in values.tolist()]  # NaN: a class without samples
                           for who, values in per_class.items()},
    }  # fmt: skip
    if "baseline" in per_class:
        summary["top1"]["baseline"] = 100.0 * float((outputs.baseline_logits.argmax(dim=1) == labels).double().mean())  # type: ignore[union-attr]
        summary["helped_hurt"] = metrics.helped_hurt(per_class["student"], per_class["baseline"])
    return summary


def figures(
    summary: dict[str, Any], outputs: Outputs, method: Literal["tsne", "pca"], out_dir: Path, seed: int = 0
) -> list[Path]:
    """Draw every figure of `FIGURES` (helped/hurt only with a baseline) into `out_dir`; return the paths."""
    temperature = summary["inputs"]["temperature"]
    per_scale = {m: {**summary["agreement"]["per_scale"][m], **summary["sdd"]["per_scale"][m]}
                 for m in summary["agreement"]["per_scale"]}  # fmt: skip
    written = [
        plots.plot_agreement(per_scale, temperature, out_dir / FIGURES["agreement"]),
        plots.plot_correlation(summary["correlation_difference"]["matrix"], summary["correlation_difference"]["mean"],
                               out_dir / FIGURES["correlation"]),
        plots.plot_logit_moments(summary["logit_histograms"], out_dir / FIGURES["logit_moments"]),
        plots.plot_top1_vs_std(summary["top1_by_teacher_std"], out_dir / FIGURES["top1_vs_std"]),
        plots.plot_sdd_regions(per_scale, summary["sdd"]["student_top1_by_group"], out_dir / FIGURES["sdd_regions"]),
        plots.plot_reliability(summary["calibration"]["teacher"], summary["calibration"]["student"],
                               out_dir / FIGURES["reliability"]),
        plots.plot_per_class(summary["per_class_top1"], out_dir / FIGURES["per_class"]),
    ]  # fmt: skip
    if "helped_hurt" in summary:
        written.append(plots.plot_helped_hurt(summary["helped_hurt"], out_dir / FIGURES["helped_hurt"]))
    student_points = embed_2d(outputs.student_features, method, seed)
    teacher_points = embed_2d(outputs.teacher_features, method, seed)
    labels = outputs.feature_labels.tolist()
    path = out_dir / FIGURES["embedding"]
    written.append(plots.plot_embedding(student_points.numpy(), teacher_points.numpy(), labels, method, path))
    return written
