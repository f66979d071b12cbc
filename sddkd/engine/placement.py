"""Where a process computes: its device, its precision and memory format, and its data loaders on that device.

The engine, `sddkd eval` and the benchmark resolve an `EngineConfig` here, so they agree on what `auto` means:
CUDA when available, else CPU; bf16 autocast wherever the device computes bf16 natively (Ampere-or-later GPUs,
AVX512-BF16/AMX CPUs), fp32 elsewhere; channels_last on CUDA and CPU.
"""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from sddkd.config import DataConfig, EngineConfig
from sddkd.engine.distributed import DistContext
from sddkd.errors import UserError


@dataclass(frozen=True)
class Placement:
    """Where and in what precision the run computes."""

    device: torch.device
    amp_dtype: torch.dtype | None  # bf16 autocast where the hardware has bf16; losses stay float32 either way
    channels_last: bool

    def autocast(self) -> Any:
        if self.amp_dtype is None:
            return nullcontext()
        return torch.autocast(self.device.type, dtype=self.amp_dtype)

    def images(self, images: Tensor) -> Tensor:
        return images.contiguous(memory_format=torch.channels_last) if self.channels_last else images

    def describe(self) -> dict[str, Any]:
        """What a run record says about where it computed (results in bf16 and fp32 are not bit-comparable)."""
        name = torch.cuda.get_device_name(self.device) if self.device.type == "cuda" else str(self.device)
        precision = "bf16 autocast" if self.amp_dtype == torch.bfloat16 else "fp32"
        described = {"device": name, "precision": precision, "channels_last": self.channels_last}
        if self.device.type == "cuda":  # what the fp32 parts (all of them under amp=off, evaluation always) ran as
            described["tf32"] = tf32_enabled()
        return described


def strict_fp32() -> None:
    """fp32 means fp32 on CUDA: no TF32 in cuDNN convolutions (on by default) or in matmuls.

    Evaluation is promised in fp32 and `amp=off` trains in fp32; TF32 would round their inputs to 10 mantissa bits
    on Ampere and later. Under bf16 autocast the convolutions run in bf16 anyway, so this costs the default nothing.
    The legacy flags, not `fp32_precision`: they exist in every supported torch, and once the newer API has set a
    flag, recent releases refuse to read the legacy cuDNN one (which other code still does)."""
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_tf32 = False


def tf32_enabled() -> bool:
    return bool(torch.backends.cudnn.allow_tf32 or torch.backends.cuda.matmul.allow_tf32)


def native_bf16(device: torch.device) -> bool:
    """Whether `device` computes bf16 in hardware, so that bf16 autocast is a speed-up rather than an emulation:
    CUDA compute capability 8.0+ (Ampere and later; V100/T4 emulate it slowly), AVX512-BF16 or AMX CPUs."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported(including_emulation=False)
    if device.type == "cpu":
        # torch's own CPU feature probes (underscored: if a release drops them, CPUs simply stay in fp32).
        probes = [getattr(torch.cpu, name, None) for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported")]
        return any(probe is not None and probe() for probe in probes)
    return False


def resolve_placement(engine: EngineConfig, local_rank: int | None = None) -> Placement:
    name = engine.device
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"device {name} was asked for but CUDA is not available here; use --device cpu")
    if name.startswith("cuda:") and local_rank is not None:
        raise UserError(f"under torchrun each process takes the GPU of its LOCAL_RANK; pass --device cuda, not {name}")
    if name == "cuda" and local_rank is not None:
        name = f"cuda:{local_rank}"
    device = torch.device(name)
    if device.type == "cuda":
        torch.cuda.set_device(device)
        torch.backends.cudnn.benchmark = True
        strict_fp32()
    auto = torch.bfloat16 if native_bf16(device) else None
    amp = {"auto": auto, "bf16": torch.bfloat16, "off": None}[engine.amp]
    # NHWC is what cuDNN's tensor-core kernels and oneDNN's CPU kernels prefer (no layout reorders per call).
    channels_last = device.type in ("cuda", "cpu") if engine.channels_last is None else engine.channels_last
    return Placement(device, amp, channels_last)


# Evaluation batches hold this many pixels (1,024 CIFAR images): at the training batch a small CIFAR net's
# evaluation is bound by kernel launches, and without gradients the larger batch fits wherever training fits.
# Images of 224 px get the training batch (more than the budget's 20 images). The batch changes no number: every
# image is scored alone (eval-mode BatchNorm), and the counts are exact sums.
EVAL_PIXELS = 1024 * 32 * 32


def eval_batch_size(train_batch: int, image_size: int) -> int:
    return max(train_batch, EVAL_PIXELS // (image_size * image_size))


def build_data(
    data: DataConfig, global_batch: int, device: torch.device, seed: int, dist: DistContext, train: bool = True,
    two_views: bool = False,
) -> tuple[Any, Any, Any]:  # fmt: skip
    """(spec, train loader, test loader) for this rank; the preset's batch is the global batch across ranks.
    two_views: the train loader yields (weak, strong, labels), for a method of two views (MLKD)."""
    from sddkd.data import build_loaders

    if global_batch % dist.world_size:
        raise UserError(
            f"the global batch size {global_batch} does not split evenly over {dist.world_size} processes; "
            "choose a batch size divisible by the number of processes"
        )
    spec = data.spec
    batch = global_batch // dist.world_size
    train_loader, test_loader = build_loaders(
        data.name, data.root, batch_size=batch, device=device, seed=seed, rank=dist.rank,
        world_size=dist.world_size, synthetic=data.synthetic, num_workers=data.num_workers,
        eval_batch_size=eval_batch_size(batch, spec.image_size) if train else batch,  # `sddkd eval` chose its own
        two_views=two_views,
    )  # fmt: skip
    if train and train_loader.dataset_size < dist.world_size:
        raise UserError(
            f"{data.name} has {train_loader.dataset_size} training images, fewer than the {dist.world_size} "
            "processes, so some would train on padding only; use fewer processes"
        )
    if train and len(train_loader) == 0:
        raise UserError(
            f"{data.name} has too few training images for batch {global_batch} on {dist.world_size} processes "
            "(no full step per epoch); lower the batch size or the number of processes"
        )
    return spec, train_loader, test_loader
