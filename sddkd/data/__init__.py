"""The data the engine reads: dataset specs and loaders that yield batches already on the device.

    spec = dataset_spec("cifar100")                      # classes, crop size, mean/std, model geometry
    train, test = build_loaders("cifar100", "data", batch_size=64, device="cuda", seed=0)
    for epoch in range(epochs):
        train.set_epoch(epoch)                           # batches are a pure function of (seed, epoch)
        for images, labels in train: ...                 # float32 [B, 3, H, W] normalized, int64 [B]

`batch_size` is per process. Sharding across DDP ranks is described in `sddkd.data.loader`: training shards
are padded so every rank takes the same number of steps; test shards cover each sample exactly once, so
all-reduce sums of correct predictions and counts after the loop. Both loaders expose `num_samples` (this
rank) and `dataset_size` (the whole split).

Preparing files (download, verification, extraction) lives in `sddkd.download` and `sddkd prepare-data`; they
call the local pieces here: `build_cub_cache`, `cub_cache_ready`, `build_imagenet_index`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, NamedTuple

import torch
from torch import Tensor

from sddkd.config import two_views_problem
from sddkd.data.cifar import read_cifar100_split
from sddkd.data.cub import (
    CubCache,
    build_cub_cache,
    cub_cache_dir,
    cub_cache_ready,
    cub_extracted_dir,
    load_cub_cache,
)
from sddkd.data.imagenet import ImageNetLoader, build_imagenet_index, imagenet_dir
from sddkd.data.loader import ArrayLoader, crop_flip, normalize
from sddkd.data.spec import (
    DATASET_NAMES,
    DataFormatError,
    DataMissingError,
    DatasetSpec,
    dataset_spec,
    synthetic_spec,
)
from sddkd.data.synthetic import SyntheticConfig, SyntheticData, make_synthetic
from sddkd.errors import UserError

Loader = ArrayLoader | ImageNetLoader

__all__ = [
    "DATASET_NAMES",
    "ArrayLoader",
    "DataFormatError",
    "DataMissingError",
    "DatasetSpec",
    "ImageNetLoader",
    "Loader",
    "SyntheticConfig",
    "build_cub_cache",
    "build_imagenet_index",
    "build_loaders",
    "check_two_views",
    "crop_flip",
    "cub_cache_dir",
    "cub_cache_ready",
    "cub_extracted_dir",
    "dataset_spec",
    "imagenet_dir",
    "make_synthetic",
    "normalize",
]


class _ArrayDataset(NamedTuple):
    spec: DatasetSpec
    padding: int  # zero padding before the random train crop (CIFAR: 4)
    drop_last: bool  # drop the final partial train batch (CUB)
    train_images: Tensor  # uint8 [N, 3, H, W]
    train_labels: Tensor  # int64 [N]
    test_images: Tensor
    test_labels: Tensor


def _splits(data: CubCache | SyntheticData) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    return data.train_images, data.train_labels, data.test_images, data.test_labels


def _array_dataset(name: str, root: str | Path, synthetic: SyntheticConfig | Mapping[str, Any] | None) -> _ArrayDataset:
    if name == "cifar100":
        train, test = read_cifar100_split(root, "train"), read_cifar100_split(root, "test")
        return _ArrayDataset(dataset_spec(name), 4, False, *train, *test)
    if name == "cub200":
        return _ArrayDataset(dataset_spec(name), 0, True, *_splits(load_cub_cache(root)))
    if name == "synthetic":
        # 32 px follows the CIFAR path, 224 px the CUB path (stored at 256, random/center 224 crops); both
        # keep the last partial batch so small generated sets lose no step.
        config = SyntheticConfig.from_options(synthetic)
        padding = 4 if config.image_size == 32 else 0
        return _ArrayDataset(synthetic_spec(config), padding, False, *_splits(make_synthetic(config)))
    raise ValueError(f"unknown dataset {name!r}; choose one of {', '.join(DATASET_NAMES)}")


def check_two_views(name: str, synthetic: SyntheticConfig | Mapping[str, Any] | None = None) -> None:
    """Raise UserError unless dataset `name` can serve MLKD's two views (the fact lives with the config's)."""
    size = SyntheticConfig.from_options(synthetic).image_size if name == "synthetic" else None
    problem = two_views_problem(name, size)
    if problem is not None:
        raise UserError(problem)


def build_loaders(
    name: str,
    root: str | Path = "data",
    *,
    batch_size: int,
    device: torch.device | str,
    seed: int,
    rank: int = 0,
    world_size: int = 1,
    synthetic: SyntheticConfig | Mapping[str, Any] | None = None,
    num_workers: int | None = None,
    eval_batch_size: int | None = None,
    two_views: bool = False,
) -> tuple[Loader, Loader]:
    """(train, test) loaders of dataset `name` read from `root` (the data root; unused for synthetic).

    synthetic: the SyntheticConfig (or a mapping of its fields) for name == "synthetic"; defaults when None.
    num_workers: decoding processes per rank for ImageNet (default min(8, CPUs)); array datasets need none.
    eval_batch_size: the test loader's batch (default `batch_size`); evaluation has no gradients to fit.
    two_views: the training loader yields (weak, strong, labels) for MLKD (CIFAR-100 and synthetic only).
    Raises DataMissingError naming the `sddkd prepare-data` command when files are missing.
    """
    device = torch.device(device)
    if two_views:
        check_two_views(name, synthetic)  # before any file is read
    if name == "imagenet":
        spec = dataset_spec(name)
        workers = min(8, os.cpu_count() or 1) if num_workers is None else num_workers

        def imagenet(split: str) -> ImageNetLoader:
            batch = batch_size if split == "train" else (eval_batch_size or batch_size)
            return ImageNetLoader(
                root, split, batch_size=batch, device=device, mean=spec.mean, std=spec.std, seed=seed,
                rank=rank, world_size=world_size, num_workers=workers,
            )  # fmt: skip

        return imagenet("train"), imagenet("val")

    data = _array_dataset(name, root, synthetic)

    def array(images: Tensor, labels: Tensor, train: bool) -> ArrayLoader:
        return ArrayLoader(
            images.to(device), labels, batch_size=batch_size if train else (eval_batch_size or batch_size),
            mean=data.spec.mean, std=data.spec.std,
            train=train, crop_size=data.spec.image_size, padding=data.padding if train else 0,
            drop_last=train and data.drop_last, seed=seed, rank=rank, world_size=world_size,
            two_views=two_views and train,
        )  # fmt: skip

    return array(data.train_images, data.train_labels, True), array(data.test_images, data.test_labels, False)
