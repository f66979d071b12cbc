"""Distillation losses of METHOD.md as pure tensor functions: KD, DKD, NKD, their SDD variants, LSKD z-scoring and
CTKD's learnable temperature (MLKD's are in `mlkd.py`; `sddkd.losses` is the public face of both).

Conventions shared by every function here:
- Plain logits are ``[B, K]``; region logits are ``[B, K, N]`` with region 0 the global 1x1 cell. The
  class dimension is always dim 1, so one per-row implementation serves both layouts (rows ``[B]`` or
  ``[B, N]``).
- Math runs in float32 even for bf16/fp16 inputs (a float64 input stays float64, for golden tests).
- No Python loop over rows, no ``.item()``, no data-dependent branching: masks are tensor ops, so a
  training step never waits for the device and can be captured in a CUDA graph. Only cheap shape checks raise.
- Non-finite values are propagated, never zeroed: the engine decides what to do with them.
"""

from __future__ import annotations

import torch
from torch import Tensor

STD_EPS = 1e-7  # added to the std (not the variance), as LSKD does
NCKD_MASK = 1000.0  # the target logit is lowered by this much before the NCKD softmax, as mdistiller does

# ----------------------------------------------------------------------------------------------------
# Input handling


def _loss_dtype(dtype: torch.dtype) -> torch.dtype:
    """float64 stays float64; everything else (bf16, fp16, fp32) computes in float32."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def _as_loss_dtype(x: Tensor) -> Tensor:
    return x.to(_loss_dtype(x.dtype))


def _check_logits(student: Tensor, teacher: Tensor, ndim: int, what: str) -> None:
    layout = "[B, K]" if ndim == 2 else "[B, K, N]"
    if student.dim() != ndim or teacher.dim() != ndim:
        raise ValueError(
            f"{what} expect {layout} logits, got student {tuple(student.shape)} and teacher "
            f"{tuple(teacher.shape)}; pass {ndim}-D tensors with classes on dim 1."
        )
    if student.shape != teacher.shape:
        raise ValueError(
            f"{what} need student and teacher logits of the same shape, got {tuple(student.shape)} and "
            f"{tuple(teacher.shape)}; both must be {layout} over the same classes (and regions)."
        )
    if student.shape[1] < 2:
        raise ValueError(f"{what} need at least 2 classes on dim 1, got shape {tuple(student.shape)}.")


def _check_target(target: Tensor, batch_size: int, what: str) -> None:
    if target.dim() != 1 or target.shape[0] != batch_size:
        raise ValueError(
            f"{what} expect a target of shape [B] = [{batch_size}] (one class index per sample), "
            f"got {tuple(target.shape)}."
        )
    if target.is_floating_point() or target.is_complex() or target.dtype == torch.bool:
        raise ValueError(f"{what} expect integer class indices as target, got dtype {target.dtype}.")


def _check_temperature(temperature: float | Tensor) -> None:
    # Only Python numbers are checked: comparing a tensor would force a host sync.
    if isinstance(temperature, (int, float)) and temperature <= 0:
        raise ValueError(f"temperature must be positive, got {temperature}.")


def _target_onehot(target: Tensor, logits: Tensor) -> Tensor:
    """Boolean one-hot of the target that broadcasts against ``logits``: [B, K] or [B, K, 1]."""
    num_classes = logits.shape[1]
    trailing = (1,) * (logits.dim() - 2)
    classes = torch.arange(num_classes, device=logits.device).view(1, num_classes, *trailing)
    return classes == target.view(-1, 1, *trailing)


# ----------------------------------------------------------------------------------------------------
# Row losses: logits [B, K, *] -> rows [B, *]


def standardize(logits: Tensor, dim: int = 1) -> Tensor:
    """LSKD z-score over the class dim: (z - mean) / (unbiased std + 1e-7). Keeps the input's dtype."""
    mean = logits.mean(dim=dim, keepdim=True)
    std = logits.std(dim=dim, keepdim=True, correction=1)
    return (logits - mean) / (std + STD_EPS)


def _kl_from_log_probs(log_q: Tensor, log_p: Tensor) -> Tensor:
    """KL(q || p) summed over dim 1. Written with log q (finite even where q underflows to 0) so that
    neither the value nor its gradient turns into 0 * inf = nan, unlike xlogy on probabilities."""
    return (log_q.exp() * (log_q - log_p)).sum(dim=1)


def _prepare(student: Tensor, teacher: Tensor, standardize_logits: bool) -> tuple[Tensor, Tensor]:
    student, teacher = _as_loss_dtype(student), _as_loss_dtype(teacher)
    if standardize_logits:
        student, teacher = standardize(student, dim=1), standardize(teacher, dim=1)
    return student, teacher


def _kd_rows(student: Tensor, teacher: Tensor, temperature: float | Tensor, standardize_logits: bool) -> Tensor:
    """T^2 * KL(softmax(t/T) || softmax(s/T)) per row: [B, K, *] -> [B, *]."""
    student, teacher = _prepare(student, teacher, standardize_logits)
    log_p = torch.log_softmax(student / temperature, dim=1)
    log_q = torch.log_softmax(teacher / temperature, dim=1)
    return _kl_from_log_probs(log_q, log_p) * temperature**2


def _binary_log_probs(log_probs: Tensor, onehot: Tensor) -> Tensor:
    """[log p_target, log p_non-target] from class log-probs: [B, K, *] -> [B, 2, *].
    The non-target mass is a logsumexp over the other classes (stable where p_target is close to 1)."""
    log_target = torch.where(onehot, log_probs, 0.0).sum(dim=1, keepdim=True)
    log_other = torch.logsumexp(log_probs.masked_fill(onehot, float("-inf")), dim=1, keepdim=True)
    return torch.cat([log_target, log_other], dim=1)


def _dkd_rows(
    student: Tensor,
    teacher: Tensor,
    target: Tensor,
    alpha: float,
    beta: float,
    temperature: float,
    standardize_logits: bool,
) -> Tensor:
    """alpha * TCKD + beta * NCKD per row (Zhao et al. 2022, as in mdistiller): [B, K, *] -> [B, *]."""
    student, teacher = _prepare(student, teacher, standardize_logits)
    onehot = _target_onehot(target, student)  # [B, K, *] broadcastable, bool
    scaled_s, scaled_t = student / temperature, teacher / temperature

    # TCKD: KL on the binary split [target, all other classes].
    log_p_bin = _binary_log_probs(torch.log_softmax(scaled_s, dim=1), onehot)  # [B, 2, *]
    log_q_bin = _binary_log_probs(torch.log_softmax(scaled_t, dim=1), onehot)
    tckd = _kl_from_log_probs(log_q_bin, log_p_bin)

    # NCKD: KL among the non-target classes; the target is pushed out of the softmax by -1000 * onehot.
    push_out = NCKD_MASK * onehot.to(student.dtype)
    log_p_nt = torch.log_softmax(scaled_s - push_out, dim=1)
    log_q_nt = torch.log_softmax(scaled_t - push_out, dim=1)
    nckd = _kl_from_log_probs(log_q_nt, log_p_nt)

    return (alpha * tckd + beta * nckd) * temperature**2


def _nkd_rows(
    student: Tensor,
    teacher: Tensor,
    target: Tensor,
    temperature: float,
    gamma: float,
    non_target_only: bool,
    standardize_logits: bool,
) -> Tensor:
    """NKD (Yang et al. 2023) per row: -q_y log p_y - gamma T^2 sum_k q^_k log p^_k: [B, K, *] -> [B, *].

    The first term is at temperature 1 with the teacher detached. `non_target_only` takes the second softmax over
    the non-target classes (upstream NKD); False keeps every class, as the SDD repository's code computes it.
    """
    student, teacher = _prepare(student, teacher, standardize_logits)
    teacher = teacher.detach()
    onehot = _target_onehot(target, student)
    log_p = torch.log_softmax(student, dim=1)
    q = torch.softmax(teacher, dim=1)
    target_term = -(torch.where(onehot, q * log_p, 0.0)).sum(dim=1)
    scaled_s, scaled_t = student / temperature, teacher / temperature
    if non_target_only:  # -inf drops the target from both softmaxes; its q^ is then exactly 0
        scaled_s = scaled_s.masked_fill(onehot, float("-inf"))
        scaled_t = scaled_t.masked_fill(onehot, float("-inf"))
    log_p_hat = torch.log_softmax(scaled_s, dim=1)
    log_q_hat = torch.log_softmax(scaled_t, dim=1)
    # where q^ is 0 (the masked target) the product is 0, not 0 * -inf
    cross = torch.where(onehot, 0.0, log_q_hat.exp() * log_p_hat) if non_target_only else log_q_hat.exp() * log_p_hat
    return target_term - gamma * temperature**2 * cross.sum(dim=1)


# ----------------------------------------------------------------------------------------------------
# SDD row weighting


def complementary_mask(region_teacher: Tensor, target: Tensor) -> Tensor:
    """Bool [B, N]: True where the teacher's correctness on region n differs from its global (region 0) one.

    Region 0 is never complementary. Standardizing does not change an argmax, so this mask is the same with
    or without LSKD z-scoring.
    """
    _check_logits(region_teacher, region_teacher, 3, "complementary_mask")
    _check_target(target, region_teacher.shape[0], "complementary_mask")
    correct = region_teacher.argmax(dim=1) == target.view(-1, 1)  # [B, N]
    return correct != correct[:, :1]


def sdd_region_weights(region_teacher: Tensor, target: Tensor, complementary_weight: float = 2.0) -> Tensor:
    """SDD row weights [B, N]: 1 for consistent rows, ``complementary_weight`` for complementary rows.

    Float32 (float64 for float64 teacher logits), on the teacher's device.
    """
    complementary = complementary_mask(region_teacher, target)
    one = torch.ones((), dtype=_loss_dtype(region_teacher.dtype), device=region_teacher.device)
    return torch.where(complementary, one * complementary_weight, one)


# ----------------------------------------------------------------------------------------------------
# Public losses


def kd_loss(
    logits_student: Tensor, logits_teacher: Tensor, temperature: float | Tensor, standardize: bool = False
) -> Tensor:
    """Hinton KD: mean over the batch of T^2 * KL(q || p); with ``standardize`` both logits are z-scored first
    (LSKD). Logits [B, K] -> scalar. ``temperature`` may be a tensor (CTKD's learned T, one element): gradients
    then reach it through T, and it is not checked for positivity (that would wait for the device)."""
    _check_logits(logits_student, logits_teacher, 2, "kd_loss")
    _check_temperature(temperature)
    return _kd_rows(logits_student, logits_teacher, temperature, standardize).mean()


def dkd_loss(
    logits_student: Tensor,
    logits_teacher: Tensor,
    target: Tensor,
    alpha: float,
    beta: float,
    temperature: float,
    standardize: bool = False,
) -> Tensor:
    """Decoupled KD: mean over the batch of (alpha * TCKD + beta * NCKD) * T^2. Logits [B, K] -> scalar."""
    _check_logits(logits_student, logits_teacher, 2, "dkd_loss")
    _check_target(target, logits_student.shape[0], "dkd_loss")
    _check_temperature(temperature)
    return _dkd_rows(logits_student, logits_teacher, target, alpha, beta, temperature, standardize).mean()


def _sdd_reduce(rows: Tensor, weights: Tensor) -> Tensor:
    """sum_{b,n} w[b,n] * l[b,n] / (N * B), both [B, N]."""
    return (weights * rows).mean()


def sdd_kd_loss(
    region_student: Tensor,
    region_teacher: Tensor,
    target: Tensor,
    temperature: float | Tensor,
    complementary_weight: float = 2.0,
    standardize: bool = False,
) -> Tensor:
    """SDD over KD rows: region logits [B, K, N] -> scalar. With N = 1 this equals ``kd_loss``;
    ``standardize=True`` is the project's main method (SDD-KD-LSKD)."""
    _check_logits(region_student, region_teacher, 3, "sdd_kd_loss")
    _check_target(target, region_student.shape[0], "sdd_kd_loss")
    _check_temperature(temperature)
    rows = _kd_rows(region_student, region_teacher, temperature, standardize)  # [B, N]
    return _sdd_reduce(rows, sdd_region_weights(region_teacher, target, complementary_weight))


def sdd_dkd_loss(
    region_student: Tensor,
    region_teacher: Tensor,
    target: Tensor,
    alpha: float,
    beta: float,
    temperature: float,
    complementary_weight: float = 2.0,
    standardize: bool = False,
) -> Tensor:
    """SDD over DKD rows: region logits [B, K, N] -> scalar. With N = 1 this equals ``dkd_loss``."""
    _check_logits(region_student, region_teacher, 3, "sdd_dkd_loss")
    _check_target(target, region_student.shape[0], "sdd_dkd_loss")
    _check_temperature(temperature)
    rows = _dkd_rows(region_student, region_teacher, target, alpha, beta, temperature, standardize)  # [B, N]
    return _sdd_reduce(rows, sdd_region_weights(region_teacher, target, complementary_weight))


def nkd_loss(
    logits_student: Tensor,
    logits_teacher: Tensor,
    target: Tensor,
    temperature: float,
    gamma: float,
    non_target_only: bool = True,
    standardize: bool = False,
) -> Tensor:
    """Normalized KD: mean over the batch of the NKD row loss (see ``_nkd_rows``). Logits [B, K] -> scalar.

    ``non_target_only=False`` is what the SDD repository computes (its mask keeps every class)."""
    _check_logits(logits_student, logits_teacher, 2, "nkd_loss")
    _check_target(target, logits_student.shape[0], "nkd_loss")
    _check_temperature(temperature)
    return _nkd_rows(logits_student, logits_teacher, target, temperature, gamma, non_target_only, standardize).mean()


def sdd_nkd_loss(
    region_student: Tensor,
    region_teacher: Tensor,
    target: Tensor,
    temperature: float,
    gamma: float,
    complementary_weight: float = 2.0,
    non_target_only: bool = True,
    standardize: bool = False,
) -> Tensor:
    """SDD over NKD rows: region logits [B, K, N] -> scalar. With N = 1 this equals ``nkd_loss``."""
    _check_logits(region_student, region_teacher, 3, "sdd_nkd_loss")
    _check_target(target, region_student.shape[0], "sdd_nkd_loss")
    _check_temperature(temperature)
    rows = _nkd_rows(region_student, region_teacher, target, temperature, gamma, non_target_only, standardize)
    return _sdd_reduce(rows, sdd_region_weights(region_teacher, target, complementary_weight))


def learnable_temperature(
    theta: Tensor, reversal: float | Tensor, t_start: float = 1.0, t_range: float = 20.0
) -> Tensor:
    """CTKD's global temperature T = t_start + t_range * sigmoid(theta), with theta passed through a gradient
    reversal: the forward value is theta, the backward multiplies dL/dtheta by ``reversal`` (negative: theta
    ascends the loss). Written without a custom autograd function, so it traces into a compiled step; ``reversal``
    may be a tensor (a per-epoch input of a compiled step), never read on the host."""
    frozen = theta.detach()
    reversed_theta = frozen + reversal * (theta - frozen)  # value: exactly theta; gradient: reversal
    return t_start + t_range * torch.sigmoid(reversed_theta)
