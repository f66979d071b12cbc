"""The data the engine reads: loaders that yield batches already on the device. What is known of a dataset before
its files are read (classes, crop size, mean/std, model geometry) is `sddkd.datasets`.

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
from typing import Any

import torch
from torch import Tensor

from sddkd.data.cifar import read_cifar100_split
from sddkd.data.cub import (
    CubCache,
    build_cub_cache,
    cub_cache_dir,
    cub_cache_ready,
    cub_extracted_dir,
    load_cub_cache,
)
from sddkd.data.errors import DataFormatError, DataMissingError
from sddkd.data.imagenet import ImageNetLoader, build_imagenet_index, imagenet_dir
from sddkd.data.loader import ArrayLoader, crop_flip, normalize
from sddkd.data.synthetic import SyntheticData, make_synthetic
from sddkd.datasets import SyntheticConfig, dataset_spec, synthetic_spec
from sddkd.errors import UserError

Loader = ArrayLoader | ImageNetLoader

__all__ = [
    "ArrayLoader",
    "DataFormatError",
    "DataMissingError",
    "ImageNetLoader",
    "Loader",
    "build_cub_cache",
    "build_imagenet_index",
    "build_loaders",
    "crop_flip",
    "cub_cache_dir",
    "cub_cache_ready",
    "cub_extracted_dir",
    "imagenet_dir",
    "make_synthetic",
    "normalize",
]


Arrays = tuple[Tensor, Tensor, Tensor, Tensor]  # train images, train labels, test images, test labels


def _splits(data: CubCache | SyntheticData) -> Arrays:
    return data.train_images, data.train_labels, data.test_images, data.test_labels


def _read_arrays(name: str, root: str | Path, synthetic: SyntheticConfig | None) -> Arrays:
    """uint8 images [N, 3, H, W] and int64 labels [N] of the train and test splits of an array dataset."""
    if name == "cifar100":
        (train_images, train_labels), test = read_cifar100_split(root, "train"), read_cifar100_split(root, "test")
        return train_images, train_labels, *test
    if name == "cub200":
        return _splits(load_cub_cache(root))
    assert synthetic is not None, "synthetic data is generated from its config"
    return _splits(make_synthetic(synthetic))


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
    config = SyntheticConfig.from_options(synthetic) if name == "synthetic" else None
    spec = dataset_spec(name) if config is None else synthetic_spec(config)  # an unknown name stops here
    if two_views and spec.two_views_problem is not None:
        raise UserError(spec.two_views_problem)  # before any file is read
    crops = spec.train_crops
    if crops is None:  # ImageNet: decoded by CPU workers with a continuous augmentation
        workers = min(8, os.cpu_count() or 1) if num_workers is None else num_workers

        def imagenet(split: str) -> ImageNetLoader:
            batch = batch_size if split == "train" else (eval_batch_size or batch_size)
            return ImageNetLoader(
                root, split, batch_size=batch, device=device, mean=spec.mean, std=spec.std, seed=seed,
                rank=rank, world_size=world_size, num_workers=workers,
            )  # fmt: skip

        return imagenet("train"), imagenet("val")

    train_images, train_labels, test_images, test_labels = _read_arrays(name, root, config)

    def array(images: Tensor, labels: Tensor, train: bool) -> ArrayLoader:
        return ArrayLoader(
            images.to(device), labels, batch_size=batch_size if train else (eval_batch_size or batch_size),
            mean=spec.mean, std=spec.std,
            train=train, crop_size=crops.crop, padding=crops.padding if train else 0,
            drop_last=train and crops.drop_last, seed=seed, rank=rank, world_size=world_size,
            two_views=two_views and train,
        )  # fmt: skip

    return array(train_images, train_labels, True), array(test_images, test_labels, False)
