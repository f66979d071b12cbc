"""MLKD's training step against the single-view SDD-KD-LSKD step and a loop written the way MLKD's trainer works.

    python -m sddkd.bench --mlkd --device cpu --steps 10     # prints one JSON object
    run_mlkd_bench(device="cpu", steps=10) -> dict          # the same, for `python -m sddkd.bench` to include

All three train the preset's pair (default resnet32x4 -> resnet8x4) from untrained weights on generated
CIFAR-shaped data (100 classes), in one process, on the same device, at the same batch size:
(a) mlkd: the engine's step for the registry's `mlkd_lskd` (`sdd_mlkd_lskd` when --M has more than one scale):
    both views from the device loader's two-view mode (`sddkd.data.strong`: batched RandAugment and Cutout, no
    workers), student and teacher on both views, the fractions f, f' on the device, no host read per step; what
    `sddkd train` runs (`sddkd.bench.core.EngineLoop` over `train_epoch` and `TrainStep`, compiled with --compile).
(b) single_view: the engine's SDD-KD-LSKD step at M = 1,2,4 (`sddkd.bench.core.EngineLoop`, what `sddkd train` runs).
(c) reference: MLKD's official trainer as written: the weak and strong views built with PIL (RandomCrop,
    RandomHorizontalFlip, the FixMatch-style RandAugment and Cutout) in a DataLoader with 2 workers, fp32,
    `nn.DataParallel` on CUDA, `forward_train` operation for operation with its `np.percentile` masks read on the
    host, per-parameter SGD, `.item()` every step. It is MLKD+LS whatever --M says (SDD-MLKD has no reference code).
After a warm-up the loops alternate for `rounds` rounds of `steps` steps; each figure is the median round.
"""

from __future__ import annotations

import random
import statistics
import time
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from sddkd.bench.core import (
    REFERENCE_WORKERS,
    EngineLoop,
    PeakMemory,
    PILDataset,
    _device_name,
    bench_config,
    reference_loader,
    reference_training,
    reference_update,
)
from sddkd.config import RunConfig
from sddkd.data.strong import CUTOUT_FILL, CUTOUT_MAX_FRACTION, OPS_PER_IMAGE, VALUE_RANGES
from sddkd.engine.placement import Placement, resolve_placement
from sddkd.losses import MLKD_FIXED_TEMPERATURES
from sddkd.methods import method_of

# ---------------------------------------------------------------------------------------------------------------
# (a) MLKD on the device


class MlkdLoop(EngineLoop):
    """The engine's step for the registry's MLKD method: the run `sddkd train` builds for `mlkd_lskd` (or
    `sdd_mlkd_lskd` at several scales) on the preset's pair, timed through the engine's `train_epoch`."""

    def __init__(self, cfg: RunConfig, placement: Placement):
        if "strong" not in method_of(cfg.method.name).views:
            raise ValueError(f"MlkdLoop times a two-view method, not {cfg.method.name}")
        super().__init__(cfg, placement)


# ---------------------------------------------------------------------------------------------------------------
# (c) the reference-style loop: MLKD's trainer as written, deliberately not optimized


def _pil_ops() -> list[tuple[Callable[[Any, float], Any], float, float]]:
    """The reference augment list: (op, low, high) in METHOD.md's order and ranges."""
    from PIL import Image, ImageEnhance, ImageOps

    def affine(data: Callable[[Any, float], tuple[float, ...]]) -> Callable[[Any, float], Any]:
        return lambda img, v: img.transform(img.size, Image.AFFINE, data(img, v))

    ops: dict[str, Callable[[Any, float], Any]] = {
        "autocontrast": lambda img, v: ImageOps.autocontrast(img),
        "brightness": lambda img, v: ImageEnhance.Brightness(img).enhance(v),
        "color": lambda img, v: ImageEnhance.Color(img).enhance(v),
        "contrast": lambda img, v: ImageEnhance.Contrast(img).enhance(v),
        "equalize": lambda img, v: ImageOps.equalize(img),
        "identity": lambda img, v: img,
        "posterize": lambda img, v: ImageOps.posterize(img, max(1, int(v))),
        "rotate": lambda img, v: img.rotate(v),
        "sharpness": lambda img, v: ImageEnhance.Sharpness(img).enhance(v),
        "shear_x": affine(lambda img, v: (1, v, 0, 0, 1, 0)),
        "shear_y": affine(lambda img, v: (1, 0, 0, v, 1, 0)),
        "solarize": lambda img, v: ImageOps.solarize(img, v),
        "translate_x": affine(lambda img, v: (1, 0, v * img.size[0], 0, 1, 0)),
        "translate_y": affine(lambda img, v: (1, 0, 0, 0, 1, v * img.size[1])),
    }
    return [(op, *VALUE_RANGES[name]) for name, op in ops.items()]


class ReferenceRandAugment:
    """RandAugment(2) then Cutout on a PIL image, drawing with Python's and numpy's global RNGs like the reference."""

    def __init__(self) -> None:
        self.ops = _pil_ops()

    def __call__(self, img: Any) -> Any:
        from PIL import ImageDraw

        for op, low, high in random.choices(self.ops, k=OPS_PER_IMAGE):
            img = op(img, low + (high - low) * random.random())
        side = random.random() * CUTOUT_MAX_FRACTION * img.size[0]
        if side <= 0:
            return img
        w, h = img.size
        x0 = int(max(0, np.random.uniform(0, w) - side / 2.0))
        y0 = int(max(0, np.random.uniform(0, h) - side / 2.0))
        img = img.copy()
        ImageDraw.Draw(img).rectangle((x0, y0, min(w, x0 + side), min(h, y0 + side)), CUTOUT_FILL)
        return img


class TwoViewPILDataset(torch.utils.data.Dataset):
    """(weak, strong, label) per index, each view through its own torchvision transform, as MLKD's CIFAR-100 set."""

    def __init__(self, images: Tensor, labels: Tensor, weak: Callable[[Any], Tensor], strong: Callable[[Any], Tensor]):
        self.plain = PILDataset(images, labels, lambda img: img)
        self.weak, self.strong = weak, strong

    def __len__(self) -> int:
        return len(self.plain)

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor, int]:
        img, label = self.plain[index]
        return self.weak(img), self.strong(img), label


def reference_kd(student: Tensor, teacher: Tensor, temperature: float, logit_stand: bool) -> Tensor:
    if logit_stand:
        student = (student - student.mean(-1, keepdim=True)) / (1e-7 + student.std(-1, keepdim=True))
        teacher = (teacher - teacher.mean(-1, keepdim=True)) / (1e-7 + teacher.std(-1, keepdim=True))
    log_pred_student = F.log_softmax(student / temperature, dim=1)
    pred_teacher = F.softmax(teacher / temperature, dim=1)
    return F.kl_div(log_pred_student, pred_teacher, reduction="none").sum(1).mean() * temperature**2


def reference_cc(student: Tensor, teacher: Tensor, temperature: float) -> Tensor:
    p_s, p_t = F.softmax(student / temperature, dim=1), F.softmax(teacher / temperature, dim=1)
    return ((torch.mm(p_t.transpose(1, 0), p_t) - torch.mm(p_s.transpose(1, 0), p_s)) ** 2).sum() / teacher.shape[1]


def reference_bc(student: Tensor, teacher: Tensor, temperature: float) -> Tensor:
    p_s, p_t = F.softmax(student / temperature, dim=1), F.softmax(teacher / temperature, dim=1)
    return ((torch.mm(p_t, p_t.transpose(1, 0)) - torch.mm(p_s, p_s.transpose(1, 0))) ** 2).sum() / teacher.shape[0]


def reference_mlkd_terms(
    student_weak: Tensor, student_strong: Tensor, teacher_weak: Tensor, teacher_strong: Tensor, temperature: float,
    logit_stand: bool,
) -> dict[str, Tensor]:  # fmt: skip
    """The official `forward_train`'s kd, cc, bc (KD weight 1) as written: percentile masks read on the host,
    masks multiplying reduced scalars, and the strong view's class and batch terms computed, then left out."""
    pred_teacher_weak = F.softmax(teacher_weak.detach(), dim=1)
    confidence, _ = pred_teacher_weak.max(dim=1)
    conf_thresh = np.percentile(confidence.cpu().numpy().flatten(), 50)  # a host sync every step
    mask = confidence.le(conf_thresh).bool()
    class_confidence = torch.sum(pred_teacher_weak, dim=0).detach()
    class_thresh = np.percentile(class_confidence.cpu().numpy().flatten(), 50)
    class_conf_mask = class_confidence.le(class_thresh).bool()
    temps = (temperature, *MLKD_FIXED_TEMPERATURES)
    kd_weak = sum((reference_kd(student_weak, teacher_weak, t, logit_stand) * mask).mean() for t in temps)
    kd_strong = sum(reference_kd(student_strong, teacher_strong, t, logit_stand) for t in temps[:3])
    kd_strong = kd_strong + sum(reference_kd(student_weak, teacher_weak, t, logit_stand) for t in temps[3:])
    cc_weak = sum((reference_cc(student_weak, teacher_weak, t) * class_conf_mask).mean() for t in temps)
    bc_weak = sum((reference_bc(student_weak, teacher_weak, t) * mask).mean() for t in temps)
    for t in temps:  # computed by the official code, never added to its loss
        (reference_cc(student_strong, teacher_strong, t) * class_conf_mask).mean()
        (reference_bc(student_strong, teacher_strong, t) * mask).mean()
    return {"kd": kd_weak + kd_strong, "cc": cc_weak, "bc": bc_weak}


class ReferenceMlkdDistiller(nn.Module):
    def __init__(self, student: nn.Module, teacher: nn.Module, cfg: RunConfig):
        super().__init__()
        self.student, self.teacher, self.method = student, teacher, cfg.method

    def forward(self, weak: Tensor, strong: Tensor, target: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        method = self.method
        logits_student_weak, logits_student_strong = self.student(weak), self.student(strong)
        with torch.no_grad():
            logits_teacher_weak, logits_teacher_strong = self.teacher(weak), self.teacher(strong)
        loss_ce = method.ce_weight * (
            F.cross_entropy(logits_student_weak, target) + F.cross_entropy(logits_student_strong, target)
        )
        terms = reference_mlkd_terms(
            logits_student_weak, logits_student_strong, logits_teacher_weak, logits_teacher_strong,
            method.temperature, logit_stand=True,
        )  # fmt: skip
        losses = {"loss_ce": loss_ce, **{f"loss_{k}": method.kd_weight * v for k, v in terms.items()}}
        return logits_student_weak, losses


class ReferenceMlkdLoop:
    def __init__(self, cfg: RunConfig, device: torch.device, workers: int, batches: int):
        from torchvision import transforms

        from sddkd.data import make_synthetic

        self.cfg, self.device = cfg, device
        spec, data = cfg.data.spec, make_synthetic(cfg.data.synthetic)
        finish = [transforms.ToTensor(), transforms.Normalize(spec.mean, spec.std)]
        crop = [transforms.RandomCrop(32, padding=4), transforms.RandomHorizontalFlip()]
        weak = transforms.Compose([*crop, *finish])
        strong = transforms.Compose([*crop, ReferenceRandAugment(), *finish])
        dataset = TwoViewPILDataset(data.train_images, data.train_labels, weak, strong)
        self.loader = reference_loader(dataset, cfg, device, workers)
        assert len(self.loader) >= batches, "the reference loop's dataset holds every batch it will time"
        self.distiller, self.student, self.optimizer = reference_training(ReferenceMlkdDistiller, cfg, device)
        self.batches: Iterator[tuple[Tensor, Tensor, Tensor]] = iter(self.loader)
        self.loss_meter: list[float] = []

    def run(self, steps: int) -> float:
        student = self.student.train()
        start = time.perf_counter()
        for _ in range(steps):
            weak, strong, target = next(self.batches)
            weak, strong = weak.to(self.device, non_blocking=True), strong.to(self.device, non_blocking=True)
            target = target.to(self.device, non_blocking=True)
            _, losses = self.distiller(weak, strong, target)
            self.loss_meter.append(reference_update(losses, student, self.optimizer, self.cfg))
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        return time.perf_counter() - start


# ---------------------------------------------------------------------------------------------------------------


def run_mlkd_bench(
    device: str = "auto", steps: int = 10, batch_size: int = 64, pair: str = "res32x4_res8x4", mlkd_scales: str = "1",
    compile: bool = False, amp: str = "auto", warmup: int = 2, rounds: int = 3, workers: int | None = None,
    reference: bool = True,
) -> dict[str, Any]:  # fmt: skip
    """Warm up, then alternate the MLKD, single-view and reference rounds; return one JSON-ready dict."""
    batches = warmup + rounds * steps
    workers = REFERENCE_WORKERS if workers is None else workers
    train_images = batches * batch_size
    single_cfg = bench_config(pair, "1,2,4", batch_size, device, compile, amp, None, train_images, batch_size)
    mlkd_method = "mlkd_lskd" if mlkd_scales.replace(" ", "") == "1" else "sdd_mlkd_lskd"
    mlkd_cfg = bench_config(pair, mlkd_scales, batch_size, device, compile, amp, None, train_images, batch_size,
                            method=mlkd_method)  # fmt: skip
    placement = resolve_placement(single_cfg.engine)
    memory = PeakMemory(placement.device)
    loops: dict[str, Any] = {
        "mlkd": MlkdLoop(mlkd_cfg, placement),
        "single_view": EngineLoop(single_cfg, placement),
    }
    if reference:
        loops["reference"] = ReferenceMlkdLoop(mlkd_cfg, placement.device, workers, batches)
    warmup_seconds = {name: loop.run(warmup) for name, loop in loops.items()}
    times: dict[str, list[float]] = {name: [] for name in loops}
    peaks = dict.fromkeys(loops, 0.0)
    for _ in range(rounds):
        for name, loop in loops.items():
            memory.reset()
            times[name].append(loop.run(steps))
            peaks[name] = max(peaks[name], memory.peak_mb())
    result: dict[str, Any] = {"device": _device_name(placement.device)}
    for name, seconds in times.items():
        per_step = statistics.median(seconds) / steps
        result[name] = {"images_per_s": batch_size / per_step, "ms_per_step": 1000 * per_step,
                        "peak_memory_mb": peaks[name]}  # fmt: skip
    result["mlkd_vs_single_view_step_time"] = result["mlkd"]["ms_per_step"] / result["single_view"]["ms_per_step"]
    if reference:
        result["mlkd_speedup_vs_reference"] = result["reference"]["ms_per_step"] / result["mlkd"]["ms_per_step"]
    result["warmup_seconds"] = warmup_seconds
    result["peak_memory"] = memory.kind + ("; the reference loop's loader workers not counted" if reference else "")
    result["settings"] = {
        "pair": pair, "mlkd_method": mlkd_method, "mlkd_M": mlkd_scales, "single_view_M": "1,2,4",
        "batch_size": batch_size, "steps": steps,
        "rounds": rounds, "warmup": warmup, "compile": compile, "channels_last": placement.channels_last,
        "amp": str(placement.amp_dtype).replace("torch.", "") if placement.amp_dtype else "fp32",
        "reference_workers": workers, "reference_precision": "fp32",
    }  # fmt: skip
    return result
