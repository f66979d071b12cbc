"""Where `sddkd analyze` writes, so that `sddkd report --analysis` finds it without importing torch."""

from __future__ import annotations

from pathlib import Path

ANALYSIS_DIR = "analysis"  # inside a run directory: <run_dir>/analysis/
ANALYSIS_JSON = "analysis.json"

# Every figure the command draws, in the order the report lists them; `helped_hurt` only with --baseline.
FIGURES: dict[str, str] = {
    "agreement": "agreement_kl_per_scale.png",
    "correlation": "correlation_difference.png",
    "logit_moments": "logit_mean_std_histograms.png",
    "top1_vs_std": "student_top1_vs_teacher_std.png",
    "sdd_regions": "sdd_regions.png",
    "reliability": "reliability.png",
    "per_class": "per_class_accuracy.png",
    "helped_hurt": "helped_hurt_classes.png",
    "embedding": "embedding.png",
}


def analysis_dir(run_dir: Path) -> Path:
    return run_dir / ANALYSIS_DIR
