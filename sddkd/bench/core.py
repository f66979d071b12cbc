"""Training throughput of the engine against a loop written the way the reference trainers work.

The engine's loop, the reference-style baseline and `run_bench`; the command line is `sddkd.bench.__main__`.

Both loops train the preset's pair (default resnet32x4 -> resnet8x4, SDD-KD-LSKD at M = 1,2,4, batch 64) from
untrained weights on generated CIFAR-shaped data (100 classes), in one process, on the same device:
(a) engine: the engine's own `train_epoch` and `TrainStep` with its GPU-resident loader (what `sddkd train` runs);
(b) baseline: what the reference trainers (mdistiller and the SDD code built on it) run: torchvision PIL
    transforms in a DataLoader with mdistiller's 2 workers, fp32, `nn.DataParallel`, the official SDD loss as
    written (vectorised, with its isnan/isinf host checks) and `.item()` every step. It computes the same loss as
    (a) (tests/engine/test_step.py checks it).
After a warm-up the loops alternate for `--rounds` rounds of `--steps` steps; each figure is the median round.
"""

from __future__ import annotations

import ctypes
import math
import os
import platform
import resource
import statistics
import time
from collections.abc import Callable, Iterator
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from sddkd.config import KDMethod, RunConfig, load_config
from sddkd.engine.distill import RegionModel, distill_weight, make_loss_fn
from sddkd.engine.distributed import DistContext
from sddkd.engine.epoch import make_train_step, train_epoch
from sddkd.engine.evaluation import evaluate
from sddkd.engine.placement import Placement, build_data, resolve_placement
from sddkd.engine.step import make_optimizer, prepare_teacher
from sddkd.methods import method_of
from sddkd.models import create_model, region_logits

CIFAR_TRAIN_IMAGES, CIFAR_TEST_IMAGES, EPOCHS = 50_000, 10_000, 240
REFERENCE_WORKERS = 2  # mdistiller's CIFAR-100 loaders (DATASET.NUM_WORKERS), which the SDD code keeps


# ---------------------------------------------------------------------------------------------------------------
# Memory: CUDA's allocator peak, else the process's peak resident memory above its level at the start


class PeakMemory:
    def __init__(self, device: torch.device):
        self.device = device
        self.kind = "cuda max_memory_allocated" if device.type == "cuda" else "max RSS growth of this process"
        self.start_mb = 0.0

    def reset(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            return
        try:  # glibc: hand freed heap pages back, so the start RSS is live memory only
            ctypes.CDLL("libc.so.6").malloc_trim(0)
        except (OSError, AttributeError):
            pass
        try:  # Linux: writing 5 resets the peak RSS (VmHWM), so each loop's peak is its own
            with open("/proc/self/clear_refs", "w") as handle:
                handle.write("5")
        except OSError:
            self.kind = "max RSS growth over the whole process (peak not resettable here)"
        self.start_mb = _rss_mb("VmRSS")

    def peak_mb(self) -> float:
        if self.device.type == "cuda":
            return torch.cuda.max_memory_allocated(self.device) / 2**20
        return max(_rss_mb("VmHWM") - self.start_mb, 0.0)


def _rss_mb(field: str) -> float:
    try:
        with open("/proc/self/status") as handle:
            for line in handle:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) / 1024  # kB
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports kB


# ---------------------------------------------------------------------------------------------------------------
# (a) the engine


class EngineLoop:
    """The run as `sddkd train` builds it, timed through the engine's own `train_epoch`."""

    def __init__(self, cfg: RunConfig, placement: Placement):
        self.cfg, self.placement, self.dist = cfg, placement, DistContext()
        device = placement.device
        two_views = len(method_of(cfg.method.name).views) == 2  # MLKD: (weak, strong, labels) batches, as `train`
        _, self.train_loader, self.test_loader = build_data(cfg.data, cfg.optim.batch_size, device, cfg.seed, self.dist,
                                                            two_views=two_views)  # fmt: skip
        torch.manual_seed(cfg.seed)
        num_classes = cfg.data.num_classes
        self.backbone = create_model(cfg.student, num_classes=num_classes).to(device)
        if placement.channels_last:
            self.backbone = self.backbone.to(memory_format=torch.channels_last)
        assert cfg.teacher is not None
        self.teacher = prepare_teacher(create_model(cfg.teacher.arch, num_classes=num_classes), placement)
        loss_fn = make_loss_fn(cfg.method, device)  # as the run builds it: a method's own parameters train too
        student = RegionModel(self.backbone, cfg.scales, loss_fn.parameters)
        optimizer = make_optimizer(self.backbone, cfg.optim, device, loss_fn.parameters)
        self.step = make_train_step(cfg, student, self.teacher, optimizer, placement, self.dist, loss_fn=loss_fn)

    def run(self, steps: int) -> float:
        """Seconds for `steps` optimizer steps (the epoch's end syncs the device)."""
        self.train_loader.set_epoch(1)
        return train_epoch(self.step, self.train_loader, self.cfg, 1, self.dist, steps).seconds

    def evaluation_images_per_s(self) -> float:
        evaluate(self.backbone, self.test_loader, self.placement, self.dist)  # warm-up
        start = time.perf_counter()
        evaluate(self.backbone, self.test_loader, self.placement, self.dist)
        return self.test_loader.dataset_size / (time.perf_counter() - start)


# ---------------------------------------------------------------------------------------------------------------
# (b) the reference-style baseline: deliberately written the way the reference trainers are, not optimized


class PILDataset(torch.utils.data.Dataset):
    """uint8 [N, 3, H, W] arrays served as PIL images through torchvision transforms, like torchvision's CIFAR100."""

    def __init__(self, images: Tensor, labels: Tensor, transform: Callable[[Any], Tensor]):
        self.images = images.permute(0, 2, 3, 1).contiguous().numpy()  # [N, H, W, 3] as the CIFAR pickles
        self.labels = labels.tolist()
        self.transform = transform

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[Tensor, int]:
        from PIL import Image

        return self.transform(Image.fromarray(self.images[index])), self.labels[index]


def reference_sdd_kd_loss(student: Tensor, teacher: Tensor, target: Tensor, temperature: float, beta: float) -> Tensor:
    """SDD-KD-LSKD the way the official SDD code computes it, operation for operation (vectorised, no per-sample
    loop): z-scored logits (LSKD), region-major rows, an unreduced KL whose NaNs are zeroed through a boolean index,
    the four global/local masks built by boolean assignments, and a host-side isnan/isinf check of the result.
    The boolean indexing and the `if` each wait for the GPU, as they do in the reference trainers."""
    batch, classes, regions = student.shape
    student = (student - student.mean(1, keepdim=True)) / (student.std(1, keepdim=True) + 1e-7)  # LSKD, per row
    teacher = (teacher - teacher.mean(1, keepdim=True)) / (teacher.std(1, keepdim=True) + 1e-7)
    rows_s = student.permute(2, 0, 1).reshape(regions * batch, classes)  # [N*B, K], region-major
    rows_t = teacher.permute(2, 0, 1).reshape(regions * batch, classes)
    target_rows = target.repeat(regions)  # [N*B]
    log_p = F.log_softmax(rows_s / temperature, dim=1)
    q = F.softmax(rows_t / temperature, dim=1)
    elementwise = F.kl_div(log_p, q, reduction="none") * temperature**2  # [N*B, K]
    elementwise[torch.isnan(elementwise)] = 0.0  # boolean-index assignment: a nonzero() on the device, a sync
    loss = elementwise.sum(1)  # [N*B]
    predicted = rows_t.argmax(1)  # [N*B]
    local_right = predicted == target_rows
    global_right = (predicted[:batch] == target).repeat(regions)  # [N*B], region 0 (the global logits) first
    global_right_local_wrong = ~local_right
    global_right_local_wrong[~global_right] = False
    global_right_local_wrong[:batch] = False
    global_wrong_local_right = local_right.clone()
    global_wrong_local_right[global_right] = False
    global_wrong_local_right[:batch] = False
    consistent_wrong = ~local_right
    consistent_wrong[global_right] = False
    consistent_right = local_right.clone()
    consistent_right[~global_right] = False
    weights = torch.zeros_like(loss)
    weights[consistent_wrong] = 1.0
    weights[consistent_right] = 1.0
    weights[global_wrong_local_right] = beta
    weights[global_right_local_wrong] = beta
    total = (loss * weights).sum() / target_rows.shape[0]
    if torch.isnan(total) or torch.isinf(total):  # the reference's guard: two host syncs every step
        total = torch.zeros((), device=total.device)
    return total


class ReferenceDistiller(nn.Module):
    """mdistiller's layout: one module holding student and teacher, forward(images, target) -> (logits, losses)."""

    def __init__(self, student: Any, teacher: Any, cfg: RunConfig):
        super().__init__()
        assert isinstance(cfg.method, KDMethod), "the baseline is written for the KD family (SDD-KD-LSKD)"
        self.student, self.teacher, self.method, self.scales = student, teacher, cfg.method, cfg.scales

    def forward(self, images: Tensor, target: Tensor, epoch: int) -> tuple[Tensor, dict[str, Tensor]]:
        method = self.method
        # Every scale pooled directly from the feature map, as the SDD code's spatial pyramid pooling does.
        patch_s = region_logits(self.student, self.student.forward_features(images), self.scales, shortcut=False)
        with torch.no_grad():
            patch_t = region_logits(self.teacher, self.teacher.forward_features(images), self.scales, shortcut=False)
        loss_ce = method.ce_weight * F.cross_entropy(patch_s[:, :, 0], target)
        kd = reference_sdd_kd_loss(patch_s, patch_t, target, method.temperature, method.complementary_weight)
        loss_kd = distill_weight(method.warmup, epoch) * method.kd_weight * kd
        return patch_s[:, :, 0], {"loss_ce": loss_ce, "loss_kd": loss_kd}


def reference_loader(dataset: Any, cfg: RunConfig, device: torch.device, workers: int) -> Any:
    """The references' DataLoader: shuffled PIL images decoded and augmented by CPU workers."""
    return torch.utils.data.DataLoader(
        dataset, batch_size=cfg.optim.batch_size, shuffle=True, num_workers=workers, pin_memory=device.type == "cuda",
    )  # fmt: skip


def reference_training(
    distiller_class: Callable[[nn.Module, nn.Module, RunConfig], nn.Module], cfg: RunConfig, device: torch.device
) -> tuple[nn.Module, nn.Module, torch.optim.Optimizer]:
    """(distiller, student, optimizer) as the reference trainers build them, from `cfg.seed`."""
    torch.manual_seed(cfg.seed)
    assert cfg.teacher is not None
    student = create_model(cfg.student, num_classes=cfg.data.num_classes)
    teacher = create_model(cfg.teacher.arch, num_classes=cfg.data.num_classes).eval()
    distiller: nn.Module = distiller_class(student, teacher, cfg).to(device)
    if device.type == "cuda":
        index = device.index if device.index is not None else torch.cuda.current_device()
        distiller = nn.DataParallel(distiller, device_ids=[index])  # the references wrap even a single GPU
    optimizer = torch.optim.SGD(
        student.parameters(), lr=cfg.optim.lr, momentum=cfg.optim.momentum,
        weight_decay=cfg.optim.weight_decay, nesterov=cfg.optim.nesterov,
        foreach=False,  # the per-parameter loop of older torch
    )  # fmt: skip
    return distiller, student, optimizer


def reference_update(
    losses: dict[str, Tensor], student: nn.Module, optimizer: torch.optim.Optimizer, cfg: RunConfig
) -> float:
    """One reference optimizer step on the summed losses; the loss read back, a host sync every step as the
    references' meters do."""
    loss = sum(losses.values())
    optimizer.zero_grad()
    loss.backward()  # type: ignore[union-attr]
    if cfg.optim.grad_clip is not None:
        nn.utils.clip_grad_norm_(student.parameters(), cfg.optim.grad_clip, foreach=False)
    optimizer.step()
    return float(loss.item())  # type: ignore[union-attr]


class BaselineLoop:
    def __init__(self, cfg: RunConfig, device: torch.device, workers: int, batches: int):
        from torchvision import transforms

        from sddkd.data import make_synthetic

        self.cfg, self.device = cfg, device
        spec, data = cfg.data.spec, make_synthetic(cfg.data.synthetic)
        transform = transforms.Compose([
            transforms.RandomCrop(32, padding=4), transforms.RandomHorizontalFlip(), transforms.ToTensor(),
            transforms.Normalize(spec.mean, spec.std),
        ])  # fmt: skip
        self.loader = reference_loader(
            PILDataset(data.train_images, data.train_labels, transform), cfg, device, workers
        )
        assert len(self.loader) >= batches, "the baseline's dataset holds every batch it will time"
        self.distiller, self.student, self.optimizer = reference_training(ReferenceDistiller, cfg, device)
        self.batches: Iterator[tuple[Tensor, Tensor]] = iter(self.loader)
        self.loss_meter: list[float] = []
        self.correct = 0

    def run(self, steps: int) -> float:
        student = self.student.train()
        start = time.perf_counter()
        for _ in range(steps):
            images, target = next(self.batches)
            images, target = images.to(self.device, non_blocking=True), target.to(self.device, non_blocking=True)
            logits, losses = self.distiller(images, target, 1)
            self.loss_meter.append(reference_update(losses, student, self.optimizer, self.cfg))
            self.correct += int((logits.argmax(1) == target).sum().cpu())
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        return time.perf_counter() - start


# ---------------------------------------------------------------------------------------------------------------


def bench_config(
    pair: str, scales: str, batch_size: int, device: str, compile: bool, amp: str, channels_last: bool | None,
    train_images: int, test_images: int, method: str | None = None,
) -> RunConfig:  # fmt: skip
    """The preset of `pair` on generated data of CIFAR-100's shape with the given sizes and engine settings;
    `method`: another method name for the preset's method section (its fields must fit, e.g. `mlkd_lskd`)."""
    num_classes = 100
    overrides = [
        f"optim.batch_size={batch_size}", f"engine.device={device}", f"engine.compile={str(compile).lower()}",
        f"engine.amp='{amp}'", "engine.progress=false", f"data.synthetic.num_classes={num_classes}",
        f"data.synthetic.train_per_class={math.ceil(train_images / num_classes)}",
        f"data.synthetic.test_per_class={math.ceil(test_images / num_classes)}",
    ]  # fmt: skip
    if channels_last is not None:
        overrides.append(f"engine.channels_last={str(channels_last).lower()}")
    if method is not None:
        overrides.append(f"method.name={method}")
    preset = pair if "/" in pair else f"sdd_kd_lskd/{pair}"
    return load_config(preset, scales=scales, dataset="synthetic", overrides=overrides)


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return f"{torch.cuda.get_device_name(device)} ({device})"
    model = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as handle:
            model = next(line.split(":", 1)[1].strip() for line in handle if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return f"cpu: {model}, {os.cpu_count()} cores, {torch.get_num_threads()} torch threads"


def run_bench(
    device: str = "auto", steps: int = 30, batch_size: int = 64, pair: str = "res32x4_res8x4", scales: str = "1,2,4",
    compile: bool = True, amp: str = "auto", channels_last: bool | None = None, warmup: int = 5, rounds: int = 3,
    workers: int | None = None, baseline: bool = True, measure_eval: bool = True, cache: bool = False,
    cache_images: int = 1024, build_images: int = 16,
) -> dict[str, Any]:  # fmt: skip
    """Warm up, then alternate engine and baseline rounds; return the figures `python -m sddkd.bench` prints."""
    batches = warmup + rounds * steps  # the baseline's loader runs through them once
    workers = REFERENCE_WORKERS if workers is None else workers
    cfg = bench_config(pair, scales, batch_size, device, compile, amp, channels_last, batches * batch_size,
                       steps * batch_size)  # fmt: skip
    placement = resolve_placement(cfg.engine)
    memory = PeakMemory(placement.device)
    engine = EngineLoop(cfg, placement)
    reference = BaselineLoop(cfg, placement.device, workers, batches) if baseline else None
    cached = None
    if cache:  # the teacher-logit cache's step (sddkd.bench.cache); built before any timing
        from sddkd.bench.cache import CachedLoop

        cached = CachedLoop(cfg, placement, cache_images, build_images)
    warmup_seconds = {"engine": engine.run(warmup)}  # includes compiling the step (and cuDNN autotuning)
    if reference is not None:
        warmup_seconds["baseline"] = reference.run(warmup)
    if cached is not None:
        warmup_seconds["cached"] = cached.run(warmup)
    times: dict[str, list[float]] = {"engine": [], "baseline": [], "cached": []}
    peaks: dict[str, float] = {"engine": 0.0, "baseline": 0.0, "cached": 0.0}
    loops: tuple[tuple[str, Any], ...] = (("engine", engine), ("baseline", reference), ("cached", cached))
    for _ in range(rounds):
        for name, loop in loops:
            if loop is None:
                continue
            memory.reset()
            times[name].append(loop.run(steps))
            peaks[name] = max(peaks[name], memory.peak_mb())
    result: dict[str, Any] = {"device": _device_name(placement.device)}
    for name, seconds in times.items():
        if seconds:
            per_step = statistics.median(seconds) / steps
            result[name] = {"images_per_s": batch_size / per_step, "ms_per_step": 1000 * per_step,
                            "peak_memory_mb": peaks[name]}  # fmt: skip
    result["ratio"] = result["engine"]["images_per_s"] / result["baseline"]["images_per_s"] if baseline else None
    result["warmup_seconds"] = warmup_seconds
    # What the warm-up cost beyond its steps at the timed rate: compiling, CUDA-graph capture, autotuning.
    result["engine_startup_seconds"] = max(
        warmup_seconds["engine"] - warmup * result["engine"]["ms_per_step"] / 1000, 0
    )
    if cached is not None:
        result["cached_vs_engine"] = result["cached"]["images_per_s"] / result["engine"]["images_per_s"]
        if baseline:
            result["cached_vs_baseline"] = result["cached"]["images_per_s"] / result["baseline"]["images_per_s"]
        result["cache"] = cached.describe()
    steps_per_epoch = math.ceil(CIFAR_TRAIN_IMAGES / batch_size)
    epoch_seconds = steps_per_epoch * result["engine"]["ms_per_step"] / 1000
    if measure_eval:
        eval_images_per_s = engine.evaluation_images_per_s()
        result["evaluation_images_per_s"] = eval_images_per_s
        epoch_seconds += CIFAR_TEST_IMAGES / eval_images_per_s
    result["estimated_240_epoch_minutes"] = EPOCHS * epoch_seconds / 60
    result["estimate"] = (
        f"engine ms/step x {steps_per_epoch} steps" + (" + evaluation of 10,000 images" if measure_eval else "")
        + f", x {EPOCHS} epochs"
    )  # fmt: skip
    result["peak_memory"] = memory.kind + ("; the baseline's loader workers not counted" if baseline else "")
    result["settings"] = {
        "pair": pair, "M": scales, "batch_size": batch_size, "steps": steps, "rounds": rounds, "warmup": warmup,
        "compile_requested": cfg.engine.compile, "compile": engine.step.mode,
        "amp": str(placement.amp_dtype).replace("torch.", "") if placement.amp_dtype
        else "fp32", "channels_last": placement.channels_last, "baseline_workers": workers,
    }  # fmt: skip
    # What ran, not what was asked for: a compile that failed during its trial steps trained eagerly.
    result["execution"] = {"engine": engine.step.execution(), **({"cached": cached.step.execution()} if cached else {})}
    return result
