"""MLKD's terms against the official MLKD.forward_train (golden values), its SDD variant, and its on-device masks."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from sddkd.losses import kd_loss, median_fraction, mlkd_loss, sdd_kd_loss, sdd_mlkd_loss

GOLDEN = json.loads((Path(__file__).parent / "fixtures" / "mlkd_golden.json").read_text())["cases"]
VIEWS = ("student_weak", "student_strong", "teacher_weak", "teacher_strong")


def _case_id(case: dict) -> str:
    return f"B{case['B']}-K{case['K']}-T{case['temperature']:g}-{'z' if case['standardize'] else 'raw'}"


def _views(case: dict) -> list[torch.Tensor]:
    return [torch.tensor(case[name], dtype=torch.float64) for name in VIEWS]


def _random_views(batch=6, classes=7, regions=5, seed=0, dtype=torch.float64):
    gen = torch.Generator().manual_seed(seed)
    views = [3 * torch.randn(batch, classes, regions, generator=gen, dtype=dtype) for _ in VIEWS]
    return views, torch.randint(0, classes, (batch,), generator=gen)


@pytest.mark.parametrize("case", GOLDEN, ids=_case_id)
def test_mlkd_matches_official_golden_values(case):
    got = mlkd_loss(*_views(case), case["temperature"], standardize=case["standardize"])
    assert set(got) == {"kd", "cc", "bc"}
    for key, value in got.items():
        assert value.dtype == torch.float64 and value.dim() == 0
        assert value.item() == pytest.approx(case[key], rel=1e-9, abs=0), key


def test_golden_cases_cover_both_standardizations_and_an_odd_batch():
    assert {c["standardize"] for c in GOLDEN} == {True, False}
    assert any(c["B"] % 2 for c in GOLDEN)  # the median is then a sample, counted by `<=`


def test_standardize_changes_the_instance_terms_only():
    views, _ = _random_views()
    plain = mlkd_loss(*(v[..., 0] for v in views), 4.0)
    z = mlkd_loss(*(v[..., 0] for v in views), 4.0, standardize=True)
    assert not torch.isclose(plain["kd"], z["kd"])
    assert torch.equal(plain["cc"], z["cc"]) and torch.equal(plain["bc"], z["bc"])


def test_kd_term_follows_the_official_view_and_temperature_layout():
    # kd = f * sum_T KD_T(weak) + KD_{T,3,5}(strong) + KD_{2,6}(weak); f = 0.5 for an even batch without ties.
    views, _ = _random_views(batch=8)
    sw, ss, tw, ts = (v[..., 0] for v in views)
    expected = (
        0.5 * sum(kd_loss(sw, tw, t) for t in (4.0, 3.0, 5.0, 2.0, 6.0))
        + sum(kd_loss(ss, ts, t) for t in (4.0, 3.0, 5.0))
        + sum(kd_loss(sw, tw, t) for t in (2.0, 6.0))
    )
    assert mlkd_loss(sw, ss, tw, ts, 4.0)["kd"].item() == pytest.approx(expected.item(), rel=1e-12)


@pytest.mark.parametrize("standardize", [False, True])
def test_sdd_mlkd_with_one_region_is_mlkd(standardize):
    views, target = _random_views(regions=1)
    sdd = sdd_mlkd_loss(*views, target, 4.0, standardize=standardize)
    plain = mlkd_loss(*(v[..., 0] for v in views), 4.0, standardize=standardize)
    for key in plain:
        assert sdd[key].item() == pytest.approx(plain[key].item(), rel=1e-12), key


def test_sdd_mlkd_weights_each_view_by_its_own_teacher_regions():
    views, target = _random_views(batch=8, regions=5, seed=3)
    sw, ss, tw, ts = views
    t = 4.0
    got = sdd_mlkd_loss(sw, ss, tw, ts, target, t, complementary_weight=3.0, standardize=True)

    def sdd(s, te, temp):
        return sdd_kd_loss(s, te, target, temp, complementary_weight=3.0, standardize=True)

    fraction = median_fraction(torch.softmax(tw[..., 0], dim=1).amax(dim=1))
    expected_kd = (
        fraction * sum(sdd(sw, tw, x) for x in (t, 3.0, 5.0, 2.0, 6.0))
        + sum(sdd(ss, ts, x) for x in (t, 3.0, 5.0))
        + sum(sdd(sw, tw, x) for x in (2.0, 6.0))
    )
    assert got["kd"].item() == pytest.approx(expected_kd.item(), rel=1e-12)
    plain = mlkd_loss(sw[..., 0], ss[..., 0], tw[..., 0], ts[..., 0], t)
    assert torch.equal(got["cc"], plain["cc"]) and torch.equal(got["bc"], plain["bc"])
    # The weights matter: with complementary rows present, weight 1 gives another value.
    assert not torch.isclose(got["kd"], sdd_mlkd_loss(sw, ss, tw, ts, target, t, 1.0, standardize=True)["kd"])


@pytest.mark.parametrize(
    "values",
    [[0.3, 0.1, 0.2], [0.4, 0.1, 0.3, 0.2], [0.2, 0.2, 0.2, 0.9], [0.5, 0.5, 0.5, 0.5], [0.7],
     [0.1, 0.3, 0.3, 0.3, 0.9, 0.0]],
)  # fmt: skip
def test_median_fraction_counts_like_np_percentile(values):
    expected = np.mean(np.array(values) <= np.percentile(np.array(values), 50))
    assert median_fraction(torch.tensor(values, dtype=torch.float64)).item() == pytest.approx(expected, abs=0)


def test_median_fraction_of_random_confidences_matches_numpy():
    gen = torch.Generator().manual_seed(0)
    for size in (5, 8, 64, 100, 127):
        values = torch.rand(size, generator=gen, dtype=torch.float64).round(decimals=1)  # ties on purpose
        expected = np.mean(values.numpy() <= np.percentile(values.numpy(), 50))
        assert median_fraction(values).item() == pytest.approx(expected, abs=0)


def test_mlkd_traces_without_graph_breaks():
    """No .cpu(), .item() or numpy inside: dynamo captures both losses as one graph (a host sync would break it)."""
    views, target = _random_views(dtype=torch.float32)
    eager = mlkd_loss(*(v[..., 0] for v in views), 4.0, standardize=True)
    compiled = torch.compile(mlkd_loss, backend="eager", fullgraph=True)
    traced = compiled(*(v[..., 0] for v in views), 4.0, standardize=True)
    sdd = torch.compile(sdd_mlkd_loss, backend="eager", fullgraph=True)(*views, target, 4.0)
    for key in eager:
        assert torch.allclose(traced[key], eager[key]) and torch.isfinite(sdd[key])


def test_mlkd_computes_in_float32_for_bf16_and_keeps_gradients():
    views, _ = _random_views(dtype=torch.float32)
    sw, ss, tw, ts = (v[..., 0] for v in views)
    sw, ss = sw.clone().requires_grad_(), ss.clone().requires_grad_()
    terms = mlkd_loss(sw.bfloat16(), ss.bfloat16(), tw.bfloat16(), ts.bfloat16(), 4.0)
    assert all(v.dtype == torch.float32 for v in terms.values())
    sum(terms.values()).backward()
    assert sw.grad.abs().sum() > 0 and ss.grad.abs().sum() > 0


@pytest.mark.parametrize(
    "shapes, message",
    [(((4, 10), (4, 10), (4, 10), (4, 9)), "same shape"), (((4, 10), (3, 10), (4, 10), (3, 10)), "weak and strong"),
     (((4, 10, 2), (4, 10, 2), (4, 10, 2), (4, 10, 2)), "[B, K]")],
)  # fmt: skip
def test_mlkd_refuses_mismatched_views(shapes, message):
    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("]", r"\]")):
        mlkd_loss(*(torch.zeros(s) for s in shapes), 4.0)
