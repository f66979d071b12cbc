"""The GPU-resident loader for array datasets (CIFAR-100, synthetic, the CUB-200 cache).

The whole uint8 dataset lives as one tensor on the device. Each batch is one gather that indexes, crops (with
zero padding) and flips in a single advanced-indexing op, followed by normalization: no Python loop over
images and no host synchronisation. Shuffling and augmentation parameters for a whole epoch are drawn up front
on the CPU from a torch.Generator seeded by (seed, epoch), so an epoch's batches are a pure function of (seed,
epoch) and identical on every device, and the model's use of the global RNG cannot perturb them.

Sharding over `world_size` processes (DDP):
- train: like DistributedSampler. The epoch permutation (shared by all ranks) is padded by wrapping around to
  a multiple of world_size and rank r takes positions r, r + W, r + 2W, ...; every rank gets ceil(N / W)
  samples and the same number of steps. Augmentation is drawn per global position, so a sample's crop/flip at
  a given position does not depend on the world size.
- test: no shuffling, no padding: rank r takes samples r, r + W, ...; every sample is seen exactly once across
  ranks, so sums of correct predictions and counts all-reduced after the loop give exact metrics. Ranks may
  differ by one sample and hence by at most one step: never put a collective inside the evaluation loop.

Two views (MLKD, opt-in with `two_views=True`, training only): each batch is (weak, strong, labels). The weak
view is exactly the one-view batch; the strong view (its own crop and flip, RandAugment, Cutout; see
sddkd.data.strong) is drawn from a separate stream of the same (seed, epoch), per global position, so turning
it on changes no weak batch and a resumed epoch sees the same strong views.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterator, Sequence

import torch
from torch import Tensor

from sddkd.data.strong import StrongPlan, draw_strong_plan, strong_view
from sddkd.errors import UserError

Batch = tuple[Tensor, Tensor]
TwoViewBatch = tuple[Tensor, Tensor, Tensor]  # weak images, strong images, labels
STRONG_STREAM = "strong"  # the generator stream of the strong view's draws (the weak view's is "data")


def epoch_generator(seed: int, epoch: int, stream: str = "data") -> torch.Generator:
    """A CPU generator whose state depends only on (seed, epoch, stream), the same in every process."""
    digest = hashlib.blake2b(f"sddkd/{stream}/{seed}/{epoch}".encode(), digest_size=8).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest, "little") >> 1)  # 63 bits: a valid seed


def pad_to_multiple(order: Tensor, world_size: int) -> Tensor:
    """Wrap `order` [N] around to length ceil(N / W) * W as DistributedSampler pads (also when W > N)."""
    total = math.ceil(len(order) / world_size) * world_size
    repeats = math.ceil(total / len(order))
    return order.repeat(repeats)[:total]


def eval_shard(dataset_size: int, rank: int, world_size: int) -> Tensor:
    """Indices [n_r] of rank r's evaluation samples: r, r + W, ...; disjoint across ranks and covering all."""
    return torch.arange(rank, dataset_size, world_size)


def crop_flip(
    source: Tensor,
    top: Tensor,
    left: Tensor,
    flip: Tensor,
    *,
    size: int,
    padding: int = 0,
    index: Tensor | None = None,
) -> Tensor:
    """Crop-and-flip a batch with explicit per-image parameters, as one gather.

    source: [N, C, H, W] (any dtype); index: [B] rows of `source` to use (default: all, B = N).
    top, left: [B] int64 crop offsets in the zero-padded image (torchvision RandomCrop(size, padding)
    coordinates, in [0, H + 2 * padding - size]); flip: [B] bool, a horizontal flip applied after the crop.
    Returns [B, C, size, size]; pixels that fall in the padding are 0, like pad(fill=0) before the crop.
    """
    device = source.device
    height, width = source.shape[-2:]
    if index is None:
        index = torch.arange(source.shape[0], device=device)
    steps = torch.arange(size, device=device)
    rows = top[:, None] + steps - padding  # [B, S] source row of each output row
    cols = left[:, None] + steps  # [B, S] padded column of each output column
    cols = torch.where(flip[:, None], cols.flip(1), cols) - padding
    channels = torch.arange(source.shape[1], device=device)
    out = source[
        index[:, None, None, None],
        channels[None, :, None, None],
        rows.clamp(0, height - 1)[:, None, :, None],
        cols.clamp(0, width - 1)[:, None, None, :],
    ]  # [B, C, S, S]
    if padding:
        inside = ((rows >= 0) & (rows < height))[:, None, :, None] & ((cols >= 0) & (cols < width))[:, None, None, :]
        out = out.masked_fill(~inside, 0)
    return out


def normalize(images: Tensor, mean: Tensor, std: Tensor) -> Tensor:
    """uint8 [B, C, H, W] -> float32 ((x / 255) - mean) / std, the same ops as ToTensor + Normalize."""
    return images.float().div_(255).sub_(mean).div_(std)


class ArrayLoader:
    """Batches of (images float32 [B, 3, S, S] normalized, labels int64 [B]) on the device of `images`.

    images: uint8 [N, 3, H, W] already on the target device; labels: int64 [N] (moved to that device).
    train=True: shuffle; random crop of `crop_size` from the image zero-padded by `padding`; random flip.
    train=False: dataset order, no padding; center crop of `crop_size` when smaller than the image.
    drop_last drops a final partial batch (CUB training); else it is kept (CIFAR: 782 steps of 64 for 50,000).
    two_views=True (train only): batches are (weak, strong, labels), the strong view MLKD's (module docstring).
    Call set_epoch(e) before each epoch: batches are a pure function of (seed, e, rank, world_size).
    """

    def __init__(
        self,
        images: Tensor,
        labels: Tensor,
        *,
        batch_size: int,
        mean: Sequence[float],
        std: Sequence[float],
        train: bool,
        crop_size: int,
        padding: int = 0,
        drop_last: bool = False,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        two_views: bool = False,
    ) -> None:
        if two_views and not train:
            raise ValueError("two views are a training augmentation; an evaluation loader has one view")
        if images.dtype != torch.uint8 or images.ndim != 4:
            raise ValueError(f"images must be uint8 [N, C, H, W], got {images.dtype} {list(images.shape)}")
        if labels.shape != images.shape[:1]:
            raise ValueError(f"labels {list(labels.shape)} do not match {images.shape[0]} images")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is outside world size {world_size}")
        if batch_size < 1:
            raise ValueError(f"batch size must be positive, got {batch_size}")
        height, width = images.shape[-2:]
        if crop_size > min(height, width) + (2 * padding if train else 0):
            raise ValueError(f"crop {crop_size} does not fit images {height}x{width} (train padding {padding})")
        self.images = images
        self.device = images.device
        self.labels = labels.to(self.device, torch.int64)
        self.batch_size = batch_size
        self.train = train
        self.crop_size = crop_size
        self.padding = padding
        self.drop_last = drop_last
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self.two_views = two_views
        self.epoch = 0
        self.start_step = 0  # the first batch of the epoch (a resumed epoch continues where it stopped)
        self.mean = torch.tensor(mean, dtype=torch.float32, device=self.device).view(1, -1, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32, device=self.device).view(1, -1, 1, 1)
        self.dataset_size = images.shape[0]
        if train:
            self.num_samples = math.ceil(self.dataset_size / world_size)
        else:
            self.num_samples = len(eval_shard(self.dataset_size, rank, world_size))
        if train and len(self) == 0:
            raise UserError(
                f"{self.num_samples} training samples per process make no full batch of {batch_size}; "
                "lower the batch size or the number of processes"
            )

    def __len__(self) -> int:
        if self.drop_last:
            return self.num_samples // self.batch_size
        return math.ceil(self.num_samples / self.batch_size)

    def set_epoch(self, epoch: int, start_step: int = 0) -> None:
        """Batches of `epoch` from batch `start_step` on: the same batches as steps start_step.. of a full pass."""
        self.epoch = epoch
        self.start_step = start_step

    def epoch_plan(self) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """This epoch's (index, top, left, flip) [n] on the CPU, as `__iter__` uses them: step s's batch is rows
        s*B:(s+1)*B. The teacher-logit cache (sddkd.engine.teacher_cache_serve) looks up each sample's view from it."""
        return self._epoch_plan()

    def _epoch_plan(self) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """This rank's sample indices [n] and crop tops, lefts [n] and flips [n] for the epoch, on the CPU."""
        if not self.train:
            index = eval_shard(self.dataset_size, self.rank, self.world_size)
            height, width = self.images.shape[-2:]
            # Center crop offsets as torchvision's CenterCrop rounds them.
            top = torch.full_like(index, int(round((height - self.crop_size) / 2.0)))
            left = torch.full_like(index, int(round((width - self.crop_size) / 2.0)))
            return index, top, left, torch.zeros_like(index, dtype=torch.bool)
        generator = epoch_generator(self.seed, self.epoch)
        positions = pad_to_multiple(torch.randperm(self.dataset_size, generator=generator), self.world_size)
        height, width = self.images.shape[-2:]
        total = len(positions)
        top = torch.randint(0, height + 2 * self.padding - self.crop_size + 1, (total,), generator=generator)
        left = torch.randint(0, width + 2 * self.padding - self.crop_size + 1, (total,), generator=generator)
        flip = torch.rand(total, generator=generator) < 0.5
        mine = slice(self.rank, total, self.world_size)
        return positions[mine], top[mine], left[mine], flip[mine]

    def strong_plan(self) -> StrongPlan:
        """This epoch's strong-view draws [n] on the CPU, aligned with `epoch_plan` (train loaders only)."""
        if not self.train:
            raise ValueError("only a training loader draws strong views")
        generator = epoch_generator(self.seed, self.epoch, STRONG_STREAM)
        height, width = self.images.shape[-2:]
        total = math.ceil(self.dataset_size / self.world_size) * self.world_size  # the padded epoch length
        plan = draw_strong_plan(
            generator, total, height=height, width=width, crop_size=self.crop_size, padding=self.padding
        )
        return plan.select(slice(self.rank, total, self.world_size))

    def __iter__(self) -> Iterator[Batch] | Iterator[TwoViewBatch]:
        index, top, left, flip = (t.to(self.device, non_blocking=True) for t in self._epoch_plan())
        strong = self.strong_plan().to(self.device) if self.two_views else None
        plain = not self.train and self.crop_size == self.images.shape[-1] == self.images.shape[-2]
        for step in range(self.start_step, len(self)):
            batch = slice(step * self.batch_size, (step + 1) * self.batch_size)
            if plain:
                images = self.images[index[batch]]
            else:
                images = crop_flip(
                    self.images,
                    top[batch],
                    left[batch],
                    flip[batch],
                    size=self.crop_size,
                    padding=self.padding if self.train else 0,  # evaluation never pads
                    index=index[batch],
                )
            labels = self.labels[index[batch]]
            if strong is None:
                yield normalize(images, self.mean, self.std), labels
                continue
            draws = strong.select(batch)
            crops = crop_flip(
                self.images, draws.top, draws.left, draws.flip, size=self.crop_size, padding=self.padding,
                index=index[batch],
            )  # fmt: skip
            strong_images = normalize(strong_view(crops, draws), self.mean, self.std)
            yield normalize(images, self.mean, self.std), strong_images, labels
