"""Serving the teacher-logit cache to a run, and deciding when a run uses or builds one (`teacher.cache`).

The training loader's epoch plan (image index, crop offsets, flip) names each sample's (image, view), so a batch's
teacher region logits are one gather from the cache; the train step then runs only the student. Where the cache
lives:
- CPU: memory-mapped from its file (the page cache keeps what fits in RAM).
- CUDA: in device memory when it fits the budget (half the free device memory by default), else memory-mapped host
  memory: each batch's rows are gathered on the CPU into pinned memory and copied asynchronously. Processes sharing
  a GPU decide one at a time (a lock per GPU), each seeing the copies of those before it.

`auto` (the default) uses a valid cache when one exists and builds one only when the run alone does at least as
many teacher passes as the build costs (epochs >= views per image: 162 for CIFAR), so a smoke test never writes
gigabytes but a 240-epoch CIFAR run pays for its cache by itself; `sddkd cache-teacher` and suites
(`sddkd.suite.prebuild`) build ahead.
"""

from __future__ import annotations

import fcntl
import re
import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from rich.console import Console
from torch import Tensor, nn

from sddkd.config import RunConfig
from sddkd.data.loader import ArrayLoader
from sddkd.datasets import continuous_augmentation_problem
from sddkd.engine.distributed import DistContext
from sddkd.engine.placement import Placement
from sddkd.engine.run_teacher import load_run_teacher
from sddkd.engine.teacher_cache import (
    CacheDamagedError,
    NotEnoughDiskError,
    OpenedCache,
    Views,
    build_lock,
    cache_bytes,
    cache_fields,
    cache_name,
    cache_root,
    data_fingerprint,
    open_cache,
    state_dict_sha256,
    stored_regions,
    views_of,
)  # fmt: skip
from sddkd.engine.teacher_cache_build import build_cache
from sddkd.errors import UserError
from sddkd.models.heads import regions_from_finest_grid


def no_exact_cache_reason(cfg: RunConfig, loader: Any) -> str | None:
    """Why this run's training augmentation has no exact cache worth building, or None when it has one (the
    dataset's spec decides; a loader that decodes on workers has no finite set of views whatever the dataset)."""
    if not isinstance(loader, ArrayLoader):
        return continuous_augmentation_problem(cfg.data.name)
    return cfg.data.spec.exact_cache_problem


class ServedCache:
    """`regions(index, view) -> [B, K, N]` teacher region logits for the run's M, on the run's device."""

    def __init__(self, opened: OpenedCache, scales: tuple[int, ...], device: torch.device, budget: int | None = None):
        self.opened, self.scales, self.device = opened, scales, device
        self.grid = opened.manifest["fields"]["regions"]["layout"] == "finest_grid"
        store = opened.logits  # [N, V, K, R]
        self.residency = "memory-mapped"
        if device.type == "cuda":
            # One process per GPU at a time measures the free memory and copies: K runs sharing a GPU
            # (`--per-device K`) would otherwise all see the same free memory and all copy, into out-of-memory.
            with gpu_residency_lock(device):
                free, _ = torch.cuda.mem_get_info(device)
                budget = free // 2 if budget is None else budget
                if store.numel() * store.element_size() <= budget:
                    store, self.residency = _to_device(store, device), "device memory"
                    torch.cuda.synchronize(device)  # allocated and filled before the next process measures
                else:
                    self.residency = "host memory (memory-mapped), each batch gathered into pinned memory"
        self.store = store

    def regions(self, index: Tensor, view: Tensor) -> Tensor:
        """index, view: [B] int64 (on the store's device); returns [B, K, N] on the run's device."""
        rows = self.store[index, view]  # [B, K, R], one gather
        if rows.device != self.device:
            rows = rows.pin_memory().to(self.device, non_blocking=True)  # the pinned block outlives the copy
        return regions_from_finest_grid(rows, self.scales) if self.grid else rows

    def describe(self) -> str:
        size = self.store.numel() * self.store.element_size()
        return f"teacher-logit cache {self.opened.directory.name} ({size / 1e9:.2f} GB, {self.residency})"


@contextmanager
def gpu_residency_lock(device: torch.device) -> Iterator[None]:
    """An exclusive lock per physical GPU (its UUID: each suite child sees its GPU as cuda:0), across processes;
    the OS releases it if a process dies."""
    props = torch.cuda.get_device_properties(device)
    name = str(getattr(props, "uuid", "") or f"{props.name}-{device.index or 0}")
    path = cache_root() / f".residency-{re.sub(r'[^A-Za-z0-9._-]+', '_', name)}.lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def _to_device(store: Tensor, device: torch.device, rows: int = 4096) -> Tensor:
    """The memory-mapped cache copied to `device` a slice at a time (never the whole file in host RAM at once)."""
    out = torch.empty(store.shape, dtype=store.dtype, device=device)
    for start in range(0, store.shape[0], rows):
        out[start : start + rows].copy_(store[start : start + rows])
    return out


class CachedTeacherLoader:
    """The training loader, each batch extended by its teacher region logits: (images, labels, teacher [B, K, N]),
    or (weak, strong, labels, teacher) from a two-view loader (MLKD), the teacher logits being the weak view's: the
    cache is keyed by the weak view's crop and flip, and the strong view's teacher runs live in the step."""

    def __init__(self, loader: ArrayLoader, served: ServedCache, views: Views):
        self.loader, self.served, self.views = loader, served, views

    def __len__(self) -> int:
        return len(self.loader)

    def __getattr__(self, name: str) -> Any:  # set_epoch, dataset_size, num_samples, ...: the loader's
        if name == "loader":  # not set yet (copy, unpickling): no endless recursion
            raise AttributeError(name)
        return getattr(self.loader, name)

    def __iter__(self) -> Iterator[tuple[Tensor, ...]]:
        index, top, left, flip = self.loader.epoch_plan()  # CPU [n]: the same plan the loader's batches follow
        view = self.views.index(top, left, flip)
        index, view = index.to(self.served.store.device), view.to(self.served.store.device)
        size = self.loader.batch_size
        # A resumed epoch starts at the loader's start_step: its batch s is still rows s*B:(s+1)*B of the plan.
        for step, batch in enumerate(self.loader, start=getattr(self.loader, "start_step", 0)):
            rows = slice(step * size, (step + 1) * size)
            yield (*batch, self.served.regions(index[rows], view[rows]))


# ---------------------------------------------------------------------------------------------------------------
# Deciding, building, opening


def teacher_sha256(teacher: nn.Module, teacher_info: dict[str, Any] | None) -> str:
    sha = (teacher_info or {}).get("sha256")
    return str(sha) if sha else state_dict_sha256(teacher)


def run_cache_fields(
    cfg: RunConfig, loader: ArrayLoader, teacher: nn.Module, teacher_info: dict[str, Any] | None,
    placement: Placement, data_sha256: str | None = None,
) -> dict[str, Any]:  # fmt: skip
    from sddkd.engine.step import FoldedModel

    assert cfg.teacher is not None
    views = views_of(loader)
    return cache_fields(
        teacher_arch=cfg.teacher.arch, teacher_sha256=teacher_sha256(teacher, teacher_info),
        data_sha256=data_sha256 or data_fingerprint(loader.images, loader.labels), views=views,
        regions=stored_regions(teacher, views, cfg.scales, placement.device), placement=placement,
        bn_folded=isinstance(teacher, FoldedModel), num_classes=cfg.data.num_classes,
    )  # fmt: skip


def ensure_cache(
    fields: dict[str, Any], loader: ArrayLoader, teacher: nn.Module, placement: Placement, console: Console, *,
    build: bool, rebuild_damaged: bool, progress: bool = True, root: Path | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> OpenedCache | None:  # fmt: skip
    """The verified cache of `fields`, built first when missing and `build`; None when missing and not `build`.

    A damaged cache is one line on `console`, then rebuilt when `rebuild_damaged`, else a CacheDamagedError.
    Several runs can meet the same damaged cache at once: it is removed under the build lock, by the first of them
    that still finds it damaged there, and the others then wait for (or use) the rebuilt one."""
    directory = (root or cache_root()) / cache_name(fields)
    if directory.exists():
        try:
            return open_cache(directory, fields)
        except CacheDamagedError as exc:
            if not rebuild_damaged:
                raise CacheDamagedError(
                    f"{exc}; rebuild it with `sddkd cache-teacher` or set teacher.cache=auto"
                ) from None
            if _remove_if_still_damaged(directory, fields):
                console.print(f"[yellow]{exc}[/]: rebuilding it", highlight=False)
    if not build:
        return None
    size = cache_bytes(fields, loader.images.shape[0])
    if not directory.exists():
        console.print(f"Building the teacher-logit cache {directory.name} ({size / 1e9:.2f} GB)", highlight=False)
    with _progress(progress, console) as advance:
        build_cache(directory, fields, teacher, loader.images, placement, progress=advance, should_stop=should_stop)
    # The builder (this process, or one that finished first while this one waited) hashed every chunk as it wrote
    # it: no second pass over the file now; the next open verifies it once and stamps it.
    return open_cache(directory, fields, verify=False)


def _remove_if_still_damaged(directory: Path, fields: dict[str, Any]) -> bool:
    """Remove a damaged cache under its build lock (another run may have removed or rebuilt it meanwhile)."""
    with build_lock(directory):
        if not directory.exists():
            return False  # another run removed it: it rebuilds it, or already did under this lock
        try:
            open_cache(directory, fields)
            return False  # rebuilt by another run while this one waited
        except CacheDamagedError:
            shutil.rmtree(directory)
            return True


class _progress:
    """A rich progress bar over images, or nothing."""

    def __init__(self, enabled: bool, console: Console):
        self.enabled, self.console = enabled, console
        self.bar: Any = None

    def __enter__(self) -> Any:
        if not self.enabled:
            return None
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        columns = (TextColumn("teacher cache"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
        self.bar = Progress(*columns, console=self.console, transient=True)
        self.bar.__enter__()
        task = self.bar.add_task("images", total=None)
        return lambda done, total: self.bar.update(task, completed=done, total=total)

    def __exit__(self, *exc: Any) -> None:
        if self.bar is not None:
            self.bar.__exit__(*exc)


def worth_building(cfg: RunConfig, loader: ArrayLoader, views: Views) -> bool:
    """Whether one run's teacher passes (epochs x images, or max_steps x batch) reach the build's (views x images)."""
    passes = cfg.optim.epochs * loader.dataset_size
    if cfg.optim.max_steps is not None:
        passes = min(passes, cfg.optim.max_steps * cfg.optim.batch_size)
    return passes >= views.count * loader.dataset_size


def serve_teacher_cache(
    cfg: RunConfig, loader: Any, teacher: nn.Module, teacher_info: dict[str, Any] | None, placement: Placement,
    dist: DistContext, console: Console, should_stop: Callable[[], bool] | None = None,
) -> Any:  # fmt: skip
    """The training loader to use: `loader` itself (teacher run live), or a CachedTeacherLoader over it.

    `should_stop()` (a SIGTERM or Ctrl-C) ends a build between chunks with `StoppedBySignal`."""
    assert cfg.teacher is not None
    mode = cfg.teacher.cache
    if mode == "off":
        return loader
    reason = no_exact_cache_reason(cfg, loader)
    if reason is not None:
        if mode == "on":
            raise UserError(reason.replace("; set teacher.cache=off", " (teacher.cache=on); set teacher.cache=off"))
        return loader
    views = views_of(loader)
    build = mode == "on" or worth_building(cfg, loader, views)
    # Rank 0 alone builds (the others wait in its broadcast); then every rank opens and verifies the same files.
    fields = run_cache_fields(cfg, loader, teacher, teacher_info, placement)

    def prepare() -> bool:
        try:
            opened = ensure_cache(fields, loader, teacher, placement, console, build=build,
                                  rebuild_damaged=mode == "auto", progress=cfg.engine.progress,
                                  should_stop=should_stop)  # fmt: skip
        except NotEnoughDiskError as exc:
            if mode == "on":
                raise
            console.print(f"[yellow]{exc}[/]; the teacher runs live", highlight=False)  # auto: a cache is optional
            return False
        return opened is not None

    if not dist.on_main(prepare):
        return loader
    opened = open_cache(cache_root() / cache_name(fields), fields, verify=not dist.is_main)
    served = ServedCache(opened, cfg.scales, placement.device)
    dist.print(console, f"Teacher logits from the {served.describe()}")
    return CachedTeacherLoader(loader, served, views)


# ---------------------------------------------------------------------------------------------------------------
# Building ahead of runs: `sddkd cache-teacher PRESET` and suites


def build_for_config(cfg: RunConfig, console: Console, *, rebuild: bool = False, progress: bool = True) -> OpenedCache:
    """Build (or verify) the cache a run of `cfg` would use, whatever its `teacher.cache`; return it opened."""
    from sddkd.engine.placement import build_data, resolve_placement

    if cfg.teacher is None:
        raise UserError(f"{cfg.method.name} runs have no teacher, so there is no teacher-logit cache to build")
    placement = resolve_placement(cfg.engine)
    spec, loader, _ = build_data(cfg.data, cfg.optim.batch_size, placement.device, cfg.seed, DistContext())
    reason = no_exact_cache_reason(cfg, loader)
    if reason is not None:
        raise UserError(reason.replace("; set teacher.cache=off", ""))
    teacher, info = load_run_teacher(cfg, spec, placement)
    fields = run_cache_fields(cfg, loader, teacher, info, placement)
    directory = cache_root() / cache_name(fields)
    if rebuild and directory.exists():
        shutil.rmtree(directory)
    opened = ensure_cache(fields, loader, teacher, placement, console, build=True, rebuild_damaged=True,
                          progress=progress)  # fmt: skip
    assert opened is not None
    return opened
