"""`sddkd.analysis.metrics` and `embed` on cases with a known answer (hand-built logits, identical models)."""

from __future__ import annotations

import math

import pytest
import torch

from sddkd.analysis import metrics
from sddkd.analysis.embed import embed_2d, pca_2d, resolve_method
from sddkd.errors import UserError
from sddkd.losses import kd_loss


def _regions(predictions: list[list[int]], num_classes: int = 3) -> torch.Tensor:
    """Region logits [B, K, N] whose argmax on cell n of sample b is predictions[b][n] (margin 5)."""
    batch, cells = len(predictions), len(predictions[0])
    logits = torch.zeros(batch, num_classes, cells)
    for b, row in enumerate(predictions):
        for n, k in enumerate(row):
            logits[b, k, n] = 5.0
    return logits


def test_identical_student_and_teacher():
    torch.manual_seed(0)
    teacher = torch.randn(16, 7, 21) * 3
    labels = torch.randint(0, 7, (16,))
    stats = metrics.region_statistics(teacher.clone(), teacher, labels, (1, 2, 4), temperature=4.0)
    summary = metrics.summarise_regions(stats, (1, 2, 4))
    for m in ("1", "2", "4"):
        assert summary[m]["agreement"] == 1.0
        assert summary[m]["kl"] == pytest.approx(0.0, abs=1e-12)
        assert summary[m]["kl_standardized"] == pytest.approx(0.0, abs=1e-12)
    logits = teacher[:, :, 0]
    difference = metrics.correlation_difference(logits.clone(), logits, labels, 7)
    assert difference["mean"] == 0.0 and difference["max"] == 0.0
    student_moments, teacher_moments = metrics.logit_moments(logits.clone()), metrics.logit_moments(logits)
    for key in ("mean", "std", "mean_standardized", "std_standardized"):
        histogram = metrics.shared_histograms({"teacher": teacher_moments[key], "student": student_moments[key]})
        assert histogram["counts"]["teacher"] == histogram["counts"]["student"]
        assert sum(histogram["counts"]["teacher"]) == 16
    assert metrics.reliability(logits.clone(), labels) == metrics.reliability(logits, labels)


def test_kl_matches_the_kd_loss_and_a_hand_value():
    # KL((.5, .5) || (.75, .25)) = .5 ln(.5/.75) + .5 ln(.5/.25) = .5 ln(4/3)
    teacher, student = torch.tensor([[0.0, 0.0]]), torch.tensor([[math.log(3.0), 0.0]])
    assert float(metrics.kl_divergence(teacher, student, 1.0)) == pytest.approx(0.5 * math.log(4 / 3))
    assert float(metrics.kl_divergence(2 * teacher, 2 * student, 2.0)) == pytest.approx(0.5 * math.log(4 / 3))
    torch.manual_seed(1)
    t, s, labels = torch.randn(8, 5, 1), torch.randn(8, 5, 1), torch.randint(0, 5, (8,))
    stats = metrics.region_statistics(s, t, labels, (1,), temperature=3.0)
    # the KD loss is T² times the mean KL; LSKD's is the same on z-scored logits
    assert float(stats["kl"].mean()) * 9 == pytest.approx(float(kd_loss(s[:, :, 0], t[:, :, 0], 3.0)), rel=1e-5)
    expected = float(kd_loss(s[:, :, 0], t[:, :, 0], 3.0, standardize=True))
    assert float(stats["kl_standardized"].mean()) * 9 == pytest.approx(expected, rel=1e-5)


def test_agreement_per_scale_counts_cells():
    # scales (1, 2): cells 0 | 1..4. Student agrees on the global cell and on 1 of the 4 cells.
    teacher = _regions([[0, 0, 1, 2, 0]])
    student = _regions([[0, 1, 1, 0, 1]])
    summary = metrics.summarise_regions(
        metrics.region_statistics(student, teacher, torch.tensor([0]), (1, 2), 1.0), (1, 2)
    )
    assert summary["1"]["agreement"] == 1.0 and summary["2"]["agreement"] == 0.25


def test_consistent_and_complementary_fractions():
    labels = torch.tensor([0, 1, 2])
    teacher = _regions([
        [0, 0, 1, 0, 2],  # global right; cells 1 and 3 wrong -> 2 of 4 complementary (global right, cell wrong)
        [2, 1, 2, 2, 2],  # global wrong; cell 0 right -> 1 of 4 complementary (global wrong, cell right)
        [2, 2, 2, 2, 2],  # all consistent
    ])  # fmt: skip
    stats = metrics.region_statistics(teacher, teacher, labels, (1, 2), 1.0)
    summary = metrics.summarise_regions(stats, (1, 2))
    assert summary["1"]["complementary"] == 0.0 and summary["1"]["consistent"] == 1.0
    assert summary["2"]["complementary"] == pytest.approx(0.75 / 3)
    assert summary["2"]["consistent"] == pytest.approx(1 - 0.75 / 3)
    assert summary["2"]["global_right_local_wrong"] == pytest.approx(0.5 / 3)
    assert summary["2"]["global_wrong_local_right"] == pytest.approx(0.25 / 3)
    student_correct = torch.tensor([True, False, True])
    groups = metrics.accuracy_by_complementary(student_correct, stats["complementary"])
    assert groups["with_complementary"] == {"samples": 2, "student_top1": 50.0}
    assert groups["without_complementary"] == {"samples": 1, "student_top1": 100.0}
    none = metrics.accuracy_by_complementary(student_correct, torch.zeros(3, 2))
    assert none["with_complementary"] == {"samples": 0, "student_top1": None}


def test_ece_on_hand_built_confidences():
    # Two samples at confidence 0.9 (one right) and two at 0.7 (both right), K = 2, labels all 0:
    # ECE = 2/4 · |0.5 − 0.9| + 2/4 · |1.0 − 0.7| = 0.35.
    def logits(p: float, predicted: int) -> list[float]:
        pair = [math.log(p), math.log(1 - p)]
        return pair if predicted == 0 else pair[::-1]

    data = torch.tensor([logits(0.9, 0), logits(0.9, 1), logits(0.7, 0), logits(0.7, 0)])
    result = metrics.reliability(data, torch.zeros(4, dtype=torch.long))
    assert result["ece"] == pytest.approx(0.35)
    assert result["counts"][13] == 2 and result["counts"][10] == 2 and sum(result["counts"]) == 4
    assert result["accuracy"][13] == pytest.approx(0.5) and result["confidence"][13] == pytest.approx(0.9)
    assert result["accuracy"][10] == pytest.approx(1.0) and result["confidence"][10] == pytest.approx(0.7)
    assert result["accuracy"][0] is None and result["top1"] == pytest.approx(75.0)
    perfect = metrics.reliability(torch.tensor([[10.0, -10.0]] * 3), torch.zeros(3, dtype=torch.long))
    assert perfect["ece"] == pytest.approx(0.0, abs=1e-8)


def test_per_class_accuracy_and_helped_hurt():
    labels = torch.tensor([0, 0, 1, 1, 1, 2])
    predictions = torch.tensor([0, 1, 1, 1, 0, 0])
    logits = torch.nn.functional.one_hot(predictions, 4).float()
    accuracy = metrics.per_class_accuracy(logits, labels, 4)
    assert accuracy[:3].tolist() == pytest.approx([50.0, 200 / 3, 0.0])
    assert math.isnan(float(accuracy[3]))  # class 3 has no test sample
    baseline = torch.tensor([40.0, 80.0, 0.0, float("nan")])
    changes = metrics.helped_hurt(accuracy, baseline, top=5)
    assert [c["class"] for c in changes["helped"]] == [0] and changes["helped"][0]["delta"] == pytest.approx(10.0)
    assert [c["class"] for c in changes["hurt"]] == [1]
    assert changes["hurt"][0]["delta"] == pytest.approx(200 / 3 - 80)


def test_correlation_difference_of_a_shifted_logit():
    torch.manual_seed(2)
    teacher = torch.randn(40, 4)
    labels = torch.arange(40) % 4
    student = teacher.clone()
    student[:, 1] += 2.0  # every class's mean logit of class 1 moves by 2
    difference = metrics.correlation_difference(student, teacher, labels, 4)
    matrix = difference["matrix"]
    assert matrix[:, 1].tolist() == pytest.approx([2.0, 0.0, 2.0, 2.0])  # the diagonal is zeroed
    assert difference["mean"] == pytest.approx(3 * 2.0 / 12) and difference["max"] == pytest.approx(2.0)


def test_logit_moments_before_and_after_standardisation():
    logits = torch.tensor([[1.0, 2.0, 3.0], [0.0, 0.0, 6.0]])
    moments = metrics.logit_moments(logits)
    assert moments["mean"].tolist() == pytest.approx([2.0, 2.0])
    assert moments["std"].tolist() == pytest.approx([1.0, math.sqrt(12.0)])
    assert moments["mean_standardized"].tolist() == pytest.approx([0.0, 0.0], abs=1e-12)
    assert moments["std_standardized"].tolist() == pytest.approx([1.0, 1.0], abs=1e-6)
    windowed = metrics.shared_histograms({"a": moments["std_standardized"]}, 41, (0.5, 1.5))
    assert windowed["counts"]["a"][20] == 2  # 1 falls in the middle bin


def test_accuracy_by_teacher_std_bins_by_quantile():
    std = torch.arange(10, dtype=torch.float64)
    student_correct = std >= 5
    teacher_correct = torch.ones(10, dtype=torch.bool)
    bins = metrics.accuracy_by_teacher_std(student_correct, teacher_correct, std, bins=2)
    assert bins["samples"] == [5, 5] and bins["student_top1"] == [0.0, 100.0] and bins["teacher_top1"] == [100.0] * 2
    assert bins["std_low"] == [0.0, 5.0] and bins["std_high"] == [4.0, 9.0]


def test_pca_of_points_on_a_line():
    direction = torch.tensor([3.0, 4.0, 0.0], dtype=torch.float64) / 5
    positions = torch.tensor([10.0, 0.0, 1.0, 2.0], dtype=torch.float64)
    for sign in (1.0, -1.0):  # the same cloud mirrored gives the same picture
        points = pca_2d(sign * positions[:, None] * direction + 1.0)
        assert points.shape == (4, 2)
        assert points[:, 1].abs().max() < 1e-9  # one direction of variance
        # centred positions (mean 3.25), the sign chosen so that the largest magnitude is positive
        assert points[:, 0].tolist() == pytest.approx([6.75, -3.25, -2.25, -1.25])


def test_tsne_needs_scikit_learn(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr("sddkd.analysis.embed.have_sklearn", lambda: False)
    assert resolve_method("auto") == "pca"
    with pytest.raises(UserError, match=r"sddkd\[analysis\]"):
        resolve_method("tsne")


def test_tsne_separates_two_clusters():
    pytest.importorskip("sklearn")
    torch.manual_seed(3)
    features = torch.cat([torch.randn(30, 8), torch.randn(30, 8) + 20])
    points = embed_2d(features, "tsne")
    first, second = points[:30].mean(dim=0), points[30:].mean(dim=0)
    spread = max(points[:30].std(dim=0).max(), points[30:].std(dim=0).max())
    assert points.shape == (60, 2) and float((first - second).norm()) > 3 * float(spread)
