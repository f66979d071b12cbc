"""The training loop: `train(cfg) -> result record`. With `sddkd.engine.placement` (device, precision, loaders),
the only module that knows devices, AMP and processes.

One loop serves every method: the method is a loss function of region logits (`sddkd.engine.distill`), never a trainer
subclass. A run reads top to bottom in `_train_owned`: open its record, build its parts, restore, run the epochs (one
epoch is `sddkd.engine.epoch`), finish.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from rich.console import Console
from torch import nn

from sddkd.config import RunConfig, config_hash
from sddkd.engine.checkpoint import set_rng_state
from sddkd.engine.distill import LossFn, RegionModel, make_loss_fn
from sddkd.engine.distributed import DistContext
from sddkd.engine.epoch import EpochStats, lr_at, make_train_step, train_epoch
from sddkd.engine.evaluation import evaluate
from sddkd.engine.faults import fault_point
from sddkd.engine.interrupts import StoppedBySignal, StopRequest, stop_on_signals
from sddkd.engine.placement import Placement, build_data, resolve_placement
from sddkd.engine.progress import run_bar
from sddkd.engine.resume import (
    PartialEpoch,
    load_for_resume,
    rebuild_outputs,
    restore_training_state,
    save_epoch,
    save_partial,
)  # fmt: skip
from sddkd.engine.run_checks import check_architectures, refuse_nonfinite_teacher, refuse_scales_beyond_features
from sddkd.engine.run_teacher import load_run_teacher, refuse_another_teacher
from sddkd.engine.step import TrainStep, make_optimizer
from sddkd.engine.tracking import open_trackers, require_trackers
from sddkd.methods import method_of
from sddkd.models import create_model
from sddkd.rundir.lock import RunLock
from sddkd.rundir.opening import open_run_directory
from sddkd.rundir.record import (
    RunPaths,
    append_metrics,
    fold_epoch,
    new_record,
    read_result,
    run_paths,
    save_config,
    save_final_record,
    save_record,
)  # fmt: skip
from sddkd.rundir.resume import record_from_checkpoint


def train(
    cfg: RunConfig,
    out_root: Path | str = "logs",
    *,
    resume: bool = False,
    restart: bool = False,
    stop_after_epoch: int | None = None,
    console: Console | None = None,
) -> dict[str, Any]:
    """Train one run into `<out_root>/<run_name>/` and return its result record (`result.json`).

    The process owns the run directory (a lock) until it returns. `resume` continues an unfinished run from
    `checkpoints/last.pt`; `restart` discards one and starts over. SIGTERM/SIGINT end the run at the next step
    with a checkpoint and status "interrupted". `stop_after_epoch` ends the process's work after that epoch as an
    interruption would (the run stays unfinished and `resume=True` continues it): used by tests and time-boxed jobs.
    """
    console = console or Console(stderr=True)
    check_architectures(cfg)  # an unknown name is one line before any work or any file
    require_trackers(cfg.engine.tensorboard, cfg.engine.wandb)
    dist = DistContext.from_env()
    placement = resolve_placement(cfg.engine, dist.local_rank if dist.world_size > 1 else None)
    dist.join(placement.device)
    paths: RunPaths = run_paths(cfg, Path(out_root))
    held: list[RunLock] = []

    def open_directory() -> str:
        lock, state = open_run_directory(cfg, paths, resume=resume, restart=restart)
        held.append(lock)
        return state

    # Rank 0 alone owns and reads the directory: other ranks reading it could already see rank 0's first writes.
    state = dist.on_main(open_directory)
    try:
        if state == "finished":
            dist.print(console, f"[green]{paths.root.name}[/] already finished (config hash {config_hash(cfg)}).")
            dist.leave()
            return read_result(paths) or {}
        return _train_owned(cfg, paths, state, dist, placement, console, stop_after_epoch)
    finally:
        for lock in held:
            lock.release()


def _announce(dist: DistContext) -> Any:
    # Plain stderr from the signal handler: a console's lock may be held by the very print it interrupted.
    return (lambda message: sys.stderr.write(message + "\n")) if dist.is_main else None


@dataclass
class _Run:
    """One owned run: what it was started with, and its record and metrics rows as they grow."""

    cfg: RunConfig
    paths: RunPaths
    dist: DistContext
    placement: Placement
    console: Console
    record: dict[str, Any]
    rows: list[dict[str, Any]]
    started: float  # perf_counter() at the start, less the wall time of the processes before a resume


@dataclass
class RunParts:
    """What a run trains with, built once before its first epoch."""

    backbone: nn.Module  # the student network itself, as checkpoints save it
    teacher: nn.Module | None
    teacher_info: dict[str, Any] | None
    train_loader: Any  # a CachedTeacherLoader over the data's loader when the run uses a teacher-logit cache
    test_loader: Any
    loss_fn: LossFn  # its `parameters`: the method's own trained parameters (CTKD's temperature), or None
    optimizer: torch.optim.Optimizer
    step: TrainStep


@dataclass
class _Position:
    """Where the epochs start: epoch 1, or after a checkpoint's epoch and the steps of its partial epoch."""

    start_epoch: int
    global_step: int
    partial: PartialEpoch | None = None
    checkpoint: dict[str, Any] | None = None  # the one resumed from (its RNG state continues a partial epoch)


def _train_owned(
    cfg: RunConfig, paths: RunPaths, state: str, dist: DistContext, placement: Placement, console: Console,
    stop_after_epoch: int | None,
) -> dict[str, Any]:  # fmt: skip
    checkpoint = load_for_resume(cfg, paths, dist) if state == "resume" else None
    run = _open_run(cfg, paths, dist, placement, console, checkpoint)
    tracker = None
    failure: BaseException | None = None
    with stop_on_signals(dist, _announce(dist)) as stop:
        try:
            parts = _build_parts(run, stop)
            at = _restore(run, parts, checkpoint)
            tracker = _start(run, parts)
            if _run_epochs(run, parts, at, tracker, stop, stop_after_epoch):
                run.record.update(status="finished", error=None)
        except StoppedBySignal as exc:  # before the first step (a teacher-cache build): what it committed stays
            run.record.update(status="interrupted", error=f"stopped by {stop.name or 'a signal'} {exc}")
        except KeyboardInterrupt as exc:  # Ctrl-C twice: no checkpoint of this point, the last one stands
            failure = exc
            run.record.update(status="interrupted", error="interrupted by a second Ctrl-C before its checkpoint")
            raise
        except Exception as exc:
            failure = exc
            run.record.update(status="failed", error=str(exc) or type(exc).__name__)
            raise
        finally:
            _finish(run, failure, tracker)
    dist.leave()
    return run.record


def _open_run(
    cfg: RunConfig, paths: RunPaths, dist: DistContext, placement: Placement, console: Console,
    checkpoint: dict[str, Any] | None,
) -> _Run:  # fmt: skip
    """The run's record (a resume's from its checkpoint), written before anything can fail, so that every failure
    shows in the report and --status."""
    if checkpoint is not None:
        refuse_another_teacher(cfg, paths, checkpoint)
    record = record_from_checkpoint(cfg, paths, checkpoint) if checkpoint else new_record(cfg, paths)
    rows: list[dict[str, Any]] = list(checkpoint["metrics"]) if checkpoint else []
    if dist.is_main:
        if checkpoint is not None:
            rebuild_outputs(paths, checkpoint)
        save_config(cfg, paths)
        save_record(paths, record)
    started = time.perf_counter() - float(record.get("wall_seconds") or 0.0)
    return _Run(cfg, paths, dist, placement, console, record, rows, started)


def _build_parts(run: _Run, stop: StopRequest) -> RunParts:
    """Data, student, teacher (checked, and served from its cache when the run uses one), loss, optimizer, step."""
    cfg, dist, placement = run.cfg, run.dist, run.placement
    two_views = len(method_of(cfg.method.name).views) == 2  # MLKD: (weak, strong, labels) batches
    spec, train_loader, test_loader = build_data(cfg.data, cfg.optim.batch_size, placement.device, cfg.seed, dist,
                                                 two_views=two_views)  # fmt: skip
    torch.manual_seed(cfg.seed)  # the same initial weights on every rank (DDP broadcasts rank 0's anyway)
    backbone = create_model(cfg.student, num_classes=spec.num_classes, dataset=spec.model_dataset)
    backbone.to(placement.device)
    if placement.channels_last:
        backbone.to(memory_format=torch.channels_last)
    teacher, teacher_info = load_run_teacher(cfg, spec, placement) if cfg.teacher else (None, None)
    networks = [(f"student {cfg.student}", backbone)]
    networks += [(f"teacher {cfg.teacher.arch}", teacher)] if teacher is not None and cfg.teacher else []
    refuse_scales_beyond_features(networks, test_loader, placement, cfg.scales)
    if teacher is not None:
        from sddkd.engine.teacher_cache_serve import serve_teacher_cache

        refuse_nonfinite_teacher(teacher, test_loader, placement, cfg.scales)
        train_loader = serve_teacher_cache(cfg, train_loader, teacher, teacher_info, placement, dist, run.console,
                                           should_stop=lambda: stop.signum is not None)  # fmt: skip
    loss_fn = make_loss_fn(cfg.method, placement.device)
    student: nn.Module = dist.wrap(RegionModel(backbone, cfg.scales, loss_fn.parameters))
    optimizer = make_optimizer(backbone, cfg.optim, placement.device, loss_fn.parameters)
    step = make_train_step(cfg, student, teacher, optimizer, placement, dist, run.console, loss_fn)
    return RunParts(backbone, teacher, teacher_info, train_loader, test_loader, loss_fn, optimizer, step)


def _restore(run: _Run, parts: RunParts, checkpoint: dict[str, Any] | None) -> _Position:
    """A resume's weights, optimizer and position from its checkpoint; a fresh run measures its teacher instead."""
    if checkpoint is None:
        _measure_teacher(run, parts)
        return _Position(1, 0)
    restore_training_state(checkpoint, parts.backbone, parts.optimizer, parts.loss_fn.parameters)
    saved = checkpoint.get("partial")
    partial = PartialEpoch.from_state(saved, run.placement.device) if saved is not None else None
    at = _Position(checkpoint["epoch"] + 1, checkpoint["global_step"], partial, checkpoint)
    where = f" (step {partial.steps} of {len(parts.train_loader)})" if partial else ""
    run.dist.print(run.console, f"Resuming {run.paths.root.name} at epoch {at.start_epoch}{where}.")
    return at


def _start(run: _Run, parts: RunParts) -> Any:
    """Record and print how the run executes; open its trackers (rank 0), returned."""
    cfg, dist, step = run.cfg, run.dist, parts.step
    execution = run.record["execution"] = {**run.placement.describe(), **step.execution(),
                                           "world_size": dist.world_size}  # fmt: skip
    dist.print(run.console, f"{run.paths.root.name} on {execution['device']}: {execution['precision']}"
                            + (f", compiled ({step.mode})" if step.mode != "eager" else "")
                            + (f", {dist.world_size} processes" if dist.world_size > 1 else ""))  # fmt: skip
    if not dist.is_main:
        return None
    save_record(run.paths, run.record)
    return open_trackers(run.paths.root, cfg.model_dump(mode="json"), tensorboard=cfg.engine.tensorboard,
                         wandb=cfg.engine.wandb, project=cfg.engine.wandb_project)  # fmt: skip


def _run_epochs(
    run: _Run, parts: RunParts, at: _Position, tracker: Any, stop: StopRequest, stop_after_epoch: int | None
) -> bool:
    """The epochs from `at`; True once the run is complete (its epochs or max_steps done)."""
    cfg, global_step, partial = run.cfg, at.global_step, at.partial
    complete = partial is None and _is_complete(cfg, at.start_epoch - 1, global_step)
    bar = run_bar(
        cfg.engine.progress and run.dist.is_main, run.console, epochs=cfg.optim.epochs,
        steps_per_epoch=len(parts.train_loader), max_steps=cfg.optim.max_steps,
        done_steps=global_step + (partial.steps if partial else 0), start_epoch=at.start_epoch,
    )  # fmt: skip
    with bar as advance:
        for epoch in range(at.start_epoch, cfg.optim.epochs + 1):
            if complete:
                break
            carried = partial if partial is not None and partial.epoch == epoch else None
            stats = _train_one(run, parts, epoch, global_step, carried, at.checkpoint, advance, stop)
            if isinstance(stats, PartialEpoch):
                if run.dist.is_main:
                    save_partial(cfg, run.paths, parts.backbone, parts.optimizer, global_step, run.record, run.rows,
                                 stats, parts.loss_fn.parameters)  # fmt: skip
                run.record.update(status="interrupted", error=f"stopped by {stop.name} in epoch {epoch}")
                return False
            global_step += stats.steps
            complete = _is_complete(cfg, epoch, global_step)
            _end_epoch(run, parts, epoch, global_step, stats, complete, advance, tracker)
            if complete or epoch == stop_after_epoch:
                break
    return complete


def _train_one(
    run: _Run, parts: RunParts, epoch: int, global_step: int, carried: PartialEpoch | None,
    checkpoint: dict[str, Any] | None, advance: Any, stop: StopRequest,
) -> EpochStats | PartialEpoch:  # fmt: skip
    """Set the epoch's learning rate, data order and seeds (continuing a partial epoch where it stopped), train it."""
    cfg, dist, loader = run.cfg, run.dist, parts.train_loader
    for group in parts.optimizer.param_groups:
        group["lr"] = lr_at(cfg.optim, epoch)
    loader.set_epoch(epoch, start_step=carried.steps if carried else 0)
    dist.seed_epoch(cfg.seed, epoch)  # dropout masks: per rank, and the same after a resume
    if carried is not None and checkpoint is not None and dist.world_size == 1:
        set_rng_state(checkpoint["rng"])  # the global RNG as it was at that step
    steps_left = None if cfg.optim.max_steps is None else cfg.optim.max_steps - global_step
    if advance is not None:
        epoch_steps = len(loader) if steps_left is None else min(len(loader), steps_left)
        advance.start_epoch(epoch, epoch_steps, carried.steps if carried else 0)
    stats = train_epoch(parts.step, loader, cfg, epoch, dist, steps_left, advance, carried=carried, stop=stop)
    run.record["execution"].update(parts.step.execution())  # eager from here on if compiling failed
    return stats


def _end_epoch(
    run: _Run, parts: RunParts, epoch: int, global_step: int, stats: EpochStats, complete: bool, advance: Any,
    tracker: Any,
) -> None:  # fmt: skip
    """Evaluate (every eval_every epochs and at the end), record, log and checkpoint a finished epoch."""
    cfg, dist = run.cfg, run.dist
    dist.sync_buffers(parts.backbone)  # every rank evaluates (and rank 0 saves) the same BatchNorm stats
    tested = complete or epoch % cfg.engine.eval_every == 0
    test = evaluate(parts.backbone, parts.test_loader, run.placement, dist) if tested else None
    row = _record_epoch(run, epoch, lr_at(cfg.optim, epoch), stats, test, parts.loss_fn.epoch_metrics())
    run.rows.append(row)
    if advance is not None:
        advance.end_epoch(sum(stats.losses.values()), row["images_per_s"])
    if tracker is not None:
        tracker.log_epoch(row)
    if dist.is_main:
        improved = test is not None and run.record["best_epoch"] == epoch
        save_epoch(cfg, run.paths, parts.backbone, parts.optimizer, epoch, global_step, run.record, run.rows,
                   improved, parts.loss_fn.parameters)  # fmt: skip


def _finish(run: _Run, failure: BaseException | None, tracker: Any) -> None:
    """The final record, whatever ended the run (`failure`: the exception that will propagate, if any)."""
    run.record["wall_seconds"] = time.perf_counter() - run.started
    if run.dist.is_main and run.paths.root.exists():
        fault_point("before-final-record")
        save_final_record(run.paths, run.record, failure)
    if tracker is not None:
        tracker.close()


def _is_complete(cfg: RunConfig, epochs_done: int, global_step: int) -> bool:
    out_of_steps = cfg.optim.max_steps is not None and global_step >= cfg.optim.max_steps
    return epochs_done >= cfg.optim.epochs or out_of_steps


def _measure_teacher(run: _Run, parts: RunParts) -> None:
    """A fresh run records the teacher's measured accuracy."""
    if parts.teacher is None or run.cfg.teacher is None:
        return
    measured = evaluate(parts.teacher, parts.test_loader, run.placement, run.dist)
    run.record["teacher_checkpoint"] = {**(parts.teacher_info or {}), "test_top1": measured["top1"],
                                        "test_top5": measured["top5"]}  # fmt: skip
    run.dist.print(run.console, f"Teacher {run.cfg.teacher.arch}: test top-1 {measured['top1']:.2f}%, "
                                f"top-5 {measured['top5']:.2f}%")  # fmt: skip


def _record_epoch(
    run: _Run, epoch: int, lr: float, stats: EpochStats, test: dict[str, Any] | None,
    method_metrics: dict[str, float] | None = None,
) -> dict[str, Any]:  # fmt: skip
    """Fold one epoch into the run record and the metrics log, print its one-line summary, return its row.
    `method_metrics`: the method's numbers at the epoch's end (CTKD: its learned `temperature`)."""
    record, dist = run.record, run.dist
    row: dict[str, Any] = {
        "epoch": epoch, "lr": lr, "losses": stats.losses, "train_top1": stats.train_top1,
        "images_per_s": stats.samples / max(stats.seconds, 1e-9), "seconds": stats.seconds,
        "nonfinite_steps": stats.nonfinite_steps, "steps": stats.steps,
    }  # fmt: skip
    if method_metrics:
        row["method_metrics"] = dict(method_metrics)
    if test is not None:
        row.update(test_top1=test["top1"], test_top5=test["top5"])
    fold_epoch(record, epoch, test, time.perf_counter() - run.started)
    if dist.is_main:
        append_metrics(run.paths, row)
        fault_point("after-metrics")
    losses = " ".join(f"{k} {v:.4f}" for k, v in stats.losses.items())
    losses += "".join(f" {k} {v:.4g}" for k, v in (method_metrics or {}).items())
    tested = f" test {test['top1']:.2f}/{test['top5']:.2f}" if test else ""
    skipped = f" [yellow]{stats.nonfinite_steps} non-finite steps skipped[/]" if stats.nonfinite_steps else ""
    dist.print(
        run.console,
        f"epoch {epoch}/{run.cfg.optim.epochs} lr {lr:.4g} {losses} train {stats.train_top1:.2f}{tested} "
        f"best {record['best_top1'] or 0:.2f} ({row['images_per_s']:.0f} img/s, {stats.seconds:.1f}s){skipped}",
    )
    return row
