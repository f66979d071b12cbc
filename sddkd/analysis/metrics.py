"""Numbers from logits and labels: pure tensor functions, no models, no files (definitions in docs/analysis.md).

Shapes: global logits `[S, K]` (S test samples, K classes), region logits `[B, K, N]` laid out as in
`sddkd.models.region_logits` (region 0 the global cell, then each scale's m*m cells row-major), labels `[S]`.
Everything computes in float64 on the CPU: these are one-off statistics of a test set, not a training step.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from sddkd.losses import standardize

RELIABILITY_BINS = 15  # equal-width confidence bins, the usual ECE setting (Guo et al. 2017)
STD_BINS = 10  # quantile bins of the teacher's logit std for "student top-1 against teacher std"


def _f64(x: Tensor) -> Tensor:
    return x.detach().to("cpu", torch.float64)


def kl_divergence(teacher: Tensor, student: Tensor, temperature: float) -> Tensor:
    """KL(softmax(t/T) || softmax(s/T)) over dim 1, without the T² factor of the loss: `[B, ...]` per row."""
    log_q = torch.log_softmax(teacher / temperature, dim=1)
    log_p = torch.log_softmax(student / temperature, dim=1)
    return (log_q.exp() * (log_q - log_p)).sum(dim=1)


def scale_slices(scales: Sequence[int]) -> list[slice]:
    """The region columns of each scale: (1, 2, 4) -> [0:1], [1:5], [5:21]."""
    slices, offset = [], 0
    for m in scales:
        slices.append(slice(offset, offset + m * m))
        offset += m * m
    return slices


def region_statistics(
    student: Tensor, teacher: Tensor, labels: Tensor, scales: Sequence[int], temperature: float
) -> dict[str, Tensor]:
    """Per sample and scale, each `[B, len(scales)]`, the mean over that scale's cells of:

    - `agreement`: student argmax == teacher argmax;
    - `kl` / `kl_standardized`: KL(teacher || student) at `temperature` of the raw / LSKD z-scored logits;
    - `complementary`: the teacher's correctness on the cell differs from its global correctness (SDD's
      complementary region; region 0 never is); `global_right_local_wrong` and `global_wrong_local_right` split it.

    Per-sample values, so that batches concatenate and the test-set means come from `summarise_regions`.
    """
    student, teacher = _f64(student), _f64(teacher)
    labels = labels.detach().cpu()
    agree = (student.argmax(dim=1) == teacher.argmax(dim=1)).double()  # [B, N]
    kl = kl_divergence(teacher, student, temperature)  # [B, N]
    kl_z = kl_divergence(standardize(teacher), standardize(student), temperature)
    correct = teacher.argmax(dim=1) == labels[:, None]  # [B, N], the teacher's local correctness
    global_correct = correct[:, :1]
    lost = (global_correct & ~correct).double()
    found = (~global_correct & correct).double()
    per_cell = {"agreement": agree, "kl": kl, "kl_standardized": kl_z, "complementary": lost + found,
                "global_right_local_wrong": lost, "global_wrong_local_right": found}  # fmt: skip
    return {
        name: torch.stack([values[:, cells].mean(dim=1) for cells in scale_slices(scales)], dim=1)
        for name, values in per_cell.items()
    }


def summarise_regions(stats: dict[str, Tensor], scales: Sequence[int]) -> dict[str, dict[str, float]]:
    """Test-set means per scale ("1", "2", ...): agreement and the consistent/complementary fractions in [0, 1]."""
    summary: dict[str, dict[str, float]] = {}
    for column, m in enumerate(scales):
        entry = {name: float(values[:, column].mean()) for name, values in stats.items()}
        entry["consistent"] = 1.0 - entry["complementary"]
        summary[str(m)] = entry
    return summary


def accuracy_by_complementary(student_correct: Tensor, complementary: Tensor) -> dict[str, Any]:
    """Student top-1 (%) on samples with at least one complementary region (any scale) against samples with none.

    `complementary` is `region_statistics(...)["complementary"]` `[S, len(scales)]`; accuracies are None for an
    empty group.
    """
    has = complementary.sum(dim=1) > 0
    correct = student_correct.detach().cpu().bool()

    def top1(mask: Tensor) -> float | None:
        return 100.0 * float(correct[mask].double().mean()) if bool(mask.any()) else None

    return {"with_complementary": {"samples": int(has.sum()), "student_top1": top1(has)},
            "without_complementary": {"samples": int((~has).sum()), "student_top1": top1(~has)}}  # fmt: skip


def class_mean_logits(logits: Tensor, labels: Tensor, num_classes: int) -> Tensor:
    """`[K, K]`: row l is the mean logit vector over test samples of true class l (mdistiller's "correlation"
    matrix); rows of classes without samples are NaN."""
    logits = _f64(logits)
    labels = labels.detach().cpu()
    sums = torch.zeros(num_classes, logits.shape[1], dtype=torch.float64).index_add_(0, labels, logits)
    counts = torch.bincount(labels, minlength=num_classes).double()[:, None]
    return sums / counts


def correlation_difference(student: Tensor, teacher: Tensor, labels: Tensor, num_classes: int) -> dict[str, Any]:
    """mdistiller's heatmap: |M_student − M_teacher| of the class-mean logit matrices, diagonal set to 0.

    `mean` and `max` are over the off-diagonal entries of classes that have test samples.
    """
    diff = (class_mean_logits(student, labels, num_classes) - class_mean_logits(teacher, labels, num_classes)).abs()
    diff.fill_diagonal_(0.0)
    off_diagonal = ~torch.eye(num_classes, dtype=torch.bool) & ~diff.isnan()
    values = diff[off_diagonal]
    return {"matrix": diff, "mean": float(values.mean()) if values.numel() else math.nan,
            "max": float(values.max()) if values.numel() else math.nan}  # fmt: skip


def logit_moments(logits: Tensor) -> dict[str, Tensor]:
    """Each sample's mean and unbiased std over classes (`[S]` each), before and after LSKD's z-score."""
    logits = _f64(logits)
    z = standardize(logits)
    return {"mean": logits.mean(dim=1), "std": logits.std(dim=1), "mean_standardized": z.mean(dim=1),
            "std_standardized": z.std(dim=1)}  # fmt: skip


def shared_histograms(
    series: dict[str, Tensor], bins: int = 40, value_range: tuple[float, float] | None = None
) -> dict[str, Any]:
    """Histograms of several 1-D series on one set of bin edges (so teacher and student compare bar by bar).

    The edges span all values, or `value_range` (values outside it are not counted), e.g. a fixed window around
    the 0 and 1 that z-scored logits have by construction, so that a spike reads as a spike.
    """
    values = torch.cat([_f64(v) for v in series.values()])
    low, high = value_range or (float(values.min()), float(values.max()))
    if high - low < 1e-9:  # all values equal: one window of width 1 centred on them
        low, high = low - 0.5, high + 0.5
    edges = torch.linspace(low, high, bins + 1, dtype=torch.float64)
    counts = {name: torch.histc(_f64(v), bins=bins, min=low, max=high).long().tolist() for name, v in series.items()}
    return {"edges": edges.tolist(), "counts": counts}


def accuracy_by_teacher_std(
    student_correct: Tensor, teacher_correct: Tensor, teacher_std: Tensor, bins: int = STD_BINS
) -> dict[str, list[Any]]:
    """Samples in `bins` quantile bins of the teacher's logit std: each bin's std range, size and both top-1 (%)."""
    order = torch.argsort(_f64(teacher_std), stable=True)
    groups = [group for group in torch.tensor_split(order, min(bins, len(order))) if group.numel()]
    std = _f64(teacher_std)
    return {
        "std_low": [float(std[g].min()) for g in groups], "std_high": [float(std[g].max()) for g in groups],
        "std_mean": [float(std[g].mean()) for g in groups], "samples": [int(g.numel()) for g in groups],
        "student_top1": [100.0 * float(student_correct[g].double().mean()) for g in groups],
        "teacher_top1": [100.0 * float(teacher_correct[g].double().mean()) for g in groups],
    }  # fmt: skip


def reliability(logits: Tensor, labels: Tensor, bins: int = RELIABILITY_BINS) -> dict[str, Any]:
    """Reliability diagram data and the expected calibration error.

    Confidence = max softmax probability; bin b holds confidences in ((b-1)/bins, b/bins]. ECE = Σ_b (n_b / S) ·
    |accuracy_b − confidence_b|, in [0, 1]. Empty bins have None accuracy and confidence.
    """
    probs = torch.softmax(_f64(logits), dim=1)
    confidence, prediction = probs.max(dim=1)
    correct = (prediction == labels.detach().cpu()).double()
    index = (torch.ceil(confidence * bins).long() - 1).clamp(0, bins - 1)
    counts = torch.bincount(index, minlength=bins).double()
    conf_sum = torch.zeros(bins, dtype=torch.float64).index_add_(0, index, confidence)
    acc_sum = torch.zeros(bins, dtype=torch.float64).index_add_(0, index, correct)
    filled = counts > 0
    ece = float(((acc_sum - conf_sum).abs()[filled]).sum() / max(len(labels), 1))
    return {
        "edges": torch.linspace(0, 1, bins + 1, dtype=torch.float64).tolist(), "counts": counts.long().tolist(),
        "accuracy": [float(a / n) if n else None for a, n in zip(acc_sum, counts, strict=True)],
        "confidence": [float(c / n) if n else None for c, n in zip(conf_sum, counts, strict=True)],
        "ece": ece, "mean_confidence": float(confidence.mean()), "top1": 100.0 * float(correct.mean()),
    }  # fmt: skip


def per_class_accuracy(logits: Tensor, labels: Tensor, num_classes: int) -> Tensor:
    """`[K]` top-1 (%) per true class; NaN for a class without test samples."""
    labels = labels.detach().cpu()
    correct = (logits.detach().cpu().argmax(dim=1) == labels).double()
    hits = torch.zeros(num_classes, dtype=torch.float64).index_add_(0, labels, correct)
    counts = torch.bincount(labels, minlength=num_classes).double()
    return 100.0 * hits / counts


def helped_hurt(student: Tensor, baseline: Tensor, top: int = 10) -> dict[str, list[dict[str, float | int]]]:
    """The classes whose per-class top-1 distillation raised (`helped`) or lowered (`hurt`) most against a baseline.

    Inputs are `per_class_accuracy` vectors; ties keep the lower class index first; classes with no change or
    no samples are left out.
    """
    delta = student - baseline
    valid = ~delta.isnan()

    def pick(sign: float) -> list[dict[str, float | int]]:
        candidates = [k for k in range(len(delta)) if bool(valid[k]) and sign * float(delta[k]) > 0]
        candidates.sort(key=lambda k: (-sign * float(delta[k]), k))
        return [{"class": k, "delta": float(delta[k]), "student_top1": float(student[k]),
                 "baseline_top1": float(baseline[k])} for k in candidates[:top]]  # fmt: skip

    return {"helped": pick(1.0), "hurt": pick(-1.0)}
