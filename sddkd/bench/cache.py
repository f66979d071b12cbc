"""`python -m sddkd.bench --cache`: the cached step (teacher logits looked up, only the student runs) and the cost
of building a cache, next to the engine's live step and the reference loop.

The cached loop is the engine's own `train_epoch` + `TrainStep` fed by `CachedTeacherLoader`, exactly what
`sddkd train` runs with `teacher.cache` on. Its cache has the real shape and dtype ([images, 162 views, 100
classes, 16 finest-grid cells] in the teacher's dtype) and goes through the real file, manifest, verification and
memory-mapped gather, but its values are random: a lookup costs the same whatever the numbers, and filling it with
the teacher would take hours on a CPU. The build cost is measured separately, with the real teacher, on
`build_images` images, and reported per 1,000 images.
"""

from __future__ import annotations

import math
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from sddkd.config import RunConfig
from sddkd.engine.distill import RegionModel, make_loss_fn
from sddkd.engine.distributed import DistContext
from sddkd.engine.epoch import make_train_step, train_epoch
from sddkd.engine.placement import Placement, build_data
from sddkd.engine.step import make_optimizer, prepare_teacher
from sddkd.engine.teacher_cache import DTYPES, cache_shape, open_cache
from sddkd.engine.teacher_cache_build import build_cache
from sddkd.engine.teacher_cache_serve import CachedTeacherLoader, ServedCache, run_cache_fields, views_of
from sddkd.models import create_model


def _random_chunk(teacher: Any, images: Tensor, first: int, last: int, views: Any, mean: Any, std: Any,
                  fields: dict[str, Any], placement: Any) -> Tensor:  # fmt: skip
    generator = torch.Generator().manual_seed(first)
    shape = cache_shape(fields, last - first)
    return torch.randn(shape, generator=generator).to(DTYPES[fields["dtype"]])


class CachedLoop:
    """The engine's loop with teacher logits from a cache of `cache_images` training images (epochs repeat)."""

    def __init__(self, cfg: RunConfig, placement: Placement, cache_images: int, build_images: int):
        self.cfg, self.placement, self.dist = cfg, placement, DistContext()
        per_class = math.ceil(cache_images / cfg.data.num_classes)
        data = cfg.data.model_copy(update={"synthetic": cfg.data.synthetic.model_copy(  # type: ignore[union-attr]
            update={"train_per_class": per_class})})  # fmt: skip
        device = placement.device
        _, loader, _ = build_data(data, cfg.optim.batch_size, device, cfg.seed, self.dist)
        torch.manual_seed(cfg.seed)
        backbone = create_model(cfg.student, num_classes=cfg.data.num_classes).to(device)
        if placement.channels_last:
            backbone = backbone.to(memory_format=torch.channels_last)
        assert cfg.teacher is not None
        teacher = prepare_teacher(create_model(cfg.teacher.arch, num_classes=cfg.data.num_classes), placement)
        fields = run_cache_fields(cfg, loader, teacher, None, placement)
        self.folder = tempfile.TemporaryDirectory(prefix="sddkd-bench-cache-")
        root = Path(self.folder.name)
        # The build cost, with the real teacher, on the first `build_images` images.
        start = time.perf_counter()
        build_cache(root / "built", fields, teacher, loader.images[:build_images], placement)
        self.build_seconds_per_1000 = (time.perf_counter() - start) * 1000 / build_images
        directory = build_cache(root / "timed", fields, teacher, loader.images, placement, compute=_random_chunk)
        # Just built, each chunk hashed as it was written: no second pass over the file (as after any build).
        self.served = ServedCache(open_cache(directory, fields, verify=False), cfg.scales, device)
        self.loader = CachedTeacherLoader(loader, self.served, views_of(loader))
        self.cache_bytes = self.served.store.numel() * self.served.store.element_size()
        loss_fn = make_loss_fn(cfg.method, device)  # as the run builds it: a method's own parameters train too
        student = RegionModel(backbone, cfg.scales, loss_fn.parameters)
        optimizer = make_optimizer(backbone, cfg.optim, device, loss_fn.parameters)
        self.step = make_train_step(cfg, student, teacher, optimizer, placement, self.dist, loss_fn=loss_fn)
        self.epoch = 0

    def run(self, steps: int) -> float:
        """Seconds for `steps` optimizer steps, over as many epochs of the cached images as that takes."""
        seconds, done = 0.0, 0
        while done < steps:
            self.epoch += 1
            self.loader.set_epoch(self.epoch)
            stats = train_epoch(self.step, self.loader, self.cfg, 1, self.dist, steps - done)
            seconds, done = seconds + stats.seconds, done + stats.steps
        return seconds

    def describe(self) -> dict[str, Any]:
        return {
            "cache_images": self.loader.dataset_size, "cache_gb": self.cache_bytes / 1e9,
            "cache_dtype": str(self.served.store.dtype).replace("torch.", ""), "residency": self.served.residency,
            "cache_contents": "random values of the real shape (a lookup costs the same); build timed separately",
            "build_seconds_per_1000_images": self.build_seconds_per_1000,
        }  # fmt: skip
