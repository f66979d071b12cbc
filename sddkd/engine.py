"""The training engine: `train(cfg) -> result record`. With `sddkd.placement` (device, precision, loaders), the only
module that knows devices, AMP and processes.

One loop serves every method: the method is a loss function of region logits (`sddkd.distill`), never a trainer
subclass. The loop keeps everything on the device between epochs: loss sums, accuracy counts and the non-finite
counter are tensors, read back once per epoch, so a step never waits for the GPU.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from rich.console import Console
from torch import nn

from sddkd.checkpoint import load_checkpoint, rng_state, save_checkpoint, set_rng_state
from sddkd.config import OptimConfig, RunConfig, config_hash
from sddkd.distill import RegionModel, make_loss_fn
from sddkd.distributed import DistContext
from sddkd.errors import UserError
from sddkd.evaluation import evaluate
from sddkd.fastpath import TrainStep, fold_batchnorm, make_optimizer
from sddkd.models import create_model
from sddkd.placement import Placement, build_data, resolve_placement
from sddkd.runs import (
    RunPaths,
    append_metrics,
    check_run_directory,
    new_record,
    read_result,
    run_paths,
    save_config,
    save_record,
    truncate_metrics,
)  # fmt: skip
from sddkd.tracking import TensorBoardLog, require_tensorboard

NONFINITE_CHECK_EVERY = 200  # steps between the (rare) host syncs that look for a non-finite loss under "fail"


# `best.pt` keeps what a teacher file needs, in the RepDistiller layout ({"model", "epoch", "accuracy"}) plus the
# config that produced it; `last.pt` adds the optimizer and RNG state for an exact resume.
BEST_CHECKPOINT_KEYS = ("model", "epoch", "accuracy", "config", "config_hash")


class NonFiniteLossError(UserError):
    pass


def lr_at(optim: OptimConfig, epoch: int) -> float:
    """Step schedule per epoch (1-based), as in mdistiller: decay once for every stage epoch already passed."""
    stages_passed = sum(epoch > stage for stage in optim.lr_decay_epochs)
    return optim.lr * optim.lr_decay_rate**stages_passed


@dataclass
class EpochStats:
    losses: dict[str, float]
    train_top1: float
    samples: int
    steps: int
    nonfinite_steps: int
    seconds: float


def train_epoch(
    step: TrainStep,
    loader: Any,
    cfg: RunConfig,
    epoch: int,
    dist: DistContext,
    max_steps: int | None,
    progress: Any = None,
) -> EpochStats:
    """One pass over the training data; at most `max_steps` optimizer steps."""
    step.student.train()
    device = step.placement.device
    names = step.loss_fn.names
    weights = step.term_weights(epoch)  # [T] this epoch's loss weights
    sums = torch.zeros(len(names), device=device)  # [T] weighted loss terms summed over steps
    correct = torch.zeros((), device=device)
    nonfinite = torch.zeros((), device=device, dtype=torch.int64)
    steps = samples = 0
    start = time.perf_counter()
    for images, labels, *cached_teacher in loader:  # a teacher-logit cache adds the batch's teacher logits
        if max_steps is not None and steps >= max_steps:
            break
        terms, finite, batch_correct = step(images, labels, weights, *cached_teacher)
        sums += terms
        nonfinite += (~finite).long()
        correct += batch_correct
        steps += 1
        samples += labels.numel()
        if progress is not None:
            progress()
        if cfg.engine.nonfinite == "fail" and steps % NONFINITE_CHECK_EVERY == 0:
            if int(dist.all_reduce_max(nonfinite.clone())) > 0:  # every rank leaves the loop at the same step
                break
    values = dist.all_reduce_sum(torch.cat([sums, torch.stack([correct.float(), nonfinite.float()])])).tolist()
    # Under "skip" every rank counted the same (global) skipped steps; under "fail" any count ends the run.
    skipped_steps = round(values[-1] / dist.world_size)
    global_steps, global_samples = steps * dist.world_size, samples * dist.world_size
    if cfg.engine.nonfinite == "fail" and values[-1] > 0:
        raise NonFiniteLossError(
            f"the loss became non-finite in epoch {epoch} (engine.nonfinite=fail); lower the learning rate, "
            "or set engine.nonfinite=skip to drop such steps"
        )
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return EpochStats(
        losses={n: v / max(global_steps, 1) for n, v in zip(names, values)},
        train_top1=100.0 * values[-2] / max(global_samples, 1),
        samples=global_samples,
        steps=steps,
        nonfinite_steps=skipped_steps,
        seconds=time.perf_counter() - start,
    )


@contextmanager
def _progress_bar(enabled: bool, console: Console, total_steps: int) -> Iterator[Any]:
    if not enabled:
        yield None
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    with Progress(*columns, console=console, transient=True) as progress:
        task = progress.add_task("training", total=total_steps)
        yield lambda description=None: progress.update(task, advance=1, description=description or None)


def _teacher_for(cfg: RunConfig, spec: Any, placement: Placement) -> tuple[nn.Module, dict[str, Any]]:
    from sddkd import teachers

    assert cfg.teacher is not None
    arch, dataset = cfg.teacher.arch, cfg.data.name
    path = Path(cfg.teacher.checkpoint) if cfg.teacher.checkpoint else teachers.find_teacher(dataset, arch)
    if path is None:
        raise UserError(teachers.missing_teacher_message(dataset, arch))
    teacher, info = teachers.load_teacher(path, arch, spec.model_dataset, spec.num_classes)
    return prepare_teacher(teacher, placement), info


def prepare_teacher(teacher: nn.Module, placement: Placement) -> nn.Module:
    """The frozen teacher on the device: eval mode, no gradients, BatchNorm folded into its convolutions."""
    teacher = fold_batchnorm(teacher.eval()).to(placement.device)
    if placement.channels_last:
        teacher = teacher.to(memory_format=torch.channels_last)
    return teacher.eval().requires_grad_(False)


def make_train_step(
    cfg: RunConfig, student: nn.Module, teacher: nn.Module | None, optimizer: torch.optim.Optimizer,
    placement: Placement, dist: DistContext,
) -> TrainStep:  # fmt: skip
    """The run's optimizer step (compiled when `engine.compile`); built once, reused by every epoch."""
    return TrainStep(
        student, teacher, make_loss_fn(cfg.method), optimizer, placement, scales=cfg.scales,
        batch_size=cfg.optim.batch_size // dist.world_size, nonfinite=cfg.engine.nonfinite,
        grad_clip=cfg.optim.grad_clip, compile=cfg.engine.compile, dist=dist,
    )  # fmt: skip


def train(
    cfg: RunConfig,
    out_root: Path | str = "logs",
    *,
    resume: bool = False,
    stop_after_epoch: int | None = None,
    console: Console | None = None,
) -> dict[str, Any]:
    """Train one run into `<out_root>/<run_name>/` and return its result record (`result.json`).

    `stop_after_epoch` ends the process's work after that epoch as an interruption would (the run stays
    unfinished and `resume=True` continues it): used by tests and by time-boxed jobs.
    """
    console = console or Console(stderr=True)
    dist = DistContext.from_env()
    placement = resolve_placement(cfg.engine, dist.local_rank if dist.world_size > 1 else None)
    dist.join(placement.device)
    paths: RunPaths = run_paths(cfg, Path(out_root))
    # Rank 0 alone reads the directory and decides: other ranks reading it could already see rank 0's first writes.
    state = dist.on_main(lambda: check_run_directory(cfg, paths, resume))
    if state == "finished":
        dist.print(console, f"[green]{paths.root.name}[/] already finished (config hash {config_hash(cfg)}).")
        dist.leave()
        return read_result(paths) or {}
    if cfg.engine.tensorboard:
        require_tensorboard()
    spec, train_loader, test_loader = build_data(cfg.data, cfg.optim.batch_size, placement.device, cfg.seed, dist)
    torch.manual_seed(cfg.seed)  # the same initial weights on every rank (DDP broadcasts rank 0's anyway)
    backbone = create_model(cfg.student, num_classes=spec.num_classes, dataset=spec.model_dataset)
    backbone.to(placement.device)
    if placement.channels_last:
        backbone.to(memory_format=torch.channels_last)
    teacher, teacher_info = _teacher_for(cfg, spec, placement) if cfg.teacher else (None, None)
    if teacher is not None:
        from sddkd.teacher_cache_serve import serve_teacher_cache

        train_loader = serve_teacher_cache(cfg, train_loader, teacher, teacher_info, placement, dist, console)
    student: nn.Module = dist.wrap(RegionModel(backbone, cfg.scales))
    optimizer = make_optimizer(backbone, cfg.optim, placement.device)
    step = make_train_step(cfg, student, teacher, optimizer, placement, dist)

    if state == "resume":
        record, start_epoch, global_step = _resume(cfg, paths, placement, dist, console, backbone, optimizer)
    else:
        record, start_epoch, global_step = _begin(
            cfg, paths, placement, dist, console, teacher, teacher_info, test_loader
        )
    record["execution"] = {**placement.describe(), "compile": cfg.engine.compile, "world_size": dist.world_size}
    execution = record["execution"]
    dist.print(console, f"{paths.root.name} on {execution['device']}: {execution['precision']}"
                        + (", compiled" if cfg.engine.compile else "")
                        + (f", {dist.world_size} processes" if dist.world_size > 1 else ""))  # fmt: skip
    if dist.is_main:
        save_record(paths, record)
    tracker = TensorBoardLog(paths.root) if cfg.engine.tensorboard and dist.is_main else None

    started = time.perf_counter() - float(record.get("wall_seconds") or 0.0)
    try:
        epoch = start_epoch
        with _progress_bar(cfg.engine.progress and dist.is_main, console, len(train_loader)) as advance:
            for epoch in range(start_epoch, cfg.optim.epochs + 1):
                lr = lr_at(cfg.optim, epoch)
                for group in optimizer.param_groups:
                    group["lr"] = lr
                train_loader.set_epoch(epoch)
                dist.seed_epoch(cfg.seed, epoch)  # dropout masks: per rank, and the same after a resume
                steps_left = None if cfg.optim.max_steps is None else cfg.optim.max_steps - global_step
                stats = train_epoch(step, train_loader, cfg, epoch, dist, steps_left, advance)
                global_step += stats.steps
                dist.sync_buffers(backbone)  # every rank evaluates (and rank 0 saves) the same BatchNorm statistics
                out_of_steps = cfg.optim.max_steps is not None and global_step >= cfg.optim.max_steps
                last = epoch == cfg.optim.epochs or out_of_steps
                test = (
                    evaluate(backbone, test_loader, placement, dist)
                    if last or epoch % cfg.engine.eval_every == 0
                    else None
                )
                row = _record_epoch(record, paths, cfg, dist, console, epoch, lr, stats, test, started)
                if tracker is not None:
                    tracker.log_epoch(row)
                if dist.is_main:
                    improved = test is not None and record["best_epoch"] == epoch
                    _save_epoch(cfg, paths, backbone, optimizer, epoch, global_step, record, improved)
                if out_of_steps or epoch == stop_after_epoch:
                    break
        if epoch == cfg.optim.epochs or (cfg.optim.max_steps is not None and global_step >= cfg.optim.max_steps):
            record["status"] = "finished"
    except Exception as exc:
        record.update(status="failed", error=str(exc) or type(exc).__name__)
        raise
    finally:
        record["wall_seconds"] = time.perf_counter() - started
        if dist.is_main and paths.root.exists():
            save_record(paths, record)
        if tracker is not None:
            tracker.close()
    dist.leave()
    return record


def _begin(
    cfg: RunConfig, paths: RunPaths, placement: Placement, dist: DistContext, console: Console,
    teacher: nn.Module | None, teacher_info: dict[str, Any] | None, test_loader: Any,
) -> tuple[dict[str, Any], int, int]:  # fmt: skip
    """A fresh run: its directory and config, and the teacher's measured accuracy in the record."""
    record = new_record(cfg, paths)
    if dist.is_main:
        paths.root.mkdir(parents=True, exist_ok=True)
        save_config(cfg, paths)
    if teacher is not None and cfg.teacher is not None:
        measured = evaluate(teacher, test_loader, placement, dist)
        record["teacher_checkpoint"] = {**(teacher_info or {}), "test_top1": measured["top1"],
                                        "test_top5": measured["top5"]}  # fmt: skip
        dist.print(console, f"Teacher {cfg.teacher.arch}: test top-1 {measured['top1']:.2f}%, "
                            f"top-5 {measured['top5']:.2f}%")  # fmt: skip
    return record, 1, 0


def _resume(
    cfg: RunConfig, paths: RunPaths, placement: Placement, dist: DistContext, console: Console,
    backbone: nn.Module, optimizer: torch.optim.Optimizer,
) -> tuple[dict[str, Any], int, int]:  # fmt: skip
    """Restore model, optimizer, RNG and the record from `last.pt`: the run continues as if never stopped."""
    checkpoint = load_checkpoint(paths.last, map_location=placement.device)
    backbone.load_state_dict(checkpoint["model"])
    optimizer.load_state_dict(checkpoint["optimizer"])
    set_rng_state(checkpoint["rng"])
    record = new_record(cfg, paths)
    # The record as of the checkpointed epoch: later in-memory updates of a killed process never count.
    record.update({k: v for k, v in checkpoint["record"].items() if k not in ("pid", "host", "versions", "execution")})
    record.update(status="running", error=None)
    if dist.is_main:
        truncate_metrics(paths, checkpoint["epoch"])
    start_epoch = checkpoint["epoch"] + 1
    dist.print(console, f"Resuming {paths.root.name} at epoch {start_epoch}.")
    return record, start_epoch, checkpoint["global_step"]


def _save_epoch(
    cfg: RunConfig, paths: RunPaths, backbone: nn.Module, optimizer: torch.optim.Optimizer, epoch: int,
    global_step: int, record: dict[str, Any], improved: bool,
) -> None:  # fmt: skip
    """Atomically write `last.pt` (everything a resume needs), `best.pt` when the epoch improved, and the record."""
    state = {
        "model": backbone.state_dict(), "optimizer": optimizer.state_dict(), "epoch": epoch,
        "global_step": global_step, "rng": rng_state(), "config": cfg.model_dump(mode="json"),
        "config_hash": config_hash(cfg), "accuracy": record["best_top1"], "record": dict(record),
    }  # fmt: skip
    if improved:
        save_checkpoint(paths.best, {k: state[k] for k in BEST_CHECKPOINT_KEYS})
    save_checkpoint(paths.last, state)
    save_record(paths, record)


def _record_epoch(
    record: dict[str, Any], paths: RunPaths, cfg: RunConfig, dist: DistContext, console: Console,
    epoch: int, lr: float, stats: EpochStats, test: dict[str, Any] | None, started: float,
) -> dict[str, Any]:  # fmt: skip
    """Fold one epoch into the run record and the metrics log, print its one-line summary, return its row."""
    row: dict[str, Any] = {
        "epoch": epoch, "lr": lr, "losses": stats.losses, "train_top1": stats.train_top1,
        "images_per_s": stats.samples / max(stats.seconds, 1e-9), "seconds": stats.seconds,
        "nonfinite_steps": stats.nonfinite_steps, "steps": stats.steps,
    }  # fmt: skip
    if test is not None:
        row.update(test_top1=test["top1"], test_top5=test["top5"])
        record.update(last_top1=test["top1"], last_top5=test["top5"])
        if record["best_top1"] is None or test["top1"] > record["best_top1"]:
            record.update(best_top1=test["top1"], best_top5=test["top5"], best_epoch=epoch)
    record.update(epochs_done=epoch, wall_seconds=time.perf_counter() - started)
    if dist.is_main:
        append_metrics(paths, row)
    losses = " ".join(f"{k} {v:.4f}" for k, v in stats.losses.items())
    tested = f" test {test['top1']:.2f}/{test['top5']:.2f}" if test else ""
    skipped = f" [yellow]{stats.nonfinite_steps} non-finite steps skipped[/]" if stats.nonfinite_steps else ""
    dist.print(
        console,
        f"epoch {epoch}/{cfg.optim.epochs} lr {lr:.4g} {losses} train {stats.train_top1:.2f}{tested} "
        f"best {record['best_top1'] or 0:.2f} ({row['images_per_s']:.0f} img/s, {stats.seconds:.1f}s){skipped}",
    )
    return row
