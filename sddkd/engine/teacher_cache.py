"""The exact teacher-logit cache: the frozen teacher's region logits for every (training image, augmentation view),
computed once and then looked up, with the same numbers, by every later run.

Exact because the teacher is frozen and in eval mode, and CIFAR's training augmentation (zero-pad 4, crop 32,
flip) has only 9 * 9 * 2 = 162 views per image. A view is v = (top * n_left + left) * 2 + flip, in the loader's
crop coordinates (`sddkd.data.loader.crop_flip`).

What is stored: when the head derives every scale from the finest grid (`models.heads.finest_grid_applies`: the
CIFAR nets at any M whose scales divide the largest), only the f*f finest-grid cell logits; coarser cells are their
means, computed at serving time by the very function the head uses (`regions_from_finest_grid`), so M = (1,2,4),
(1,4) and (4,) share one cache. Otherwise the N region logits of that M. Values keep the dtype the teacher's forward
produces under the run's precision: bf16 under bf16 autocast, fp32 otherwise.

The key is everything that determines the numbers: the teacher checkpoint's sha256, the training data's fingerprint
(its uint8 pixels and labels), the view definition (padding, crop, flip, normalization), the stored regions, dtype
and precision, BatchNorm folding and the device type, plus on CUDA the GPU model, torch and cuDNN. Any change gives
another directory, so stale logits are never served. Layout, under `<SDDKD_HOME>/teacher_cache/<arch>-<key>/`:

    manifest.json   the key's fields, shape [N, V, K, R], dtype, chunk size and each chunk's sha256
    logits.bin      the raw values, [N, V, K, R] row-major, native byte order

A build (`teacher_cache_build.py`) writes into `<name>.partial/` and renames the folder when complete; a lock file
keeps two builders apart. Opening a cache checks its size and every chunk's checksum once; later opens trust a stamp
(`verified.json`: the size, inode and mtime the verified file had) while the file is unchanged.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import math
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from sddkd.engine.placement import Placement
from sddkd.errors import UserError
from sddkd.files import write_json_atomic
from sddkd.models.heads import finest_grid_applies
from sddkd.scales import Scales

FORMAT = 1
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


class CacheDamagedError(UserError):
    """A cache folder whose files do not match its manifest (truncated, edited, half-deleted)."""


class NotEnoughDiskError(UserError):
    """Too little free space for a cache: raised before any of it is computed, or when the disk fills up anyway
    (a `.partial` build then stays, to resume from its last chunk)."""


@dataclass(frozen=True)
class Views:
    """The finite training augmentation of an array dataset: crop `crop` of the image zero-padded by `padding`,
    then a horizontal flip or not; images are normalized with `mean`/`std` before the teacher sees them."""

    height: int
    width: int
    crop: int
    padding: int
    mean: tuple[float, ...]
    std: tuple[float, ...]

    @property
    def n_top(self) -> int:
        return self.height + 2 * self.padding - self.crop + 1

    @property
    def n_left(self) -> int:
        return self.width + 2 * self.padding - self.crop + 1

    @property
    def count(self) -> int:
        return self.n_top * self.n_left * 2

    def index(self, top: Tensor, left: Tensor, flip: Tensor) -> Tensor:
        """View numbers [B] int64 of the loader's crop offsets and flips."""
        return (top * self.n_left + left) * 2 + flip.long()

    def describe(self) -> dict[str, Any]:
        return {"image": [self.height, self.width], "crop": self.crop, "padding": self.padding, "flip": True,
                "mean": list(self.mean), "std": list(self.std)}  # fmt: skip


def views_of(loader: Any) -> Views:
    """The views of a training `ArrayLoader`."""
    height, width = loader.images.shape[-2:]
    mean, std = loader.mean.flatten().tolist(), loader.std.flatten().tolist()
    return Views(int(height), int(width), loader.crop_size, loader.padding, tuple(mean), tuple(std))


# ---------------------------------------------------------------------------------------------------------------
# The key


def data_fingerprint(images: Tensor, labels: Tensor) -> str:
    """sha256 of the training split: shape, uint8 pixels and int64 labels, in dataset order."""
    digest = hashlib.sha256(json.dumps([list(images.shape), list(labels.shape)]).encode())
    digest.update(images.cpu().contiguous().numpy().tobytes())
    digest.update(labels.cpu().to(torch.int64).contiguous().numpy().tobytes())
    return digest.hexdigest()


def state_dict_sha256(model: nn.Module) -> str:
    """sha256 of a network's parameters and buffers, for a teacher that does not come from a file (benchmarks)."""
    digest = hashlib.sha256()
    for name, value in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(value.detach().cpu().flatten().contiguous().view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def stored_regions(teacher: nn.Module, views: Views, scales: Scales, device: torch.device) -> dict[str, Any]:
    """What the cache stores for `scales`: the finest grid when the head derives every scale from it, else the
    regions of exactly these scales. The teacher's feature map size comes from one forward of a blank crop."""
    with torch.inference_mode():
        features = teacher.forward_features(torch.zeros(1, 3, views.crop, views.crop, device=device))  # type: ignore[operator]
    height, width = features.shape[-2:]
    if finest_grid_applies(teacher.get_classifier(), height, width, scales):  # type: ignore[operator]
        return {"layout": "finest_grid", "grid": max(scales)}
    return {"layout": "scales", "scales": list(scales)}


def cache_fields(
    *, teacher_arch: str, teacher_sha256: str, data_sha256: str, views: Views, regions: dict[str, Any],
    placement: Placement, bn_folded: bool, num_classes: int,
) -> dict[str, Any]:  # fmt: skip
    """Every input that determines a cache's numbers (the key is their hash)."""
    precision = placement.describe()["precision"]
    dtype = "bfloat16" if placement.amp_dtype == torch.bfloat16 else "float32"
    fields = {
        "format": FORMAT, "teacher_arch": teacher_arch, "teacher_sha256": teacher_sha256, "data_sha256": data_sha256,
        "views": views.describe(), "regions": regions, "precision": precision, "dtype": dtype,
        "bn_folded": bn_folded, "device_type": placement.device.type, "num_classes": num_classes,
    }  # fmt: skip
    if placement.device.type == "cuda":
        # cuDNN picks its convolution kernels by GPU model and release, and they round differently: logits built on
        # another GPU, torch or cuDNN are not the ones this run's live teacher computes. (CPU keys stay as they were.)
        fields["cuda"] = {"device_name": torch.cuda.get_device_name(placement.device), "torch": torch.__version__,
                          "cudnn": torch.backends.cudnn.version()}  # fmt: skip
    return fields


def cache_name(fields: dict[str, Any]) -> str:
    key = hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:20]
    return f"{fields['teacher_arch']}-{key}"


def cache_root() -> Path:
    from sddkd.teachers import sddkd_home

    return sddkd_home() / "teacher_cache"


def region_count(regions: dict[str, Any]) -> int:
    if regions["layout"] == "finest_grid":
        return int(regions["grid"]) ** 2
    return sum(m * m for m in regions["scales"])


def cache_shape(fields: dict[str, Any], num_images: int) -> tuple[int, int, int, int]:
    """[N images, V views, K classes, R stored regions]."""
    return (num_images, views_from_fields(fields).count, fields["num_classes"], region_count(fields["regions"]))


def views_from_fields(fields: dict[str, Any]) -> Views:
    v = fields["views"]
    height, width = v["image"]
    return Views(height, width, v["crop"], v["padding"], tuple(v["mean"]), tuple(v["std"]))


def cache_bytes(fields: dict[str, Any], num_images: int) -> int:
    return math.prod(cache_shape(fields, num_images)) * DTYPES[fields["dtype"]].itemsize


# ---------------------------------------------------------------------------------------------------------------
# Opening and verifying


@dataclass(frozen=True)
class OpenedCache:
    directory: Path
    manifest: dict[str, Any]
    logits: Tensor  # [N, V, K, R] memory-mapped from logits.bin (read-only by convention)


def _chunk_sha256(handle: Any, start: int, length: int) -> str:
    handle.seek(start)
    digest, left = hashlib.sha256(), length
    while left > 0:
        block = handle.read(min(left, 16 * 2**20))
        if not block:
            break
        digest.update(block)
        left -= len(block)
    return digest.hexdigest()


STAMP = "verified.json"


def _file_stamp(path: Path, manifest: dict[str, Any]) -> dict[str, Any]:
    """What changes when logits.bin is rewritten, replaced or truncated, cheap to read: size, inode, mtime, and the
    manifest's chunk checksums the bytes were verified against."""
    stat = path.stat()
    chunks = hashlib.sha256(json.dumps(manifest.get("chunks"), sort_keys=True).encode()).hexdigest()
    return {"size": stat.st_size, "inode": stat.st_ino, "mtime_ns": stat.st_mtime_ns, "chunks_sha256": chunks}


# A stamp is trusted only for a file last written this long before it was verified: a write in the same tick of the
# file system's clock as the verification would leave the mtime unchanged (git's "racily clean" problem).
STAMP_MIN_AGE_NS = 2 * 10**9


def _write_stamp(directory: Path, manifest: dict[str, Any]) -> None:
    """Record that logits.bin, as it is now, matched every chunk checksum (a read-only store simply re-verifies)."""
    try:
        stamp = {**_file_stamp(directory / "logits.bin", manifest), "verified_at_ns": time.time_ns()}
        write_json_atomic(directory / STAMP, stamp)
    except OSError:
        pass


def _stamp_matches(directory: Path, manifest: dict[str, Any]) -> bool:
    from sddkd.files import read_json

    try:
        stamp = read_json(directory / STAMP)
        now = _file_stamp(directory / "logits.bin", manifest)
    except (OSError, UserError, ValueError):
        return False
    if not isinstance(stamp, dict) or not isinstance(stamp.get("verified_at_ns"), int):
        return False
    fresh = now["mtime_ns"] > stamp["verified_at_ns"] - STAMP_MIN_AGE_NS
    return not fresh and {k: stamp.get(k) for k in now} == now


def open_cache(directory: Path, fields: dict[str, Any], *, verify: bool | str = True) -> OpenedCache:
    """The complete cache in `directory`, memory-mapped; CacheDamagedError (one line) when any check fails.

    verify: True hashes every chunk once, then trusts a stamp (size, inode, mtime of logits.bin) while the file is
    unchanged: hashing a 26 GB cache costs 30-45 s on every open otherwise. "full" always hashes; False only checks
    the manifest and the size (right after a build, which hashed each chunk as it wrote it)."""
    from sddkd.files import read_json

    manifest = read_json(directory / "manifest.json")
    damaged = f"teacher cache {directory} is damaged"
    if not isinstance(manifest, dict) or manifest.get("fields") != fields or not manifest.get("complete"):
        raise CacheDamagedError(f"{damaged} (its manifest is missing, unreadable or not for this run)")
    path, expected = directory / "logits.bin", cache_bytes(fields, manifest["num_images"])
    try:
        size = path.stat().st_size
    except FileNotFoundError:  # missing, or removed by another run that found it damaged
        size = -1
    if size != expected:
        raise CacheDamagedError(f"{damaged}: logits.bin holds {size} bytes, not {expected} (truncated?)")
    try:
        if verify == "full" or (verify and not _stamp_matches(directory, manifest)):
            with path.open("rb") as handle:
                for number, (start, length, checksum) in enumerate(_chunks(manifest)):
                    if _chunk_sha256(handle, start, length) != checksum:
                        raise CacheDamagedError(f"{damaged}: chunk {number} of logits.bin fails its sha256")
            _write_stamp(directory, manifest)
        shape = cache_shape(fields, manifest["num_images"])
        logits = torch.from_file(str(path), shared=False, size=math.prod(shape), dtype=DTYPES[fields["dtype"]])
    except FileNotFoundError:  # removed meanwhile by another run that found it damaged
        raise CacheDamagedError(f"{damaged}: logits.bin is gone") from None
    return OpenedCache(directory, manifest, logits.view(shape))


def _chunks(manifest: dict[str, Any]) -> Iterator[tuple[int, int, str]]:
    """(byte offset, byte length, sha256) of each recorded chunk."""
    per_image, images, total = manifest["bytes_per_image"], manifest["chunk_images"], manifest["num_images"]
    for number, checksum in sorted((int(k), v) for k, v in manifest["chunks"].items()):
        first = number * images
        yield first * per_image, (min(first + images, total) - first) * per_image, checksum


# ---------------------------------------------------------------------------------------------------------------
# Building


@contextmanager
def build_lock(directory: Path) -> Iterator[None]:
    """One builder per cache at a time (the OS releases the lock when a process dies)."""
    directory.parent.mkdir(parents=True, exist_ok=True)
    with open(directory.with_name(directory.name + ".lock"), "a") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)
