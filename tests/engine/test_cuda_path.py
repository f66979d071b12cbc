"""What the CUDA path does differently, checked where a CPU can see it: compile defaults and the eager fallback,
the teacher cast once for autocast, evaluation at a large batch, thread bounds of suite children."""

from __future__ import annotations

import io
import os
from pathlib import Path

import pytest
import torch
from rich.console import Console
from torch import nn

from sddkd.config import EngineConfig, load_config
from sddkd.engine.distill import RegionModel, teacher_regions
from sddkd.engine.distributed import DistContext
from sddkd.engine.evaluation import evaluate
from sddkd.engine.loop import make_train_step, train
from sddkd.engine.placement import Placement, build_data, eval_batch_size, resolve_placement
from sddkd.engine.step import cast_for_autocast, make_optimizer, prepare_teacher, resolve_compile
from sddkd.models import create_model
from sddkd.suite.processes import child_env, child_threads

PRESET = "synthetic/sdd_kd_lskd/res20_res8"
TINY = ["data.synthetic.num_classes=5", "data.synthetic.train_per_class=24", "data.synthetic.test_per_class=8",
        "optim.batch_size=32", "engine.progress=false", "engine.device=cpu"]  # fmt: skip


def _randomize_batchnorm(model: nn.Module) -> nn.Module:
    """Non-trivial BatchNorm statistics, so folding (and casting) has something to get wrong."""
    gen = torch.Generator().manual_seed(1)
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.running_mean.copy_(0.1 * torch.randn(module.num_features, generator=gen))
            module.running_var.copy_(0.5 + torch.rand(module.num_features, generator=gen))
            module.weight.data.copy_(1 + 0.1 * torch.randn(module.num_features, generator=gen))
            module.bias.data.copy_(0.1 * torch.randn(module.num_features, generator=gen))
    return model


def test_compile_auto_is_the_default_and_compiles_on_cuda_only():
    assert EngineConfig().compile == "auto"
    assert resolve_compile("auto", torch.device("cuda", 0)) is True
    assert resolve_compile("auto", torch.device("cpu")) is False
    assert resolve_compile(True, torch.device("cpu")) is True and resolve_compile(False, torch.device("cuda")) is False
    assert load_config(PRESET, overrides=["engine.compile=auto"]).engine.compile == "auto"
    assert load_config(PRESET, overrides=["engine.compile=true"]).engine.compile is True


def test_a_failed_compile_trains_eagerly_with_one_warning_and_the_record_says_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    calls = []

    def broken_compile(fn, **kwargs):
        def compiled(*args):
            calls.append(1)
            raise RuntimeError("InductorError: no working C++ compiler found\n(a long traceback follows)")

        return compiled

    monkeypatch.setattr(torch, "compile", broken_compile)
    stream = io.StringIO()
    console = Console(file=stream, width=400)
    cfg = load_config("synthetic/vanilla/resnet8", overrides=[*TINY, "optim.epochs=2", "engine.compile=true"])
    record = train(cfg, tmp_path, console=console)
    assert record["status"] == "finished" and len(calls) == 1, "compiling is tried once, then never again"
    warnings = [line for line in stream.getvalue().splitlines() if "warning:" in line]
    assert len(warnings) == 1 and "no working C++ compiler found" in warnings[0] and "eagerly" in warnings[0]
    assert record["execution"]["compile"] == "eager"
    assert record["execution"]["compile_error"] == "RuntimeError: InductorError: no working C++ compiler found"


def test_the_engine_step_records_what_ran():
    cfg = load_config(PRESET, overrides=[*TINY, "teacher.arch=resnet8"])
    placement = resolve_placement(cfg.engine)
    backbone = create_model("resnet8", num_classes=5)
    optimizer = make_optimizer(backbone, cfg.optim, placement.device)
    step = make_train_step(cfg, RegionModel(backbone, cfg.scales), None, optimizer, placement, DistContext())
    assert step.execution() == {"compile": "eager"} and step.compiled is None, "auto is eager on the CPU"


@pytest.mark.parametrize("arch", ["resnet20", "wrn_16_2"])
def test_the_teacher_cast_once_computes_what_autocast_computes(arch: str):
    """Stored in bf16 once, the folded teacher gives exactly the outputs of autocast casting it every call (WRN
    keeps unfolded pre-activation BatchNorms in float32, as autocast leaves them)."""
    placement = Placement(torch.device("cpu"), torch.bfloat16, channels_last=True)
    torch.manual_seed(0)
    teacher = prepare_teacher(_randomize_batchnorm(create_model(arch, num_classes=10)), placement)
    cast = cast_for_autocast(teacher, torch.bfloat16)
    images = placement.images(torch.randn(6, 3, 32, 32))
    with placement.autocast():
        want = teacher_regions(teacher, images, (1, 2, 4))
        got = teacher_regions(cast, images, (1, 2, 4))
    assert want.dtype == got.dtype == torch.bfloat16
    assert torch.equal(got, want)
    convs = [m for m in cast.modules() if isinstance(m, nn.Conv2d | nn.Linear)]
    assert convs and all(p.dtype == torch.bfloat16 for m in convs for p in m.parameters())
    assert all(p.dtype == torch.float32 for p in teacher.parameters()), "the float32 teacher (evaluated) is untouched"
    norms = [m for m in cast.modules() if isinstance(m, nn.BatchNorm2d)]
    assert all(p.dtype == torch.float32 for m in norms for p in m.parameters())


def test_the_train_step_holds_the_cast_teacher_only_under_autocast():
    cfg = load_config(PRESET, overrides=[*TINY, "teacher.arch=resnet8"])
    for amp, dtype in ((torch.bfloat16, torch.bfloat16), (None, torch.float32)):
        placement = Placement(torch.device("cpu"), amp, channels_last=True)
        teacher = prepare_teacher(create_model("resnet8", num_classes=5), placement)
        backbone = create_model("resnet8", num_classes=5)
        optimizer = make_optimizer(backbone, cfg.optim, placement.device)
        step = make_train_step(cfg, RegionModel(backbone, cfg.scales), teacher, optimizer, placement, DistContext())
        assert step.teacher is not None
        assert {p.dtype for p in step.teacher.get_classifier().parameters()} == {dtype}


def test_evaluation_at_a_large_batch_changes_no_number():
    cfg = load_config(
        PRESET, overrides=["data.synthetic.num_classes=10", "data.synthetic.test_per_class=100", "engine.device=cpu",
                           "engine.amp=off"],
    )  # fmt: skip
    placement, dist = resolve_placement(cfg.engine), DistContext()
    _, _, large = build_data(cfg.data, 64, placement.device, 0, dist)
    _, _, small = build_data(cfg.data, 64, placement.device, 0, dist, train=False)  # `sddkd eval --batch-size 64`
    assert large.batch_size == eval_batch_size(64, 32) == 1024 and small.batch_size == 64
    assert eval_batch_size(256, 224) == 256, "ImageNet-sized images keep the training batch"
    torch.manual_seed(0)
    model = _randomize_batchnorm(create_model("resnet8", num_classes=10)).to(memory_format=torch.channels_last)
    want, got = evaluate(model, small, placement, dist, (1, 2)), evaluate(model, large, placement, dist, (1, 2))
    assert 0 < want["top1"] < 100 and got == want


def test_suite_children_get_bounded_cpu_threads_and_compile_workers(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.delenv("TORCHINDUCTOR_COMPILE_THREADS", raising=False)
    assert child_threads(devices=1, per_device=4, cpus=16) == 4
    assert child_threads(devices=2, per_device=4, cpus=16) == 2
    assert child_threads(devices=1, per_device=32, cpus=16) == 1
    gpu = child_env("0", 4)
    assert gpu["CUDA_VISIBLE_DEVICES"] == "0" and gpu["OMP_NUM_THREADS"] == gpu["TORCHINDUCTOR_COMPILE_THREADS"] == "4"
    cpu = child_env("cpu", 2)
    assert cpu["CUDA_VISIBLE_DEVICES"] == "" and cpu["OMP_NUM_THREADS"] == "2"
    monkeypatch.setenv("OMP_NUM_THREADS", "7")
    assert child_env("0", 4)["OMP_NUM_THREADS"] == "7", "what the user exported wins"


class _FakeCuda:
    """torch.cuda's RNG API over `visible` fake GPUs; a state saved on one process is restored by another."""

    def __init__(self, visible: int, current: int = 0):
        self.visible, self.current = visible, current
        self.states = {i: torch.full((16,), i, dtype=torch.uint8) for i in range(visible)}

    def install(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
        monkeypatch.setattr(torch.cuda, "device_count", lambda: self.visible)
        monkeypatch.setattr(torch.cuda, "current_device", lambda: self.current)
        monkeypatch.setattr(torch.cuda, "get_rng_state", self.get)
        monkeypatch.setattr(torch.cuda, "set_rng_state", self.set)

    def _index(self, device) -> int:
        index = device if isinstance(device, int) else torch.device(device).index
        index = self.current if index is None else index
        if index >= self.visible:
            raise IndexError(f"cuda:{index} is not visible ({self.visible} GPUs)")
        return index

    def get(self, device="cuda"):
        return self.states[self._index(device)].clone()

    def set(self, state, device="cuda"):
        self.states[self._index(device)] = state.clone()


def test_a_resume_restores_the_current_gpus_rng_when_fewer_gpus_are_visible(monkeypatch: pytest.MonkeyPatch):
    """Saved where 4 GPUs were visible (training on cuda:2), resumed by a process that sees one GPU (a suite child
    with its own CUDA_VISIBLE_DEVICES): the RNG state of the device that trained comes back, and nothing fails."""
    from sddkd.engine.checkpoint import rng_state, set_rng_state

    saver = _FakeCuda(visible=4, current=2)
    saver.install(monkeypatch)
    saved = rng_state()
    assert torch.equal(torch.as_tensor(saved["cuda"]), saver.states[2]), "the current device's state is saved"
    resumer = _FakeCuda(visible=1)
    resumer.install(monkeypatch)
    set_rng_state(saved)
    assert torch.equal(resumer.states[0], saver.states[2])


def test_an_older_checkpoint_with_one_rng_state_per_gpu_still_resumes(monkeypatch: pytest.MonkeyPatch):
    from sddkd.engine.checkpoint import set_rng_state

    fake = _FakeCuda(visible=1)
    fake.install(monkeypatch)
    per_gpu = [torch.full((16,), 7 + i, dtype=torch.uint8) for i in range(4)]
    set_rng_state({"torch": torch.get_rng_state(), "cuda": per_gpu})
    assert torch.equal(fake.states[0], per_gpu[0])


class _FailingBackward(torch.autograd.Function):
    """Identity forward whose backward fails, as a lazily compiled backward or a CUDA-graph recording can."""

    @staticmethod
    def forward(ctx, x):
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad):
        raise RuntimeError("Triton Error [CUDA]: an illegal memory access while recording the backward graph")


def _compile_failing_backward_on(call: int, calls: list[int]):
    """A stand-in for torch.compile: the real function, except that on compiled call `call` its backward fails."""

    def fake_compile(fn, **kwargs):
        def compiled(*args):
            calls.append(1)
            weighted, correct = fn(*args)
            return (_FailingBackward.apply(weighted) if len(calls) == call else weighted), correct

        return compiled

    return fake_compile


@pytest.mark.parametrize("call", [1, 2, 3])
def test_a_compile_failing_in_the_backward_of_a_trial_step_trains_eagerly(
    call: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    """The first compiled step compiles the backward inside `backward()`; CUDA graphs record on the second and first
    replay on the third. A failure there trains on eagerly, with one warning, and the record says what ran."""
    calls: list[int] = []
    monkeypatch.setattr(torch, "compile", _compile_failing_backward_on(call, calls))
    stream = io.StringIO()
    cfg = load_config("synthetic/vanilla/resnet8", overrides=[*TINY, "optim.epochs=2", "engine.compile=true"])
    record = train(cfg, tmp_path, console=Console(file=stream, width=400))
    assert record["status"] == "finished" and len(calls) == call, "no compiled call after the failure"
    warnings = [line for line in stream.getvalue().splitlines() if "warning:" in line]
    assert len(warnings) == 1 and "illegal memory access" in warnings[0] and "eagerly" in warnings[0]
    assert record["execution"]["compile"] == "eager" and "Triton Error" in record["execution"]["compile_error"]


def test_a_failure_after_the_trial_steps_is_the_steps_own_and_raises(monkeypatch: pytest.MonkeyPatch):
    from sddkd.engine.step import COMPILE_TRIAL_STEPS

    calls: list[int] = []
    monkeypatch.setattr(torch, "compile", _compile_failing_backward_on(COMPILE_TRIAL_STEPS + 1, calls))
    cfg = load_config("synthetic/vanilla/resnet8", overrides=[*TINY, "engine.compile=true"])
    placement = resolve_placement(cfg.engine)
    backbone = create_model("resnet8", num_classes=5)
    optimizer = make_optimizer(backbone, cfg.optim, placement.device)
    step = make_train_step(cfg, RegionModel(backbone, cfg.scales), None, optimizer, placement, DistContext())
    images, labels = torch.randn(32, 3, 32, 32), torch.randint(0, 5, (32,))
    weights = step.term_weights(1)
    for _ in range(COMPILE_TRIAL_STEPS):
        step(images, labels, weights)
    with pytest.raises(RuntimeError, match="illegal memory access"):
        step(images, labels, weights)
    assert step.mode == "inductor"


def test_the_bench_json_says_what_ran_not_what_was_asked(monkeypatch: pytest.MonkeyPatch):
    from sddkd.bench.core import run_bench

    calls: list[int] = []
    monkeypatch.setattr(torch, "compile", _compile_failing_backward_on(1, calls))
    result = run_bench("cpu", steps=1, batch_size=8, pair="res20_res8", compile=True, warmup=1, rounds=1,
                       baseline=False, measure_eval=False)  # fmt: skip
    assert result["settings"]["compile_requested"] is True and result["settings"]["compile"] == "eager"
    assert result["execution"]["engine"]["compile"] == "eager"
    assert "illegal memory access" in result["execution"]["engine"]["compile_error"]


def test_cuda_runs_fp32_without_tf32_and_the_record_says_so(monkeypatch: pytest.MonkeyPatch):
    """cuDNN runs fp32 convolutions in TF32 by default; evaluation and amp=off promise fp32. The GPU is stood in
    for: the placement only sets the device and reads its name and bf16 support."""
    # Saved and restored by hand: some torch releases serve matmul.allow_tf32 through __getattr__, which
    # monkeypatch cannot undo.
    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = True  # TF32 everywhere, to be undone
    monkeypatch.setattr(torch.backends.cudnn, "benchmark", False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "set_device", lambda device: None)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "Fake GPU")
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: True)
    try:
        placement = resolve_placement(EngineConfig(device="cuda", amp="off"))
        assert placement.amp_dtype is None
        assert torch.backends.cudnn.allow_tf32 is False and torch.backends.cuda.matmul.allow_tf32 is False
        assert placement.describe() == {"device": "Fake GPU", "precision": "fp32", "channels_last": True, "tf32": False}
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved
    assert "tf32" not in resolve_placement(EngineConfig(device="cpu")).describe()


def test_runs_of_the_same_pair_batch_and_m_share_one_persistent_compile_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    """Each process compiled its step cold; runs of the same (pair, batch, M) now point inductor at one folder under
    the sddkd home, before the step compiles. A folder already chosen is kept."""
    monkeypatch.setenv("SDDKD_HOME", str(tmp_path / "home"))

    def step_for(*overrides: str):
        monkeypatch.delenv("TORCHINDUCTOR_CACHE_DIR", raising=False)
        cfg = load_config(PRESET, overrides=[*TINY, "teacher.arch=resnet8", "engine.compile=true", *overrides])
        placement = resolve_placement(cfg.engine)
        backbone = create_model(cfg.student, num_classes=5)
        optimizer = make_optimizer(backbone, cfg.optim, placement.device)
        teacher = prepare_teacher(create_model("resnet8", num_classes=5), placement)
        step = make_train_step(cfg, RegionModel(backbone, cfg.scales), teacher, optimizer, placement, DistContext())
        return step.execution()["compile_cache"], os.environ["TORCHINDUCTOR_CACHE_DIR"]

    first, env = step_for()
    assert first == env and Path(first).is_dir() and Path(first).is_relative_to(tmp_path / "home" / "compile-cache")
    assert step_for("optim.lr=0.01", "optim.epochs=3", "seed=4")[0] == first, "the recipe's other settings share it"
    assert step_for("optim.batch_size=16")[0] != first
    from sddkd.engine.compile_cache import use_compile_cache

    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "mine"))
    assert use_compile_cache("any") == str(tmp_path / "mine")


def test_inductors_own_default_folder_is_not_a_users_choice(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """Importing parts of torch writes inductor's default folder into the environment before the step compiles."""
    from torch._inductor.runtime.cache_dir_utils import default_cache_dir

    from sddkd.engine.compile_cache import use_compile_cache

    monkeypatch.setenv("SDDKD_HOME", str(tmp_path))
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", default_cache_dir())
    assert use_compile_cache("k") == str(tmp_path / "compile-cache" / "k") == os.environ["TORCHINDUCTOR_CACHE_DIR"]
