"""Losses against the official implementations' golden values, plus the properties METHOD.md promises."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from sddkd.losses import (
    complementary_mask,
    dkd_loss,
    kd_loss,
    learnable_temperature,
    nkd_loss,
    sdd_dkd_loss,
    sdd_kd_loss,
    sdd_nkd_loss,
    sdd_region_weights,
    standardize,
)

GOLDEN = json.loads((Path(__file__).parent / "fixtures" / "loss_golden.json").read_text())["cases"]
ALPHA, BETA = 1.0, 8.0  # the DKD weights the golden values were computed with


def _case_id(case: dict) -> str:
    return f"N{case['N']}-K{case['K']}-T{case['temperature']:g}-{'z' if case['standardize'] else 'raw'}"


def _region_inputs(batch: int, classes: int, regions: int, dtype=torch.float64, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    student = 3 * torch.randn(batch, classes, regions, generator=gen, dtype=dtype)
    teacher = 3 * torch.randn(batch, classes, regions, generator=gen, dtype=dtype)
    target = torch.randint(0, classes, (batch,), generator=gen)
    return student, teacher, target


# ----------------------------------------------------------------------------------------------------
# Golden values (official LSKD kd_loss/dkd_loss, official SDD sdd_kd_loss/multi_dkd, float64)


@pytest.mark.parametrize("case", GOLDEN, ids=_case_id)
def test_matches_official_golden_values(case):
    student = torch.tensor(case["region_logits_student"], dtype=torch.float64)  # [B, K, N]
    teacher = torch.tensor(case["region_logits_teacher"], dtype=torch.float64)
    target = torch.tensor(case["target"])
    temp, z = case["temperature"], case["standardize"]
    assert student.shape == (case["B"], case["K"], case["N"])

    got = {
        "kd_loss_on_region0": kd_loss(student[..., 0], teacher[..., 0], temp, standardize=z),
        "sdd_kd_loss_complementary_weight_2": sdd_kd_loss(
            student, teacher, target, temp, complementary_weight=2.0, standardize=z
        ),
        "dkd_loss_on_region0_alpha1_beta8": dkd_loss(
            student[..., 0], teacher[..., 0], target, ALPHA, BETA, temp, standardize=z
        ),
        "sdd_dkd_loss_alpha1_beta8_complementary_weight_2": sdd_dkd_loss(
            student, teacher, target, ALPHA, BETA, temp, complementary_weight=2.0, standardize=z
        ),
    }
    for key, value in got.items():
        assert value.dtype == torch.float64 and value.dim() == 0
        assert value.item() == pytest.approx(case[key], rel=1e-9, abs=0), key


def test_golden_cases_exercise_complementary_rows():
    # Otherwise the golden SDD values would not pin down the weighting at all.
    multi = [c for c in GOLDEN if c["N"] > 1]
    assert multi
    for case in multi:
        teacher = torch.tensor(case["region_logits_teacher"], dtype=torch.float64)
        assert complementary_mask(teacher, torch.tensor(case["target"])).any()


# ----------------------------------------------------------------------------------------------------
# Equivalences and zeros


@pytest.mark.parametrize("z", [False, True])
def test_sdd_at_one_region_equals_plain_losses(z):
    student, teacher, target = _region_inputs(7, 10, 1)
    plain_kd = kd_loss(student[..., 0], teacher[..., 0], 4.0, standardize=z)
    plain_dkd = dkd_loss(student[..., 0], teacher[..., 0], target, ALPHA, BETA, 4.0, standardize=z)
    torch.testing.assert_close(sdd_kd_loss(student, teacher, target, 4.0, 2.0, standardize=z), plain_kd)
    torch.testing.assert_close(sdd_dkd_loss(student, teacher, target, ALPHA, BETA, 4.0, 2.0, standardize=z), plain_dkd)


@pytest.mark.parametrize("z", [False, True])
def test_losses_vanish_when_student_equals_teacher(z):
    _, teacher, target = _region_inputs(5, 10, 5)
    zero = torch.zeros((), dtype=torch.float64)
    torch.testing.assert_close(kd_loss(teacher[..., 0], teacher[..., 0], 4.0, standardize=z), zero)
    torch.testing.assert_close(
        dkd_loss(teacher[..., 0], teacher[..., 0], target, ALPHA, BETA, 4.0, standardize=z), zero
    )
    torch.testing.assert_close(sdd_kd_loss(teacher, teacher, target, 4.0, standardize=z), zero)
    torch.testing.assert_close(sdd_dkd_loss(teacher, teacher, target, ALPHA, BETA, 4.0, standardize=z), zero)


def test_losses_are_positive_for_different_logits():
    student, teacher, target = _region_inputs(5, 10, 5)
    assert kd_loss(student[..., 0], teacher[..., 0], 4.0) > 0
    assert sdd_dkd_loss(student, teacher, target, ALPHA, BETA, 4.0, standardize=True) > 0


def test_kd_loss_by_hand():
    student = torch.tensor([[0.0, 1.0]], dtype=torch.float64)
    teacher = torch.tensor([[1.0, 0.0]], dtype=torch.float64)
    temp = 2.0
    p = torch.softmax(student / temp, dim=1)
    q = torch.softmax(teacher / temp, dim=1)
    expected = temp**2 * (q * (q.log() - p.log())).sum()
    torch.testing.assert_close(kd_loss(student, teacher, temp), expected)


# ----------------------------------------------------------------------------------------------------
# SDD weighting


def test_complementary_rows_by_hand():
    # B=2, K=3, N=3; target = [0, 1]. Teacher argmax per region:
    #   sample 0: regions -> [0, 2, 0]: global correct; region 1 wrong (complementary), region 2 consistent
    #   sample 1: regions -> [0, 1, 2]: global wrong;   region 1 right (complementary), region 2 consistent
    predicted = torch.tensor([[0, 2, 0], [0, 1, 2]])  # [B, N]
    teacher = torch.nn.functional.one_hot(predicted, 3).permute(0, 2, 1).double() * 5  # [B, K, N]
    target = torch.tensor([0, 1])
    expected_mask = torch.tensor([[False, True, False], [False, True, False]])
    assert torch.equal(complementary_mask(teacher, target), expected_mask)
    weights = sdd_region_weights(teacher, target, complementary_weight=3.5)
    assert weights.shape == (2, 3) and weights.dtype == torch.float64
    assert torch.equal(weights, torch.tensor([[1.0, 3.5, 1.0], [1.0, 3.5, 1.0]], dtype=torch.float64))

    # The loss is exactly sum w * row / (N * B): each region's row loss times its weight.
    student = torch.zeros_like(teacher)
    rows = torch.stack([kd_loss(student[:, :, n], teacher[:, :, n], 4.0) * 2 for n in range(3)])  # [N] sums
    expected = (rows * torch.tensor([1.0, 3.5, 1.0], dtype=torch.float64)).sum() / 6
    torch.testing.assert_close(sdd_kd_loss(student, teacher, target, 4.0, complementary_weight=3.5), expected)


def test_region_zero_is_never_complementary():
    _, teacher, _ = _region_inputs(64, 5, 21, seed=3)
    for target in (
        torch.zeros(64, dtype=torch.long),
        teacher[..., 0].argmax(dim=1),
        torch.randint(0, 5, (64,)),
    ):
        mask = complementary_mask(teacher, target)
        assert mask.shape == (64, 21)
        assert not mask[:, 0].any()
        assert mask.any()  # the example does have complementary rows elsewhere


def test_complementary_weight_one_gives_the_unweighted_mean():
    student, teacher, target = _region_inputs(4, 10, 5)
    rows_mean = torch.stack([kd_loss(student[..., n], teacher[..., n], 2.0) for n in range(student.shape[-1])]).mean()
    torch.testing.assert_close(sdd_kd_loss(student, teacher, target, 2.0, complementary_weight=1.0), rows_mean)
    assert not torch.allclose(sdd_kd_loss(student, teacher, target, 2.0, complementary_weight=2.0), rows_mean)


def test_mask_is_the_same_after_standardizing():
    _, teacher, target = _region_inputs(16, 10, 17, seed=5)
    assert torch.equal(complementary_mask(teacher, target), complementary_mask(standardize(teacher), target))


# ----------------------------------------------------------------------------------------------------
# Standardization


def test_standardize_keeps_argmax_and_has_zero_mean_unit_std():
    logits = 5 * torch.randn(32, 100, 6, dtype=torch.float64) + 3
    z = standardize(logits, dim=1)
    assert torch.equal(z.argmax(dim=1), logits.argmax(dim=1))
    torch.testing.assert_close(z.mean(dim=1), torch.zeros(32, 6, dtype=torch.float64))
    torch.testing.assert_close(z.std(dim=1, correction=1), torch.ones(32, 6, dtype=torch.float64))
    flat = standardize(logits[..., 0].T, dim=0)  # any dim
    torch.testing.assert_close(flat, z[..., 0].T)


def test_standardize_removes_shift_and_scale():
    logits = torch.randn(4, 10, dtype=torch.float64)
    # Equal up to the 1e-7 added to the std.
    torch.testing.assert_close(standardize(3 * logits + 7), standardize(logits), rtol=1e-6, atol=1e-6)
    student = torch.randn(4, 10, dtype=torch.float64)
    torch.testing.assert_close(
        kd_loss(student, 3 * logits + 7, 4.0, standardize=True),
        kd_loss(student, logits, 4.0, standardize=True),
        rtol=1e-6,
        atol=1e-6,
    )


# ----------------------------------------------------------------------------------------------------
# Gradients, dtypes, shapes


@pytest.mark.parametrize("z", [False, True], ids=["raw", "standardized"])
@pytest.mark.parametrize("name", ["kd", "dkd", "sdd_kd", "sdd_dkd"])
def test_gradcheck(name, z):
    student, teacher, target = _region_inputs(3, 5, 5, seed=11)
    student.requires_grad_(True)
    teacher.requires_grad_(True)
    functions = {
        "kd": lambda s, t: kd_loss(s[..., 0], t[..., 0], 2.0, standardize=z),
        "dkd": lambda s, t: dkd_loss(s[..., 0], t[..., 0], target, ALPHA, BETA, 2.0, standardize=z),
        "sdd_kd": lambda s, t: sdd_kd_loss(s, t, target, 2.0, 2.0, standardize=z),
        "sdd_dkd": lambda s, t: sdd_dkd_loss(s, t, target, ALPHA, BETA, 2.0, 2.0, standardize=z),
    }
    assert torch.autograd.gradcheck(functions[name], (student, teacher))


def test_dkd_gradient_is_finite_for_a_confident_teacher():
    # The NCKD teacher probability of the target underflows to exactly 0; that must not give 0 * inf = nan.
    student, teacher, target = _region_inputs(4, 10, 3, dtype=torch.float32)
    teacher[torch.arange(4), target] += 200.0
    student.requires_grad_(True)
    teacher.requires_grad_(True)
    sdd_dkd_loss(student, teacher, target, ALPHA, BETA, 1.0).backward()
    assert torch.isfinite(student.grad).all() and torch.isfinite(teacher.grad).all()


@pytest.mark.parametrize("z", [False, True])
def test_bf16_inputs_give_float32_results(z):
    student, teacher, target = _region_inputs(8, 100, 5, dtype=torch.float32)
    student, teacher = student.bfloat16(), teacher.bfloat16()
    reference_s, reference_t = student.float(), teacher.float()  # same values, float32
    pairs = [
        (kd_loss(student[..., 0], teacher[..., 0], 4.0, standardize=z),
         kd_loss(reference_s[..., 0], reference_t[..., 0], 4.0, standardize=z)),
        (dkd_loss(student[..., 0], teacher[..., 0], target, ALPHA, BETA, 4.0, standardize=z),
         dkd_loss(reference_s[..., 0], reference_t[..., 0], target, ALPHA, BETA, 4.0, standardize=z)),
        (sdd_kd_loss(student, teacher, target, 4.0, standardize=z),
         sdd_kd_loss(reference_s, reference_t, target, 4.0, standardize=z)),
        (sdd_dkd_loss(student, teacher, target, ALPHA, BETA, 4.0, standardize=z),
         sdd_dkd_loss(reference_s, reference_t, target, ALPHA, BETA, 4.0, standardize=z)),
    ]  # fmt: skip
    for got, expected in pairs:
        assert got.dtype == torch.float32
        torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)
    assert sdd_region_weights(teacher, target).dtype == torch.float32
    with torch.autocast("cpu", dtype=torch.bfloat16):
        under_autocast = sdd_kd_loss(student, teacher, target, 4.0, standardize=z)
    assert under_autocast.dtype == torch.float32
    torch.testing.assert_close(under_autocast, pairs[2][1], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("batch, regions", [(1, 1), (1, 21), (2, 4096)])
def test_any_batch_size_and_region_count(batch, regions):
    student, teacher, target = _region_inputs(batch, 10, regions, dtype=torch.float32)
    kd = sdd_kd_loss(student, teacher, target, 4.0, standardize=True)
    dkd = sdd_dkd_loss(student, teacher, target, ALPHA, BETA, 4.0, standardize=True)
    assert kd.shape == dkd.shape == () and torch.isfinite(kd) and torch.isfinite(dkd)
    assert sdd_region_weights(teacher, target).shape == (batch, regions)
    # The batched value is the mean of per-sample values (same N for every sample).
    per_sample = torch.stack(
        [sdd_kd_loss(student[b : b + 1], teacher[b : b + 1], target[b : b + 1], 4.0, standardize=True)
         for b in range(batch)]
    )  # fmt: skip
    torch.testing.assert_close(kd, per_sample.mean())


# ----------------------------------------------------------------------------------------------------
# Input validation


def test_shape_mismatch_is_a_clear_error():
    student, teacher, target = _region_inputs(4, 10, 5)
    with pytest.raises(ValueError, match="same shape"):
        sdd_kd_loss(student, teacher[..., :3], target, 4.0)
    with pytest.raises(ValueError, match="same shape"):
        sdd_dkd_loss(student[:, :8], teacher, target, ALPHA, BETA, 4.0)
    with pytest.raises(ValueError, match="same shape"):
        kd_loss(student[..., 0], teacher[:, :8, 0], 4.0)


def test_wrong_rank_is_a_clear_error():
    student, teacher, target = _region_inputs(4, 10, 5)
    with pytest.raises(ValueError, match=r"\[B, K\] logits"):
        kd_loss(student, teacher, 4.0)
    with pytest.raises(ValueError, match=r"\[B, K\] logits"):
        dkd_loss(student, teacher, target, ALPHA, BETA, 4.0)
    with pytest.raises(ValueError, match=r"\[B, K, N\] logits"):
        sdd_kd_loss(student[..., 0], teacher[..., 0], target, 4.0)
    with pytest.raises(ValueError, match=r"\[B, K, N\] logits"):
        sdd_dkd_loss(student[..., 0], teacher[..., 0], target, ALPHA, BETA, 4.0)


def test_target_length_and_dtype_are_clear_errors():
    student, teacher, target = _region_inputs(4, 10, 5)
    with pytest.raises(ValueError, match=r"target of shape \[B\] = \[4\]"):
        sdd_kd_loss(student, teacher, target[:3], 4.0)
    with pytest.raises(ValueError, match=r"target of shape \[B\] = \[4\]"):
        dkd_loss(student[..., 0], teacher[..., 0], target[:, None], ALPHA, BETA, 4.0)
    with pytest.raises(ValueError, match=r"target of shape \[B\] = \[4\]"):
        sdd_region_weights(teacher, target[:2])
    with pytest.raises(ValueError, match="integer class indices"):
        sdd_dkd_loss(student, teacher, target.double(), ALPHA, BETA, 4.0)


def test_nonpositive_temperature_is_a_clear_error():
    student, teacher, _ = _region_inputs(4, 10, 1)
    with pytest.raises(ValueError, match="temperature must be positive"):
        kd_loss(student[..., 0], teacher[..., 0], 0.0)


# ----------------------------------------------------------------------------------------------------
# CUDA graph capture (opt-in: needs a CUDA device)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_sdd_losses_capture_in_a_cuda_graph():
    student, teacher, target = (x.to("cuda") for x in _region_inputs(64, 100, 21, dtype=torch.float32))
    student.requires_grad_(True)
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):  # warm-up on a side stream, as capture requires
        for _ in range(2):
            sdd_kd_loss(student, teacher, target, 4.0, standardize=True)
            sdd_dkd_loss(student, teacher, target, ALPHA, BETA, 4.0, standardize=True)
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        kd = sdd_kd_loss(student, teacher, target, 4.0, standardize=True)
        dkd = sdd_dkd_loss(student, teacher, target, ALPHA, BETA, 4.0, standardize=True)
    student.data.add_(1.0)
    teacher.data.mul_(0.5)
    graph.replay()
    torch.cuda.synchronize()
    torch.testing.assert_close(kd, sdd_kd_loss(student, teacher, target, 4.0, standardize=True))
    torch.testing.assert_close(dkd, sdd_dkd_loss(student, teacher, target, ALPHA, BETA, 4.0, standardize=True))


# ----------------------------------------------------------------------------------------------------
# NKD, SD-NKD and CTKD's learnable temperature against the official code (float64)

METHODS_GOLDEN = json.loads((Path(__file__).parent / "fixtures" / "methods_golden.json").read_text())["cases"]


def _f64(values) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float64)


@pytest.mark.parametrize("case", METHODS_GOLDEN["nkd"], ids=lambda c: f"K{c['K']}-T{c['temperature']:g}")
def test_nkd_matches_upstream_and_sdd_code(case):
    student, teacher, target = _f64(case["logits_student"]), _f64(case["logits_teacher"]), torch.tensor(case["target"])
    upstream = nkd_loss(student, teacher, target, case["temperature"], case["gamma"])
    sdd_code = nkd_loss(student, teacher, target, case["temperature"], case["gamma"], non_target_only=False)
    assert upstream.item() == pytest.approx(case["nkd_non_target_only"], rel=1e-9, abs=1e-12)
    assert sdd_code.item() == pytest.approx(case["nkd_all_classes_sdd_code"], rel=1e-9, abs=1e-12)


@pytest.mark.parametrize("case", METHODS_GOLDEN["sdd_nkd"], ids=lambda c: f"N{c['N']}-K{c['K']}")
def test_sdd_nkd_matches_sdd_code(case):
    student, teacher = _f64(case["region_logits_student"]), _f64(case["region_logits_teacher"])
    target = torch.tensor(case["target"])
    got = sdd_nkd_loss(student, teacher, target, case["temperature"], case["gamma"],
                       complementary_weight=case["complementary_weight"], non_target_only=False)  # fmt: skip
    assert got.item() == pytest.approx(case["sdd_nkd_all_classes_sdd_code"], rel=1e-9, abs=1e-12)


def test_sdd_nkd_on_one_region_is_nkd():
    student, teacher, target = _region_inputs(5, 7, 1)
    for non_target_only in (True, False):
        args = (target, 4.0, 1.5)
        whole = nkd_loss(student[..., 0], teacher[..., 0], *args, non_target_only=non_target_only, standardize=True)
        regions = sdd_nkd_loss(student, teacher, *args, non_target_only=non_target_only, standardize=True)
        torch.testing.assert_close(regions, whole, rtol=1e-12, atol=0)


def test_nkd_gradient_is_finite_and_ignores_the_teacher():
    student, teacher, target = _region_inputs(4, 6, 1, seed=3)
    student, teacher = student[..., 0].requires_grad_(), teacher[..., 0].requires_grad_()
    nkd_loss(student, teacher, target, 2.0, 1.5).backward()
    assert student.grad is not None and torch.isfinite(student.grad).all() and teacher.grad is None


@pytest.mark.parametrize("case", METHODS_GOLDEN["ctkd"], ids=lambda c: f"theta{c['theta']:g}-rev{c['reversal']:g}")
def test_ctkd_temperature_value_and_gradients_match_official(case):
    student = _f64(case["logits_student"]).requires_grad_()
    theta = torch.tensor(case["theta"], dtype=torch.float64, requires_grad=True)
    temperature = learnable_temperature(theta, case["reversal"], case["t_start"], case["t_range"])
    loss = kd_loss(student, _f64(case["logits_teacher"]), temperature, standardize=case["standardize"])
    loss.backward()
    assert temperature.item() == pytest.approx(case["temperature"], rel=1e-12)
    assert loss.item() == pytest.approx(case["kd_loss"], rel=1e-9)
    assert theta.grad is not None and student.grad is not None
    assert theta.grad.item() == pytest.approx(case["grad_theta"], rel=1e-9, abs=1e-15)
    torch.testing.assert_close(student.grad, _f64(case["grad_logits_student"]), rtol=1e-9, atol=1e-15)


def test_reversal_as_a_tensor_scales_the_gradient_only():
    theta = torch.tensor(0.5, requires_grad=True)
    plain = learnable_temperature(theta, 1.0)
    (grad_plain,) = torch.autograd.grad(plain, theta)
    reversed_t = learnable_temperature(theta, torch.tensor(-0.25))
    (grad_reversed,) = torch.autograd.grad(reversed_t, theta)
    assert reversed_t.item() == plain.item()
    torch.testing.assert_close(grad_reversed, -0.25 * grad_plain)
