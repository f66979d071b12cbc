"""MLKD's losses (multi-level logit distillation, as the LSKD repository's MLKD.py computes it) as pure tensor
functions, on the conventions of `core.py`: instance, class and batch terms over two views, the masks' fractions on
the device, and the SDD variant on region logits."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from sddkd.losses.core import (
    _as_loss_dtype,
    _check_logits,
    _check_target,
    _check_temperature,
    _kd_rows,
    _loss_dtype,
    _sdd_reduce,
    sdd_region_weights,
)

# MLKD's temperatures: the configured T first, then the fixed ones of the official MLKD.py. The strong view's
# instance terms run at the first three; its T = 2 and 6 terms are computed on the weak logits (see mlkd_loss).
MLKD_FIXED_TEMPERATURES = (3.0, 5.0, 2.0, 6.0)


# ----------------------------------------------------------------------------------------------------
# MLKD (multi-level logit distillation, as the LSKD repository's MLKD.py computes it)


def median_fraction(values: Tensor) -> Tensor:
    """mean(values <= median(values)) over a 1-D tensor, as a 0-d tensor on its device.

    The median interpolates linearly between the two middle values like ``np.percentile(values, 50)`` (and in
    the same arithmetic order, b - (b - a) / 2), so ties at the threshold count as the official code counts
    them. It is a sort and two static indexes: no ``.cpu()``, no ``.item()``, so a step never waits for it.
    """
    if values.dim() != 1 or values.shape[0] < 1:
        raise ValueError(f"median_fraction expects a non-empty 1-D tensor, got shape {tuple(values.shape)}.")
    count = values.shape[0]
    ordered = values.sort().values
    low, high = ordered[(count - 1) // 2], ordered[count // 2]
    median = high - (high - low) * 0.5 if count % 2 == 0 else low
    return (values <= median).to(_loss_dtype(values.dtype)).mean()


def _mlkd_fractions(teacher_weak: Tensor) -> tuple[Tensor, Tensor]:
    """(f, f'): the fractions of samples whose top teacher confidence, and of classes whose summed teacher
    probability, lie at or below their median. The official masks multiply already-reduced scalars, so they
    act only through these fractions (0.5 for an even batch without ties)."""
    probs = torch.softmax(teacher_weak.detach(), dim=1)
    return median_fraction(probs.amax(dim=1)), median_fraction(probs.sum(dim=0))


def _relation_loss(student: Tensor, teacher: Tensor, temperature: float, dim: int) -> Tensor:
    """MLKD's class (dim 0: P^T P, / K) or batch (dim 1: P P^T, / B) correlation term at one temperature;
    never z-scored, as the official cc_loss and bc_loss."""
    p_s, p_t = torch.softmax(student / temperature, dim=1), torch.softmax(teacher / temperature, dim=1)
    if dim == 0:
        gram_s, gram_t = p_s.T @ p_s, p_t.T @ p_t  # [K, K]
    else:
        gram_s, gram_t = p_s @ p_s.T, p_t @ p_t.T  # [B, B]
    return (gram_t - gram_s).pow(2).sum() / student.shape[1 - dim]


def _mlkd_terms(
    kd_at: Callable[[str, float], Tensor],
    student_weak: Tensor,
    teacher_weak: Tensor,
    temperature: float,
) -> dict[str, Tensor]:
    """kd, cc, bc of METHOD.md's MLKD given `kd_at(view, T)`, the instance KD term of a view at T."""
    temperatures = (temperature, *MLKD_FIXED_TEMPERATURES)
    fraction, class_fraction = _mlkd_fractions(teacher_weak)
    # The official loss_kd_strong uses the strong logits at (T, 3, 5) and the weak ones at (2, 6).
    kd = (
        fraction * sum(kd_at("weak", t) for t in temperatures)
        + sum(kd_at("strong", t) for t in temperatures[:3])
        + sum(kd_at("weak", t) for t in temperatures[3:])
    )
    # The strong view's class and batch terms are computed upstream but never added to the loss: omitted.
    cc = class_fraction * sum(_relation_loss(student_weak, teacher_weak, t, 0) for t in temperatures)
    bc = fraction * sum(_relation_loss(student_weak, teacher_weak, t, 1) for t in temperatures)
    return {"kd": kd, "cc": cc, "bc": bc}


def mlkd_loss(
    student_weak: Tensor,
    student_strong: Tensor,
    teacher_weak: Tensor,
    teacher_strong: Tensor,
    temperature: float,
    standardize: bool = False,
) -> dict[str, Tensor]:
    """MLKD's distillation terms (METHOD.md), unweighted: {"kd", "cc", "bc"}, each a scalar; the method adds
    λ_KD·(kd + cc + bc) to λ_CE·(CE(s_w, y) + CE(s_s, y)). Logits [B, K] of the weak and strong views.

    ``standardize`` z-scores the instance KD terms only (MLKD+LS); the class and batch terms never are. The
    fractions f, f' come from the weak teacher and stay on the device.
    """
    for student, teacher, view in ((student_weak, teacher_weak, "weak"), (student_strong, teacher_strong, "strong")):
        _check_logits(student, teacher, 2, f"mlkd_loss ({view} view)")
    if student_weak.shape != student_strong.shape:
        raise ValueError(
            f"mlkd_loss needs weak and strong logits of the same shape, got {tuple(student_weak.shape)} and "
            f"{tuple(student_strong.shape)}; both views hold the same images."
        )
    _check_temperature(temperature)
    views = {
        "weak": (_as_loss_dtype(student_weak), _as_loss_dtype(teacher_weak)),
        "strong": (_as_loss_dtype(student_strong), _as_loss_dtype(teacher_strong)),
    }

    def kd_at(view: str, t: float) -> Tensor:
        return _kd_rows(*views[view], t, standardize).mean()

    return _mlkd_terms(kd_at, *views["weak"], temperature)


def sdd_mlkd_loss(
    region_student_weak: Tensor,
    region_student_strong: Tensor,
    region_teacher_weak: Tensor,
    region_teacher_strong: Tensor,
    target: Tensor,
    temperature: float,
    complementary_weight: float = 2.0,
    standardize: bool = False,
) -> dict[str, Tensor]:
    """SDD-MLKD (new, METHOD.md): ``mlkd_loss`` with every instance KD term replaced by SD-KD on that view's
    region logits [B, K, N], SDD weights from the teacher's regions of the same view; the class and batch terms
    and the fractions stay on the global logits (region 0). With N = 1 it equals ``mlkd_loss``."""
    for student, teacher, view in (
        (region_student_weak, region_teacher_weak, "weak"),
        (region_student_strong, region_teacher_strong, "strong"),
    ):
        _check_logits(student, teacher, 3, f"sdd_mlkd_loss ({view} view)")
    if region_student_weak.shape != region_student_strong.shape:
        raise ValueError(
            f"sdd_mlkd_loss needs weak and strong region logits of the same shape, got "
            f"{tuple(region_student_weak.shape)} and {tuple(region_student_strong.shape)}."
        )
    _check_target(target, region_student_weak.shape[0], "sdd_mlkd_loss")
    _check_temperature(temperature)
    views = {
        "weak": (_as_loss_dtype(region_student_weak), _as_loss_dtype(region_teacher_weak)),
        "strong": (_as_loss_dtype(region_student_strong), _as_loss_dtype(region_teacher_strong)),
    }
    weights = {view: sdd_region_weights(teacher, target, complementary_weight) for view, (_, teacher) in views.items()}

    def kd_at(view: str, t: float) -> Tensor:
        return _sdd_reduce(_kd_rows(*views[view], t, standardize), weights[view])

    student_weak, teacher_weak = views["weak"]
    return _mlkd_terms(kd_at, student_weak[..., 0], teacher_weak[..., 0], temperature)
