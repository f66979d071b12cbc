"""Every method of the registry, each of its variants: its loss against the official code's golden values, and two
training steps on tiny generated data whose mid-epoch resume equals the uninterrupted run bit for bit.

Parametrized over `sddkd.methods`, so a new method module is tested here without editing this file; it must add
its golden values (`GOLDEN` below names which fixture entry serves which base method).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch

import sddkd.engine.faults as faults
from sddkd.config import ConfigError, build_config, load_config
from sddkd.engine.checkpoint import load_checkpoint
from sddkd.engine.distill import SERVED_VIEWS, make_loss_fn
from sddkd.engine.loop import train
from sddkd.losses import standardize
from sddkd.methods import base_methods, config_class_by_name, label_of, method_names, method_of, parse_name
from sddkd.methods.ctkd import reversal_at

FIXTURES = Path(__file__).parent / "fixtures"
LOSS_GOLDEN = json.loads((FIXTURES / "loss_golden.json").read_text())["cases"]
METHODS_GOLDEN = json.loads((FIXTURES / "methods_golden.json").read_text())["cases"]
MLKD_GOLDEN = json.loads((FIXTURES / "mlkd_golden.json").read_text())["cases"]
DISTILLING = [name for name in method_names() if method_of(name).distills]


def f64(values: Any) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float64)


def method_config(name: str, **fields: Any) -> Any:
    return config_class_by_name()[name].model_validate({"name": name, "ce_weight": 1.0, **fields})


# ----------------------------------------------------------------------------------------------------
# Golden values, through the registry (the engine's loss function, float64 inputs)
# Each provider yields (method fields, region student [B,K,N], region teacher, target, expected term value).


def _kd_like(extra: dict[str, Any], expected_m1: str, expected_sdd: str):
    def cases(sdd: bool, lskd: bool):
        for case in LOSS_GOLDEN:
            if case["standardize"] != lskd:
                continue
            student, teacher = f64(case["region_logits_student"]), f64(case["region_logits_teacher"])
            if not sdd:  # single-scale variants see region 0 only
                student, teacher = student[..., :1], teacher[..., :1]
            fields = {"temperature": case["temperature"], **extra, **({"scales": case["scales"]} if sdd else {})}
            yield fields, student, teacher, torch.tensor(case["target"]), case[expected_sdd if sdd else expected_m1]

    return cases


def _nkd(sdd: bool, lskd: bool):
    # No official NKD+LS exists: the _lskd variants are NKD on z-scored logits (test_nkd_lskd_is_nkd_on_z_scored...)
    if not sdd:
        for case in METHODS_GOLDEN["nkd"]:
            student, teacher = f64(case["logits_student"])[..., None], f64(case["logits_teacher"])[..., None]
            for non_target_only, key in ((True, "nkd_non_target_only"), (False, "nkd_all_classes_sdd_code")):
                fields = {"temperature": case["temperature"], "gamma": case["gamma"]}
                fields["non_target_only"] = non_target_only
                yield fields, student, teacher, torch.tensor(case["target"]), case[key]
        return
    for case in METHODS_GOLDEN["sdd_nkd"]:
        student, teacher = f64(case["region_logits_student"]), f64(case["region_logits_teacher"])
        fields = {"temperature": case["temperature"], "gamma": case["gamma"], "non_target_only": False,
                  "scales": case["scales"], "complementary_weight": case["complementary_weight"]}  # fmt: skip
        yield fields, student, teacher, torch.tensor(case["target"]), case["sdd_nkd_all_classes_sdd_code"]


def _ctkd(sdd: bool, lskd: bool):
    for case in METHODS_GOLDEN["ctkd"]:
        if case["standardize"] != lskd:
            continue
        fields = {"t_start": case["t_start"], "t_range": case["t_range"], "theta": case["theta"],
                  "reversal": case["reversal"]}  # fmt: skip
        student, teacher = f64(case["logits_student"])[..., None], f64(case["logits_teacher"])[..., None]
        # sdd_ctkd at M=(1) is CTKD: the golden case on one region
        yield fields, student, teacher, torch.zeros(case["B"], dtype=torch.long), case


def _mlkd(sdd: bool, lskd: bool):
    # The engine hands a two-view method both views stacked along the batch, weak first: [2B, K, N].
    # sdd_mlkd at M=(1) is MLKD: the golden case on one region.
    for case in MLKD_GOLDEN:
        if case["standardize"] != lskd:
            continue
        student = torch.cat([f64(case["student_weak"]), f64(case["student_strong"])])[..., None]
        teacher = torch.cat([f64(case["teacher_weak"]), f64(case["teacher_strong"])])[..., None]
        yield {"temperature": case["temperature"]}, student, teacher, torch.tensor(case["target"]), case


GOLDEN = {
    "kd": _kd_like({}, "kd_loss_on_region0", "sdd_kd_loss_complementary_weight_2"),
    "dkd": _kd_like(
        {"alpha": 1.0, "beta": 8.0},
        "dkd_loss_on_region0_alpha1_beta8",
        "sdd_dkd_loss_alpha1_beta8_complementary_weight_2",
    ),  # fmt: skip
    "nkd": _nkd,
    "ctkd": _ctkd,
    "mlkd": _mlkd,
}


def test_every_distilling_base_method_has_golden_values():
    bases = {m.base for m in base_methods() if m.distills}
    assert bases <= set(GOLDEN), f"add golden values for {sorted(bases - set(GOLDEN))} to tests/test_methods.py"


@pytest.mark.parametrize("name", DISTILLING)
def test_loss_matches_the_official_code(name: str):
    base, sdd, lskd = parse_name(name)
    if base == "nkd" and lskd:
        pytest.skip("the official code has no NKD+LS; test_nkd_lskd_is_nkd_on_z_scored_logits covers it")
    checked = 0
    for fields, student, teacher, target, expected in GOLDEN[base](sdd, lskd):
        if base == "ctkd":
            case = expected
            theta, reversal = fields.pop("theta"), fields.pop("reversal")
            loss_fn = make_loss_fn(method_config(name, **fields))
            assert loss_fn.parameters is not None
            loss_fn.parameters.double()
            with torch.no_grad():
                loss_fn.parameters.theta.fill_(theta)
            student = student.clone().requires_grad_()
            value = loss_fn.terms(student, teacher, target, f64([reversal]))["kd"]
            value.backward()
            assert value.item() == pytest.approx(case["kd_loss"], rel=1e-9)
            grad_theta = loss_fn.parameters.theta.grad
            assert grad_theta is not None and student.grad is not None
            assert grad_theta.item() == pytest.approx(case["grad_theta"], rel=1e-9, abs=1e-15)
            torch.testing.assert_close(student.grad[..., 0], f64(case["grad_logits_student"]), rtol=1e-9, atol=1e-15)
        elif base == "mlkd":  # every term, and the CE of both views (the official CE weight 0.1)
            case = expected
            terms = make_loss_fn(method_config(name, **fields)).terms(student, teacher, target)
            for term in ("kd", "cc", "bc"):
                assert terms[term].item() == pytest.approx(case[term], rel=1e-9, abs=1e-12), term
            # the engine computes its CE in float32 whatever the input (sddkd.engine.distill)
            assert 0.1 * terms["ce"].item() == pytest.approx(case["ce_with_weight_0_1"], rel=1e-6)
        else:
            terms = make_loss_fn(method_config(name, **fields)).terms(student, teacher, target)
            value = terms[method_of(name).terms[0]]
            assert value.item() == pytest.approx(expected, rel=1e-9, abs=1e-12)
        checked += 1
    assert checked, f"no golden case covers {name}"


@pytest.mark.parametrize("name", [n for n in DISTILLING if parse_name(n)[2] and parse_name(n)[0] == "nkd"])
def test_nkd_lskd_is_nkd_on_z_scored_logits(name: str):
    gen = torch.Generator().manual_seed(0)
    student, teacher = (
        torch.randn(4, 7, 3, generator=gen, dtype=torch.float64),
        torch.randn(4, 7, 3, generator=gen, dtype=torch.float64),
    )
    target = torch.tensor([0, 3, 6, 2])
    scales = {"scales": [1, 2]} if parse_name(name)[1] else {}
    if not scales:
        student, teacher = student[..., :1], teacher[..., :1]
    with_z = make_loss_fn(method_config(name, temperature=2.0, gamma=1.5, **scales)).terms(student, teacher, target)
    plain = make_loss_fn(method_config(name.removesuffix("_lskd"), temperature=2.0, gamma=1.5, **scales))
    expected = plain.terms(standardize(student), standardize(teacher), target)
    torch.testing.assert_close(with_z["nkd"], expected["nkd"], rtol=1e-12, atol=0)


# ----------------------------------------------------------------------------------------------------
# The registry's promises


def test_every_base_method_has_its_four_variants_and_a_label():
    for method in base_methods():
        if method.distills:
            assert [n for n in method_names() if parse_name(n)[0] == method.base] == [
                method.base,
                f"{method.base}_lskd",
                f"sdd_{method.base}",
                f"sdd_{method.base}_lskd",
            ]
        assert method.label and method.paper and method.views in SERVED_VIEWS
    assert label_of("sdd_nkd_lskd") == "SD-NKD+LS" and label_of("ctkd") == "CTKD"


def test_an_unknown_method_lists_every_registered_name():
    raw = {"data": {"name": "synthetic"}, "student": "resnet8", "teacher": {"arch": "resnet8"},
           "method": {"name": "mkd", "ce_weight": 1.0}, "optim": {"lr": 0.1}}  # fmt: skip
    with pytest.raises(ConfigError) as error:
        build_config(raw)
    assert all(name in str(error.value) for name in method_names())


def test_ctkd_takes_no_temperature_and_nkd_needs_gamma():
    with pytest.raises(ValueError, match="temperature"):
        method_config("ctkd", temperature=4.0)
    with pytest.raises(ValueError, match="gamma"):
        method_config("nkd", temperature=1.0)
    assert method_config("nkd", temperature=1.0, gamma=1.5).non_target_only is True


def test_ctkd_reversal_follows_the_cosine_schedule():
    cfg = method_config("ctkd")
    assert reversal_at(cfg, 0) == 0.0 and reversal_at(cfg, 10) == -1.0 and reversal_at(cfg, 30) == -1.0
    assert reversal_at(cfg, 5) == pytest.approx(-0.5)
    assert make_loss_fn(cfg).epoch_vector(5) == [1.0, 1.0, reversal_at(cfg, 5)]  # ce, kd weights, then the reversal


# ----------------------------------------------------------------------------------------------------
# Two training steps and a mid-epoch resume, every variant

TINY = {"num_classes": 4, "image_size": 32, "train_per_class": 2, "test_per_class": 1, "seed": 0}


def tiny_raw(method: dict[str, Any], teacher: Path | None) -> dict[str, Any]:
    """8 images, batch 4: one epoch of 2 steps, eager fp32 on the CPU."""
    raw: dict[str, Any] = {
        "data": {"name": "synthetic", "synthetic": dict(TINY)}, "student": "resnet8", "method": method,
        "optim": {"lr": 0.05, "batch_size": 4, "epochs": 1, "lr_decay_epochs": []},
        "engine": {"device": "cpu", "amp": "off", "compile": False, "progress": False},
    }  # fmt: skip
    if teacher is not None:
        raw["teacher"] = {"arch": "resnet8", "checkpoint": str(teacher), "cache": "off"}
    return raw


@pytest.fixture(scope="module")
def teacher(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("teacher")
    record = train(build_config(tiny_raw({"name": "vanilla"}, None)), out)
    assert record["status"] == "finished"
    return out / record["run_name"] / "checkpoints" / "best.pt"


def run_state(root: Path, record: dict[str, Any]) -> dict[str, Any]:
    run_dir = root / record["run_name"]
    checkpoint = load_checkpoint(run_dir / "checkpoints" / "last.pt")
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    for row in rows:
        row.pop("seconds"), row.pop("images_per_s")
    return {"model": checkpoint["model"], "optimizer": checkpoint["optimizer"]["state"], "rows": rows,
            "method_parameters": checkpoint.get("method_parameters")}  # fmt: skip


def same_tensors(a: Any, b: Any) -> bool:
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and torch.equal(a, b)
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(same_tensors(a[k], b[k]) for k in a)
    return bool(a == b)


@pytest.mark.slow
@pytest.mark.parametrize("name", method_names())
def test_two_steps_and_a_mid_epoch_resume_equal_the_uninterrupted_run(
    name: str, teacher: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    base, sdd, _ = parse_name(name)
    distills = method_of(name).distills
    method = {"name": name, "ce_weight": 1.0, **method_of(name).example, **({"scales": [1, 2]} if sdd else {})}
    cfg = build_config(tiny_raw(method, teacher if distills else None))

    straight = train(cfg, tmp_path / "straight")
    assert straight["status"] == "finished" and straight["epochs_done"] == 1
    reference = run_state(tmp_path / "straight", straight)
    assert reference["rows"][0]["steps"] == 2
    assert set(reference["rows"][0]["losses"]) == {"ce", *method_of(name).terms}

    monkeypatch.setattr(faults, "ARMED", ("sigterm", 1))  # a real SIGTERM after the first step
    monkeypatch.setattr(faults, "_arrivals", {})
    stopped = train(cfg, tmp_path / "resumed")
    assert stopped["status"] == "interrupted" and stopped["epochs_done"] == 0
    monkeypatch.setattr(faults, "ARMED", None)
    resumed = train(cfg, tmp_path / "resumed", resume=True)
    assert resumed["status"] == "finished"
    again = run_state(tmp_path / "resumed", resumed)
    assert same_tensors(again, reference)

    if base == "ctkd":  # theta moved, T is in the metrics, and both are the uninterrupted run's
        theta = reference["method_parameters"]["theta"]
        assert theta.dtype == torch.float32 and theta.item() != 1.0
        assert reference["rows"][0]["method_metrics"]["temperature"] > 1.0
    else:
        assert reference["method_parameters"] is None and "method_metrics" not in reference["rows"][0]


def test_ctkd_theta_is_trained_with_weight_decay_in_the_students_optimizer(teacher: Path, tmp_path: Path):
    from sddkd.engine.distill import RegionModel
    from sddkd.engine.step import make_optimizer
    from sddkd.models import create_model

    cfg = build_config(tiny_raw({"name": "ctkd", "ce_weight": 1.0}, teacher))
    loss_fn = make_loss_fn(cfg.method)
    assert loss_fn.parameters is not None
    backbone = create_model("resnet8", num_classes=4, dataset="cifar100")
    model = RegionModel(backbone, (1,), loss_fn.parameters)
    optimizer = make_optimizer(backbone, cfg.optim, torch.device("cpu"), loss_fn.parameters)
    theta = loss_fn.parameters.theta
    assert any(p is theta for p in model.parameters())  # so DDP, which wraps the RegionModel, averages its grad
    (group,) = [g for g in optimizer.param_groups if any(p is theta for p in g["params"])]
    assert group["weight_decay"] == cfg.optim.weight_decay and group["lr"] == cfg.optim.lr
    assert not any(k.startswith("method") for k in backbone.state_dict())  # the published layout is kept


def test_analyze_temperature_comes_from_the_registry(tmp_path: Path):
    from sddkd.analysis.run import run_temperature

    nkd = build_config(tiny_raw({"name": "nkd", "ce_weight": 1.0, "temperature": 3.0, "gamma": 1.5}, tmp_path))
    assert run_temperature(nkd) == 3.0
    ctkd = build_config(tiny_raw({"name": "ctkd", "ce_weight": 1.0}, tmp_path))
    assert run_temperature(ctkd) == pytest.approx(1 + 20 / (1 + torch.e**-1))  # theta's initial value
    (tmp_path / "metrics.jsonl").write_text(json.dumps({"epoch": 1, "method_metrics": {"temperature": 7.5}}) + "\n")
    assert run_temperature(ctkd, tmp_path) == 7.5
    vanilla = load_config("synthetic/vanilla/resnet8")
    assert run_temperature(vanilla) == 1.0


# ----------------------------------------------------------------------------------------------------
# The step stays capturable: one graph, no host sync, no recompile when the epoch (and CTKD's reversal) changes


def _method_step(name: str, device: str) -> Any:
    from sddkd.engine.distill import RegionModel
    from sddkd.engine.distributed import DistContext
    from sddkd.engine.loop import make_train_step
    from sddkd.engine.placement import resolve_placement
    from sddkd.engine.step import make_optimizer, prepare_teacher
    from sddkd.models import create_model

    base, sdd, _ = parse_name(name)
    method = {"name": name, "ce_weight": 1.0, **method_of(name).example, **({"scales": [1, 2]} if sdd else {})}
    raw = tiny_raw(method, Path("unused.pt"))
    raw["engine"]["device"] = device
    cfg = build_config(raw)
    placement = resolve_placement(cfg.engine)
    torch.manual_seed(0)
    teacher = prepare_teacher(create_model("resnet8", num_classes=4), placement)
    backbone = create_model("resnet8", num_classes=4).to(placement.device)
    loss_fn = make_loss_fn(cfg.method, placement.device)
    optimizer = make_optimizer(backbone, cfg.optim, placement.device, loss_fn.parameters)
    student = RegionModel(backbone, cfg.scales, loss_fn.parameters)
    step = make_train_step(cfg, student, teacher, optimizer, placement, DistContext(), loss_fn=loss_fn)
    step.student.train()
    return step


def _strong_view(name: str, images: torch.Tensor) -> dict[str, torch.Tensor]:
    """The step's strong-view argument for a two-view method (MLKD), none for the others."""
    return {"strong": images.flip(-1) * 0.5} if "strong" in method_of(name).views else {}


@pytest.mark.parametrize("name", ["ctkd", "sdd_ctkd_lskd", "nkd", "sdd_nkd_lskd", "mlkd", "sdd_mlkd_lskd"])
def test_the_loss_traces_into_one_graph_reused_across_epochs(name: str):
    """fullgraph=True fails on any graph break (a `.item()`, a host-side branch on a tensor); error_on_recompile
    fails if another epoch's weights or reversal would recompile the step."""
    import torch._dynamo

    step = _method_step(name, "cpu")
    gen = torch.Generator().manual_seed(0)
    images, labels = torch.randn(4, 3, 32, 32, generator=gen), torch.tensor([0, 1, 2, 3])
    strong = _strong_view(name, images)
    torch._dynamo.reset()
    compiled = torch.compile(step.forward_loss, backend="eager", fullgraph=True, dynamic=False)
    with torch._dynamo.config.patch(error_on_recompile=True):
        for epoch in (1, 5, 12):
            weights = step.term_weights(epoch)
            weighted, _ = compiled(images, labels, weights, **strong)
            eager, _ = step.forward_loss(images, labels, weights, **strong)
            torch.testing.assert_close(weighted, eager)
    if parse_name(name)[0] == "ctkd":
        assert step.term_weights(5).shape == (3,) and step.loss_fn.input_names == ("reversal",)


def _ctkd_step_gradients(name: str, backend: str | None, copy_teacher: bool, monkeypatch: pytest.MonkeyPatch):
    """One CTKD forward and backward of the engine's step on the CPU, the live teacher's logits as the engine makes
    them (`teacher_regions`, under no_grad) or, `copy_teacher`, copied first (what CTKD did every step before);
    `backend`: torch.compile's (aot_eager runs AOTAutograd, which saves the teacher's logits for the backward).
    Returns the weighted terms and every gradient (the student's and the temperature's theta)."""
    import torch._dynamo

    import sddkd.engine.step as engine_step

    if copy_teacher:
        live = engine_step.teacher_regions
        monkeypatch.setattr(engine_step, "teacher_regions", lambda *args: live(*args).clone())
    step = _method_step(name, "cpu")
    gen = torch.Generator().manual_seed(0)
    images, labels = torch.randn(4, 3, 32, 32, generator=gen), torch.tensor([0, 1, 2, 3])
    forward = step.forward_loss
    if backend is not None:
        torch._dynamo.reset()
        forward = torch.compile(step.forward_loss, backend=backend, fullgraph=True, dynamic=False)
    weighted, _ = forward(images, labels, step.term_weights(3))  # epoch 3: a non-zero gradient reversal
    weighted.sum().backward()
    grads = {n: p.grad.clone() for n, p in step.student.named_parameters() if p.grad is not None}
    assert "method_parameters.theta" in grads
    return weighted.detach(), grads


@pytest.mark.parametrize("name", ["ctkd", "ctkd_lskd", "sdd_ctkd_lskd"])
def test_ctkd_trains_on_the_teachers_logits_as_they_are(name: str, monkeypatch: pytest.MonkeyPatch):
    """The live teacher runs under no_grad and the cache serves plain tensors, so autograd may save the teacher's
    logits for dL/dT as they are: the same terms and gradients, bit for bit, as with a copy of them; eager and
    through torch.compile's AOTAutograd (backward included) alike."""
    terms, grads = _ctkd_step_gradients(name, None, False, monkeypatch)
    copied_terms, copied_grads = _ctkd_step_gradients(name, None, True, monkeypatch)
    assert torch.equal(terms, copied_terms) and grads.keys() == copied_grads.keys()
    assert all(torch.equal(grads[n], copied_grads[n]) for n in grads)
    monkeypatch.undo()
    compiled_terms, compiled_grads = _ctkd_step_gradients(name, "aot_eager", False, monkeypatch)
    torch.testing.assert_close(compiled_terms, terms, rtol=1e-5, atol=1e-6)
    for n in grads:
        torch.testing.assert_close(compiled_grads[n], grads[n], rtol=1e-4, atol=1e-6)


def test_ctkd_does_not_copy_the_teachers_logits_every_step(monkeypatch: pytest.MonkeyPatch):
    """CTKD's loss reads the teacher's region logits [B, K, N] in place (no per-step clone)."""
    loss_fn = make_loss_fn(method_config("ctkd"))
    gen = torch.Generator().manual_seed(0)
    student = torch.randn(4, 5, 1, generator=gen, requires_grad=True)
    teacher, labels = torch.randn(4, 5, 1, generator=gen), torch.tensor([0, 1, 2, 3])
    copied = []
    clone = torch.Tensor.clone
    monkeypatch.setattr(torch.Tensor, "clone", lambda t, *a, **k: copied.append(t.data_ptr()) or clone(t, *a, **k))
    loss_fn.terms(student, teacher, labels, torch.tensor([-0.5]))["kd"].backward()
    monkeypatch.undo()
    assert teacher.data_ptr() not in copied


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("name", ["ctkd", "sdd_ctkd_lskd", "sdd_nkd", "sdd_mlkd_lskd"])
def test_a_method_step_never_waits_for_the_gpu(name: str):
    """Eager steps under CUDA's sync debug mode: any host synchronisation raises (the learned T included)."""
    step = _method_step(name, "cuda")
    images = torch.randn(4, 3, 32, 32, device="cuda")
    labels = torch.tensor([0, 1, 2, 3], device="cuda")
    weights = step.term_weights(3)
    strong = _strong_view(name, images)
    step(images, labels, weights, **strong)  # warm-up: cuDNN autotuning may synchronise
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        for _ in range(3):
            terms, _, _ = step(images, labels, weights, **strong)
    finally:
        torch.cuda.set_sync_debug_mode(0)
    assert torch.isfinite(terms).all()


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_ctkd_trains_under_cuda_graphs_and_records_its_temperature(teacher: Path, tmp_path: Path):
    raw = tiny_raw({"name": "ctkd_lskd", "ce_weight": 1.0}, teacher)
    raw["engine"].update(device="cuda", compile=True)
    raw["optim"]["epochs"] = 3
    record = train(build_config(raw), tmp_path)
    assert record["status"] == "finished" and record["execution"]["compile"] == "cudagraphs", record["execution"]
    rows = [json.loads(line) for line in (tmp_path / record["run_name"] / "metrics.jsonl").read_text().splitlines()]
    temperatures = [row["method_metrics"]["temperature"] for row in rows]
    assert len(temperatures) == 3 and all(t > 1.0 for t in temperatures) and len(set(temperatures)) == 3


def test_method_metrics_reach_the_trackers():
    from sddkd.engine.tracking import epoch_scalars

    scalars = epoch_scalars({"epoch": 2, "losses": {"ce": 1.0, "kd": 0.5}, "method_metrics": {"temperature": 7.5}})
    assert scalars["method/temperature"] == 7.5 and scalars["loss/kd"] == 0.5


def test_the_readme_table_lists_every_method_with_its_variants():
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    for method in base_methods():
        variants = ", ".join(f"`{n}`" for n in method_names() if method_of(n) is method)
        row = f"| `{method.base}` | {variants} | {method.label} | {method.paper} |"
        assert row in readme, f"README.md's method table needs the row: {row}"


def test_a_method_needing_other_views_is_refused_in_one_line(monkeypatch: pytest.MonkeyPatch):
    import sddkd.engine.distill as distill
    from sddkd.errors import UserError

    class OtherViews(type(method_of("kd"))):  # type: ignore[misc]
        views = ("weak", "mixed")

    monkeypatch.setattr(distill, "method_of", lambda name: OtherViews())
    with pytest.raises(UserError, match="needs the views weak, mixed"):
        make_loss_fn(method_config("kd", temperature=4.0))


@pytest.mark.parametrize("data", [{"name": "cub200"}, {"name": "imagenet"},
                                  {"name": "synthetic", "synthetic": {"image_size": 224}}])  # fmt: skip
def test_mlkd_on_a_dataset_without_the_strong_view_is_refused_in_one_sentence(data: dict[str, Any]):
    raw = {"data": data, "student": "resnet8", "teacher": {"arch": "resnet8"},
           "method": {"name": "sdd_mlkd_lskd", "ce_weight": 0.1, "temperature": 2.0}, "optim": {"lr": 0.1}}  # fmt: skip
    message = "strong view is defined for CIFAR-100 and 32 px synthetic data only"
    with pytest.raises(ConfigError, match=message) as error:
        build_config(raw)
    assert "\n" not in str(error.value)
    raw["method"]["name"] = "sdd_kd_lskd"  # a single-view method trains there
    build_config(raw)


def test_a_step_refuses_a_method_whose_own_parameters_joined_nothing():
    """CTKD's temperature must join the student (DDP) and the optimizer, or it would silently never train."""
    from sddkd.engine.distributed import DistContext
    from sddkd.engine.epoch import make_train_step
    from sddkd.engine.placement import resolve_placement
    from sddkd.engine.step import make_optimizer
    from sddkd.models import create_model

    cfg = build_config(tiny_raw({"name": "ctkd", "ce_weight": 1.0}, None) | {"teacher": {"arch": "resnet8"}})
    backbone = create_model("resnet8", num_classes=4)
    placement = resolve_placement(cfg.engine)
    optimizer = make_optimizer(backbone, cfg.optim, placement.device)
    with pytest.raises(ValueError, match="trains parameters of its own"):
        make_train_step(cfg, backbone, None, optimizer, placement, DistContext())


def test_a_checkpoint_without_the_methods_parameters_is_one_sentence():
    from sddkd.engine.checkpoint import DamagedCheckpointError
    from sddkd.engine.resume import restore_training_state

    theta = make_loss_fn(method_config("ctkd")).parameters
    assert theta is not None
    with pytest.raises(DamagedCheckpointError, match="--restart"):
        backbone = torch.nn.Linear(1, 1)
        restore_training_state({"model": backbone.state_dict(), "optimizer": {}, "rng": {}}, backbone, None, theta)
