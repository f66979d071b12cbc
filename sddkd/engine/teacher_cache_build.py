"""Building the exact teacher-logit cache (its format, key and opening: `teacher_cache.py`).

A build writes into `<name>.partial/` chunk by chunk (a chunk is recorded in the manifest only once its bytes are
on disk, so an interrupted build resumes at the first unrecorded chunk) and renames the folder when complete; a
lock file keeps two builders apart. The whole file is allocated before the first chunk (posix_fallocate, not a
sparse file), so two builds of different caches cannot both count the same free space, and a full disk is a
`NotEnoughDiskError` before any work, or, should it fill up anyway, between chunks. A build can be stopped between
chunks (`should_stop`: a SIGTERM during `sddkd train`), and resumes there. While the teacher computes chunk k+1, chunk
k is written, synced and hashed in a thread.
"""

from __future__ import annotations

import errno
import hashlib
import math
import os
import shutil
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from sddkd.data.loader import crop_flip, normalize
from sddkd.engine.interrupts import StoppedBySignal
from sddkd.engine.placement import Placement
from sddkd.engine.teacher_cache import (
    DTYPES,
    NotEnoughDiskError,
    Views,
    build_lock,
    cache_shape,
    views_from_fields,
)
from sddkd.files import DiskFullError, is_disk_full, write_json_atomic
from sddkd.models.heads import region_logits

CHUNK_BYTES = 256 * 2**20  # what one committed chunk holds: a resumed build loses at most this much work
BUILD_BATCH = {"cpu": 256, "cuda": 4096}  # (image, view) pairs per teacher forward while building; inference only
DISK_MARGIN = 1.02  # free space asked for beyond the cache itself (the manifest, file-system slack)


def teacher_grid(teacher: nn.Module, images: Tensor, regions: dict[str, Any]) -> Tensor:
    """What the cache stores for a batch of normalized crops: [B, K, R], as the engine's head computes it."""
    scales = (regions["grid"],) if regions["layout"] == "finest_grid" else tuple(regions["scales"])
    with torch.inference_mode():
        return region_logits(teacher, teacher.forward_features(images), scales)  # type: ignore[arg-type, operator]


def build_cache(
    directory: Path, fields: dict[str, Any], teacher: nn.Module, images: Tensor, placement: Placement,
    *, progress: Callable[[int, int], None] | None = None, chunk_bytes: int | None = None,
    stop_after_chunks: int | None = None, compute: Callable[..., Tensor] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> Path:  # fmt: skip
    """Compute the cache of `fields` into `directory` (resuming a `.partial` build) and return `directory`.

    images: the uint8 training images [N, 3, H, W] on the teacher's device; progress(images done, total).
    `stop_after_chunks` ends the build early, as an interruption would (tests of the resume); `compute` replaces
    the teacher's pass (`python -m sddkd.bench --cache` times lookups from a file of the real shape without
    paying for a CPU build of its contents). `should_stop()` is asked between chunks: when true the build ends
    there with `StoppedBySignal` (what is committed stays, and the next build resumes after it).
    """
    compute = compute or _compute_chunk
    chunk_bytes = chunk_bytes or CHUNK_BYTES
    if placement.amp_dtype is not None and compute is _compute_chunk:
        # Weights in the autocast dtype once, not re-cast every batch: the numbers autocast computes (and the
        # engine's live teacher, cast the same way).
        from sddkd.engine.step import cast_for_autocast

        teacher = cast_for_autocast(teacher, placement.amp_dtype)
    views = views_from_fields(fields)
    device = images.device
    mean = torch.tensor(views.mean, device=device).view(1, -1, 1, 1)
    std = torch.tensor(views.std, device=device).view(1, -1, 1, 1)
    num_images = images.shape[0]
    shape = cache_shape(fields, num_images)
    per_image = math.prod(shape[1:]) * DTYPES[fields["dtype"]].itemsize
    partial = directory.with_name(directory.name + ".partial")
    with build_lock(directory):
        if directory.exists():  # another process finished it while we waited
            return directory
        manifest = _resume_manifest(partial, fields, num_images, per_image, chunk_bytes)
        total = num_images * per_image
        needed = int((total - len(manifest["chunks"]) * manifest["chunk_images"] * per_image) * DISK_MARGIN)
        partial.mkdir(parents=True, exist_ok=True)
        free = shutil.disk_usage(partial).free
        data = partial / "logits.bin"
        allocated = data.stat().st_blocks * 512 if data.exists() else 0
        if free + allocated < needed:
            raise NotEnoughDiskError(
                f"the teacher cache needs {needed / 1e9:.1f} GB in {partial.parent} but {free / 1e9:.1f} GB are "
                "free; free some space, point SDDKD_HOME elsewhere, or set teacher.cache=off"
            )
        _reserve(data, total, partial)
        try:
            complete = _build_chunks(partial, data, manifest, fields, teacher, images, placement, compute, views,
                                     mean, std, per_image, progress, stop_after_chunks, should_stop)  # fmt: skip
        except (DiskFullError, OSError) as exc:
            if isinstance(exc, DiskFullError) or is_disk_full(exc):
                raise NotEnoughDiskError(
                    f"the disk of {partial.parent} filled up while building the teacher cache; the finished chunks "
                    f"stay in {partial} and the next build resumes there (delete it to free its space); free some "
                    "space, point SDDKD_HOME elsewhere, or set teacher.cache=off"
                ) from exc
            raise
        if not complete:
            return directory  # stopped early (stop_after_chunks): not there yet
        os.replace(partial, directory)
    return directory


def _reserve(data: Path, total: int, partial: Path) -> None:
    """Make `data` `total` bytes long with its blocks allocated (what is written stays): a second build then sees
    the space as used. A filesystem without fallocate gets a sparse file, as before."""
    fd = os.open(data, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        before = os.fstat(fd).st_size
        try:
            if not hasattr(os, "posix_fallocate"):
                raise OSError(errno.EOPNOTSUPP, "no posix_fallocate")
            os.posix_fallocate(fd, 0, total)
        except OSError as exc:
            if is_disk_full(exc):
                os.ftruncate(fd, before)  # give back whatever the failed allocation took
                raise NotEnoughDiskError(
                    f"the teacher cache needs {total / 1e9:.1f} GB in {partial.parent}, more than is free; free "
                    "some space, point SDDKD_HOME elsewhere, or set teacher.cache=off"
                ) from exc
            if exc.errno not in (errno.EOPNOTSUPP, errno.EINVAL, errno.ENOSYS):
                raise
            os.ftruncate(fd, total)  # sized (sparse) without touching written bytes
    finally:
        os.close(fd)


def _build_chunks(
    partial: Path, data: Path, manifest: dict[str, Any], fields: dict[str, Any], teacher: nn.Module, images: Tensor,
    placement: Placement, compute: Callable[..., Tensor], views: Views, mean: Tensor, std: Tensor, per_image: int,
    progress: Callable[[int, int], None] | None, stop_after_chunks: int | None,
    should_stop: Callable[[], bool] | None,
) -> bool:  # fmt: skip
    """Compute and commit every chunk the manifest lacks; True (and the manifest marked complete) when all are."""
    num_images, chunk_images = images.shape[0], manifest["chunk_images"]
    done_images = sum(min(chunk_images, num_images - int(k) * chunk_images) for k in manifest["chunks"])
    if progress is not None:
        progress(done_images, num_images)
    built = 0
    # The write, fsync and sha256 of chunk k run in a thread while the teacher computes chunk k+1 (both release the
    # GIL); the manifest records a chunk only once its bytes are on disk.
    with open(data, "r+b") as handle, ThreadPoolExecutor(max_workers=1) as writer:
        pending: tuple[int, int, Future[str]] | None = None

        def commit(number: int, count: int, written: Future[str]) -> None:
            nonlocal done_images
            manifest["chunks"][str(number)] = written.result()
            write_json_atomic(partial / "manifest.json", manifest)
            done_images += count
            if progress is not None:
                progress(done_images, num_images)

        for number in range(math.ceil(num_images / chunk_images)):
            if str(number) in manifest["chunks"]:
                continue
            if stop_after_chunks is not None and built >= stop_after_chunks:
                break
            if should_stop is not None and should_stop():
                if pending is not None:
                    commit(*pending)
                raise StoppedBySignal(f"while building the teacher-logit cache ({done_images} of {num_images} "
                                      "images done; the build resumes there)")  # fmt: skip
            first, last = number * chunk_images, min((number + 1) * chunk_images, num_images)
            chunk = compute(teacher, images, first, last, views, mean, std, fields, placement)
            if pending is not None:
                commit(*pending)
            pending = (number, last - first, writer.submit(_write_chunk, handle, first * per_image, chunk))
            built += 1
        if pending is not None:
            commit(*pending)
    if len(manifest["chunks"]) < math.ceil(num_images / chunk_images):
        return False  # stopped early (stop_after_chunks): the .partial folder stays for a resumed build
    manifest["complete"] = True
    write_json_atomic(partial / "manifest.json", manifest)
    return True


def _resume_manifest(
    partial: Path, fields: dict[str, Any], num_images: int, per_image: int, chunk_bytes: int
) -> dict[str, Any]:
    """The manifest of an interrupted build of the same cache, or a fresh one (a foreign partial is discarded)."""
    from sddkd.files import read_json

    manifest = read_json(partial / "manifest.json")
    if (
        isinstance(manifest, dict)
        and manifest.get("fields") == fields
        and manifest.get("num_images") == num_images
        and manifest.get("bytes_per_image") == per_image
    ):
        return manifest
    if partial.exists():
        shutil.rmtree(partial)
    return {
        "fields": fields, "num_images": num_images, "bytes_per_image": per_image,
        "chunk_images": max(1, chunk_bytes // per_image), "chunks": {}, "complete": False,
        "dtype": fields["dtype"], "shape": ["images", "views", "classes", "regions"],
    }  # fmt: skip


def _write_chunk(handle: Any, offset: int, chunk: Tensor) -> str:
    """Write a chunk's bytes at `offset`, force them to disk and return their sha256."""
    raw = chunk.contiguous().view(torch.uint8).numpy()
    handle.seek(offset)
    handle.write(raw.data)
    handle.flush()
    os.fsync(handle.fileno())  # the bytes are on disk before the manifest says so
    return hashlib.sha256(raw.data).hexdigest()


def _compute_chunk(
    teacher: nn.Module, images: Tensor, first: int, last: int, views: Views, mean: Tensor, std: Tensor,
    fields: dict[str, Any], placement: Placement,
) -> Tensor:  # fmt: skip
    """[n, V, K, R] on the CPU for images first..last-1: every view of each, through the teacher as in training.

    The n * V (image, view) pairs go through the teacher BUILD_BATCH at a time, image-major, so small datasets
    still make full batches. On CUDA the results land in pinned host memory without waiting for each batch: one
    synchronisation per chunk."""
    n, device = last - first, images.device
    on_cuda = device.type == "cuda"
    out = torch.empty(cache_shape(fields, n), dtype=DTYPES[fields["dtype"]], pin_memory=on_cuda)
    flat = out.view(n * views.count, *out.shape[2:])  # [n*V, K, R], the same memory
    batch_size = BUILD_BATCH["cuda" if on_cuda else "cpu"]
    for start in range(0, n * views.count, batch_size):
        pair = torch.arange(start, min(start + batch_size, n * views.count), device=device)
        view = pair % views.count  # inverse of Views.index: v = (top * n_left + left) * 2 + flip
        top, left, flip = view // (2 * views.n_left), (view // 2) % views.n_left, (view % 2).bool()
        crops = crop_flip(images, top, left, flip, size=views.crop, padding=views.padding,
                          index=first + pair // views.count)  # fmt: skip
        batch = placement.images(normalize(crops, mean, std))
        with placement.autocast():
            logits = teacher_grid(teacher, batch, fields["regions"])  # [b, K, R]
        if logits.dtype != out.dtype:
            raise RuntimeError(f"the teacher produced {logits.dtype}, the cache's key says {out.dtype}")
        flat[start : start + len(pair)].copy_(logits, non_blocking=on_cuda)
    if on_cuda:
        torch.cuda.synchronize(device)  # every copy into `out` has landed before it is written
    return out
