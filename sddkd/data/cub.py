"""CUB-200-2011: the decoded cache the GPU-resident loader reads, built once from the extracted archive.

Cache format (directory `<data-root>/cub200_cache/`):
- `train.u8`, `test.u8`: raw uint8 pixels, C-order [N, 3, 256, 256] (RGB, CHW), each image decoded with PIL,
  converted to RGB and resized to 256x256 bilinear exactly as torchvision's Resize((256, 256)) does on PIL
  images.
- `index.json`: {"format": "sddkd-cub200-cache", "version": 1, "image_size": 256, "layout": "NCHW uint8 RGB",
  "classes": [200 names], "splits": {"train": {"file", "shape", "bytes", "sha256", "labels", "images"},
  "test": ...}} with labels = class id - 1 from image_class_labels.txt and images the relative paths from
  images.txt, in images.txt order.
Every file is written to a temporary sibling and renamed; the index is removed first and written last, so a
cache whose index is present and whose files have the recorded sizes is complete. No pickles are involved.
"""

from __future__ import annotations

import hashlib
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import Tensor
from tqdm import tqdm

from sddkd.data.errors import DataFormatError, DataMissingError
from sddkd.datasets import STORED_SIZE_FOR_224
from sddkd.files import read_json, temporary_path, write_json_atomic

CUB_DIRNAME = "CUB_200_2011"
CUB_CACHE_DIRNAME = "cub200_cache"
CACHE_FORMAT = "sddkd-cub200-cache"
CACHE_VERSION = 1
STORED_SIZE = STORED_SIZE_FOR_224  # Resize((256, 256)) before the 224 crop
INDEX_NAME = "index.json"


def cub_extracted_dir(data_root: str | Path) -> Path:
    return Path(data_root) / CUB_DIRNAME


def cub_cache_dir(data_root: str | Path) -> Path:
    return Path(data_root) / CUB_CACHE_DIRNAME


@dataclass(frozen=True)
class CubSplits:
    """The metadata of an extracted CUB tree: class names, and (relative image path, label) per split."""

    base: Path
    classes: list[str]
    train: list[tuple[str, int]]
    test: list[tuple[str, int]]


def _read_table(path: Path) -> dict[int, str]:
    """A `<image or class id> <value>` file as {id: value}."""
    if not path.is_file():
        raise DataMissingError(f"{path} is missing; re-extract CUB-200-2011 with `sddkd prepare-data cub200`")
    table: dict[int, str] = {}
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        key, _, value = line.strip().partition(" ")
        if not key.isdigit() or not value:
            raise DataFormatError(f"{path}:{number} is not '<id> <value>'; re-extract CUB-200-2011")
        table[int(key)] = value.strip()
    return table


def read_cub_splits(extracted_root: str | Path) -> CubSplits:
    """Parse images.txt, image_class_labels.txt, train_test_split.txt and classes.txt.

    extracted_root: the `CUB_200_2011` directory or the directory holding it.
    """
    root = Path(extracted_root)
    base = root / CUB_DIRNAME if (root / CUB_DIRNAME).is_dir() else root
    images = _read_table(base / "images.txt")
    class_ids = _read_table(base / "image_class_labels.txt")
    is_train = _read_table(base / "train_test_split.txt")
    class_table = _read_table(base / "classes.txt")
    classes = [class_table[k] for k in sorted(class_table)]
    if sorted(class_table) != list(range(1, len(classes) + 1)):
        raise DataFormatError(f"{base / 'classes.txt'} must number classes 1..K; re-extract CUB-200-2011")
    if not images.keys() == class_ids.keys() == is_train.keys():
        raise DataFormatError(
            f"images.txt, image_class_labels.txt and train_test_split.txt under {base} list different "
            "image ids; re-extract CUB-200-2011"
        )
    splits: dict[bool, list[tuple[str, int]]] = {True: [], False: []}
    for image_id in sorted(images):
        label = int(class_ids[image_id]) - 1
        if not 0 <= label < len(classes) or is_train[image_id] not in ("0", "1"):
            raise DataFormatError(f"image {image_id} under {base} has a bad class or split; re-extract CUB-200-2011")
        splits[is_train[image_id] == "1"].append((images[image_id], label))
    if not splits[True] or not splits[False]:
        raise DataFormatError(f"{base / 'train_test_split.txt'} leaves a split empty; re-extract CUB-200-2011")
    return CubSplits(base, classes, splits[True], splits[False])


def decode_resized(path: Path, size: int = STORED_SIZE) -> np.ndarray:
    """uint8 [3, size, size]: PIL decode, RGB, bilinear resize as torchvision's Resize((size, size))."""
    with Image.open(path) as image:
        resized = image.convert("RGB").resize((size, size), Image.Resampling.BILINEAR)
    return np.asarray(resized).transpose(2, 0, 1)


def _write_split(base: Path, entries: list[tuple[str, int]], target: Path, progress: bool) -> dict[str, Any]:
    shape = (len(entries), 3, STORED_SIZE, STORED_SIZE)
    paths = [base / "images" / relative for relative, _ in entries]
    for path in paths:
        if not path.is_file():
            raise DataMissingError(f"{path} is missing; re-extract CUB-200-2011 with `sddkd prepare-data cub200`")
    temporary = temporary_path(target)
    digest = hashlib.sha256()
    try:
        pixels = np.memmap(temporary, dtype=np.uint8, mode="w+", shape=shape)
        # PIL releases the GIL while decoding and resizing, so threads use every core.
        with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
            decoded = pool.map(decode_resized, paths)
            for i, image in enumerate(tqdm(decoded, total=len(paths), desc=target.stem, disable=not progress)):
                pixels[i] = image
                digest.update(image.tobytes())
        pixels.flush()
        del pixels
        os.replace(temporary, target)
    finally:
        temporary.unlink(missing_ok=True)
    return {
        "file": target.name,
        "shape": list(shape),
        "bytes": int(np.prod(shape)),
        "sha256": digest.hexdigest(),
        "labels": [label for _, label in entries],
        "images": [relative for relative, _ in entries],
    }


def build_cub_cache(extracted_root: str | Path, cache_dir: str | Path, *, progress: bool = True) -> Path:
    """Decode every CUB image into the cache under `cache_dir` (format above); return `cache_dir`."""
    splits = read_cub_splits(extracted_root)
    cache = Path(cache_dir)
    cache.mkdir(parents=True, exist_ok=True)
    (cache / INDEX_NAME).unlink(missing_ok=True)  # from here on the cache reads as incomplete until the end
    records = {
        name: _write_split(splits.base, entries, cache / f"{name}.u8", progress)
        for name, entries in (("train", splits.train), ("test", splits.test))
    }
    index = {
        "format": CACHE_FORMAT,
        "version": CACHE_VERSION,
        "image_size": STORED_SIZE,
        "layout": "NCHW uint8 RGB",
        "classes": splits.classes,
        "splits": records,
    }
    write_json_atomic(cache / INDEX_NAME, index, compact=True)
    return cache


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(1 << 22):
            digest.update(block)
    return digest.hexdigest()


def _complete_index(cache: Path, verify: bool) -> dict[str, Any] | None:
    """The cache's index if the cache is complete (and, with verify, its checksums match), else None."""
    index = read_json(cache / INDEX_NAME)
    if not isinstance(index, dict) or index.get("format") != CACHE_FORMAT or index.get("version") != CACHE_VERSION:
        return None
    try:
        for name in ("train", "test"):
            record = index["splits"][name]
            path = cache / record["file"]
            n = record["shape"][0]
            if record["shape"] != [n, 3, STORED_SIZE, STORED_SIZE] or len(record["labels"]) != n:
                return None
            if not path.is_file() or path.stat().st_size != record["bytes"]:
                return None
            if verify and _sha256(path) != record["sha256"]:
                return None
    except (KeyError, TypeError, IndexError):
        return None
    return index


def cub_cache_ready(data_root: str | Path, *, verify: bool = False) -> bool:
    """Whether `<data_root>/cub200_cache` is complete; verify=True also recomputes both sha256 sums."""
    return _complete_index(cub_cache_dir(data_root), verify) is not None


@dataclass(frozen=True)
class CubCache:
    """uint8 images [N, 3, 256, 256] (memory-mapped, copy-on-write) and int64 labels [N] of both splits."""

    classes: list[str]
    train_images: Tensor
    train_labels: Tensor
    test_images: Tensor
    test_labels: Tensor


def load_cub_cache(data_root: str | Path) -> CubCache:
    """Memory-map `<data_root>/cub200_cache`; DataMissingError if it is absent or incomplete."""
    cache = cub_cache_dir(data_root)
    index = _complete_index(cache, verify=False)
    if index is None:
        raise DataMissingError(
            f"CUB-200-2011 cache not found under {cache}; run `sddkd prepare-data cub200 --data-root {data_root}`"
        )
    tensors = []
    for name in ("train", "test"):
        record = index["splits"][name]
        # mode "c": pages load lazily and the array is writable (as torch wants) without touching the file.
        pixels = np.memmap(cache / record["file"], dtype=np.uint8, mode="c", shape=tuple(record["shape"]))
        tensors += [torch.from_numpy(pixels), torch.tensor(record["labels"], dtype=torch.int64)]
    return CubCache(index["classes"], *tensors)
