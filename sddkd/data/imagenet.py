"""ImageNet from the user's `<data-root>/imagenet/{train,val}/<class>/<image>` folders (no download: licence).

`build_imagenet_index` checks the folders once and writes `<data-root>/imagenet_index.json`:
{"format": "sddkd-imagenet-index", "version": 1, "classes": [sorted folder names],
 "splits": {"train": {"files": [paths relative to imagenet/], "labels": [...]}, "val": {...}}}.
The loader decodes with PIL in DataLoader workers: train RandomResizedCrop(224) + horizontal flip, val
Resize(256) + CenterCrop(224). Random crop parameters come from a per-sample seed drawn from the (seed, epoch)
generator, never from the global RNG, so batches do not depend on the number of workers. Workers return uint8;
normalization happens on the device. Sharding follows the rules of `sddkd.data.loader`.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torchvision.transforms.functional as TF
from PIL import Image
from torch import Tensor
from torch.utils.data import DataLoader, Dataset
from torchvision.transforms import InterpolationMode

from sddkd.data.errors import DataFormatError, DataMissingError
from sddkd.data.loader import Batch, epoch_generator, eval_shard, normalize, pad_to_multiple
from sddkd.files import read_json, write_json_atomic

IMAGENET_DIRNAME = "imagenet"
INDEX_NAME = "imagenet_index.json"
INDEX_FORMAT = "sddkd-imagenet-index"
INDEX_VERSION = 1
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")
CROP = 224
RESIZE = 256


def imagenet_dir(data_root: str | Path) -> Path:
    return Path(data_root) / IMAGENET_DIRNAME


def imagenet_index_path(data_root: str | Path) -> Path:
    return Path(data_root) / INDEX_NAME


def _class_folders(split_dir: Path, data_root: Path) -> list[str]:
    if not split_dir.is_dir():
        raise DataMissingError(
            f"ImageNet {split_dir.name}/ not found under {split_dir.parent}; put the train/ and val/ class "
            f"folders there and run `sddkd prepare-data imagenet --data-root {data_root}`"
        )
    classes = sorted(entry.name for entry in split_dir.iterdir() if entry.is_dir())
    if not classes:
        raise DataFormatError(f"{split_dir} holds no class folders; ImageNet needs train/<class>/<image> folders")
    return classes


def _list_split(root: Path, split: str, classes: list[str]) -> dict[str, list[Any]]:
    files: list[str] = []
    labels: list[int] = []
    for label, name in enumerate(classes):
        images = sorted(
            entry.name
            for entry in (root / split / name).iterdir()
            if entry.is_file() and entry.name.lower().endswith(IMAGE_EXTENSIONS)
        )
        if not images:
            raise DataFormatError(f"{root / split / name} holds no images; every ImageNet class folder needs some")
        files += [f"{split}/{name}/{image}" for image in images]
        labels += [label] * len(images)
    return {"files": files, "labels": labels}


def build_imagenet_index(data_root: str | Path) -> Path:
    """Check `<data_root>/imagenet/{train,val}` (same non-empty class folders), write the index, return it."""
    root = Path(data_root)
    folder = imagenet_dir(root)
    train_classes = _class_folders(folder / "train", root)
    val_classes = _class_folders(folder / "val", root)
    if train_classes != val_classes:
        only_train = sorted(set(train_classes) - set(val_classes))[:3]
        only_val = sorted(set(val_classes) - set(train_classes))[:3]
        raise DataFormatError(
            f"ImageNet train/ and val/ under {folder} have different class folders (only in train: "
            f"{only_train}, only in val: {only_val}); sort val/ into the same class folders as train/"
        )
    index = {
        "format": INDEX_FORMAT,
        "version": INDEX_VERSION,
        "classes": train_classes,
        "splits": {split: _list_split(folder, split, train_classes) for split in ("train", "val")},
    }
    path = imagenet_index_path(root)
    write_json_atomic(path, index, compact=True)
    return path


def load_imagenet_index(data_root: str | Path) -> dict[str, Any]:
    index = read_json(imagenet_index_path(data_root))
    if not isinstance(index, dict) or index.get("format") != INDEX_FORMAT or index.get("version") != INDEX_VERSION:
        raise DataMissingError(
            f"ImageNet index not found at {imagenet_index_path(data_root)}; "
            f"run `sddkd prepare-data imagenet --data-root {data_root}`"
        )
    return index


def random_resized_crop_box(
    width: int, height: int, generator: torch.Generator, scale: tuple[float, float] = (0.08, 1.0)
) -> tuple[int, int, int, int]:
    """(top, left, height, width) of a RandomResizedCrop box: area fraction in `scale`, aspect 3/4 to 4/3."""
    area = width * height
    log_ratio = (math.log(3 / 4), math.log(4 / 3))
    for _ in range(10):
        target_area = area * (scale[0] + (scale[1] - scale[0]) * torch.rand(1, generator=generator).item())
        aspect = math.exp(log_ratio[0] + (log_ratio[1] - log_ratio[0]) * torch.rand(1, generator=generator).item())
        box_w = int(round(math.sqrt(target_area * aspect)))
        box_h = int(round(math.sqrt(target_area / aspect)))
        if 0 < box_w <= width and 0 < box_h <= height:
            top = int(torch.randint(0, height - box_h + 1, (1,), generator=generator))
            left = int(torch.randint(0, width - box_w + 1, (1,), generator=generator))
            return top, left, box_h, box_w
    # Fallback: the whole image, cropped to the nearest allowed aspect ratio, centered.
    aspect = width / height
    if aspect < 3 / 4:
        box_w, box_h = width, int(round(width / (3 / 4)))
    elif aspect > 4 / 3:
        box_h, box_w = height, int(round(height * (4 / 3)))
    else:
        box_w, box_h = width, height
    return (height - box_h) // 2, (width - box_w) // 2, box_h, box_w


class _ImageFiles(Dataset):
    """Items are (index, augmentation seed) pairs; returns (uint8 [3, 224, 224], label)."""

    def __init__(self, folder: Path, files: list[str], labels: list[int], train: bool) -> None:
        self.folder, self.files, self.labels, self.train = folder, files, labels, train

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, item: tuple[int, int]) -> tuple[Tensor, int]:
        index, seed = item
        with Image.open(self.folder / self.files[index]) as raw:
            image = raw.convert("RGB")
        if self.train:
            generator = torch.Generator().manual_seed(seed)
            top, left, box_h, box_w = random_resized_crop_box(image.width, image.height, generator)
            image = TF.resized_crop(image, top, left, box_h, box_w, [CROP, CROP], InterpolationMode.BILINEAR)
            if torch.rand(1, generator=generator).item() < 0.5:
                image = TF.hflip(image)
        else:
            image = TF.center_crop(TF.resize(image, RESIZE, InterpolationMode.BILINEAR), [CROP, CROP])
        return TF.pil_to_tensor(image), self.labels[index]


@dataclass
class ShardItems:
    """One rank's (sample index, augmentation seed) items for the current epoch: the DataLoader's sampler.

    It holds no reference to the loader, so dropping a loader frees its worker processes at once (a reference
    cycle would leave them to the garbage collector, whose shutdown of persistent workers waits on timeouts).
    """

    dataset_size: int
    train: bool
    seed: int
    rank: int
    world_size: int
    epoch: int = 0
    skip: int = 0  # items of the epoch already trained on (a resumed epoch continues after them)

    def __len__(self) -> int:
        if self.train:
            return math.ceil(self.dataset_size / self.world_size)
        return len(eval_shard(self.dataset_size, self.rank, self.world_size))

    def __iter__(self) -> Iterator[tuple[int, int]]:
        if not self.train:
            return iter([(int(i), 0) for i in eval_shard(self.dataset_size, self.rank, self.world_size)])
        generator = epoch_generator(self.seed, self.epoch)
        order = pad_to_multiple(torch.randperm(self.dataset_size, generator=generator), self.world_size)
        seeds = torch.randint(0, 2**62, (len(order),), generator=generator)  # per global position
        mine = slice(self.rank, len(order), self.world_size)
        items = zip(order[mine].tolist(), seeds[mine].tolist(), strict=True)
        return itertools.islice(items, self.skip, None)


class ImageNetLoader:
    """Batches (float32 [B, 3, 224, 224] normalized, int64 [B] labels) on `device`, decoded in workers."""

    def __init__(
        self,
        data_root: str | Path,
        split: str,
        *,
        batch_size: int,
        device: torch.device | str,
        mean: Sequence[float],
        std: Sequence[float],
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        num_workers: int = 4,
    ) -> None:
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is outside world size {world_size}")
        record = load_imagenet_index(data_root)["splits"][split]
        self.items = ShardItems(len(record["files"]), split == "train", seed, rank, world_size)
        self.dataset_size = self.items.dataset_size
        self.num_samples = len(self.items)
        self.batch_size = batch_size
        self.device = torch.device(device)
        self.mean = torch.tensor(mean, dtype=torch.float32, device=self.device).view(1, -1, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32, device=self.device).view(1, -1, 1, 1)
        dataset = _ImageFiles(imagenet_dir(data_root), record["files"], record["labels"], self.items.train)
        self._batches = DataLoader(
            dataset,
            batch_size=batch_size,
            sampler=self.items,  # any iterable of items serves as a sampler
            num_workers=num_workers,
            pin_memory=self.device.type == "cuda",
            persistent_workers=num_workers > 0,
        )

    def __len__(self) -> int:
        return math.ceil(self.num_samples / self.batch_size)

    def set_epoch(self, epoch: int, start_step: int = 0) -> None:
        """Batches of `epoch` from batch `start_step` on (a resumed epoch)."""
        self.items.epoch = epoch
        self.items.skip = start_step * self.batch_size

    def __iter__(self) -> Iterator[Batch]:
        for images, labels in self._batches:
            images = images.to(self.device, non_blocking=True)
            yield normalize(images, self.mean, self.std), labels.to(self.device, non_blocking=True)
