"""One epoch of training and the step it repeats: `make_train_step` builds the run's optimizer step once, and
`train_epoch` makes one pass over the training data with it. The loop (`sddkd.engine.loop`) strings the epochs
together; the benchmarks drive these two directly.

Loss sums, accuracy counts and the non-finite counter stay tensors on the device, read back once per epoch, so a
step never waits for the GPU.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import torch
from rich.console import Console
from rich.markup import escape
from torch import nn

from sddkd.config import OptimConfig, RunConfig
from sddkd.engine.compile_cache import compile_cache_key, use_compile_cache
from sddkd.engine.distill import LossFn, make_loss_fn
from sddkd.engine.distributed import DistContext
from sddkd.engine.faults import fault_point
from sddkd.engine.interrupts import StopRequest
from sddkd.engine.placement import Placement
from sddkd.engine.resume import PartialEpoch
from sddkd.engine.step import TrainStep, resolve_compile
from sddkd.errors import UserError
from sddkd.scales import format_scales

NONFINITE_CHECK_EVERY = 200  # steps between the (rare) host syncs that look for a non-finite loss under "fail"


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
    *,
    carried: PartialEpoch | None = None,
    stop: StopRequest | None = None,
) -> EpochStats | PartialEpoch:
    """One pass over the training data; at most `max_steps` optimizer steps (counted from the epoch's start).

    `carried`: the totals of this epoch's steps done before a resume (the loader was set to start after them).
    Returns the epoch's stats, or, when `stop` comes due at a step boundary, the partial epoch to checkpoint.
    """
    step.student.train()
    device = step.placement.device
    names = step.loss_fn.names
    weights = step.term_weights(epoch)  # [T] this epoch's loss weights
    if carried is not None and dist.is_main:  # under DDP the carried totals are global: count them once
        sums, correct, nonfinite = carried.sums.clone(), carried.correct.clone(), carried.nonfinite.clone()
    else:
        sums = torch.zeros(len(names), device=device)  # [T] weighted loss terms summed over steps
        correct = torch.zeros((), device=device)
        nonfinite = torch.zeros((), device=device, dtype=torch.int64)
    steps = carried.steps if carried is not None else 0
    samples = carried.samples if carried is not None else 0
    start = time.perf_counter() - (carried.seconds if carried is not None else 0.0)
    two_views = len(step.loss_fn.views) == 2
    for batch in loader:
        # (images, labels) or, for MLKD, (weak, strong, labels); a teacher-logit cache appends the teacher logits
        if two_views:
            images, strong, labels, *cached_teacher = batch
        else:
            (images, labels, *cached_teacher), strong = batch, None
        if max_steps is not None and steps >= max_steps:
            break
        if stop is not None and stop.due(steps, device):
            partial = [sums, torch.stack([correct.float(), nonfinite.float()])]
            totals = dist.all_reduce_sum(torch.cat(partial)) if dist.world_size > 1 else None
            if totals is not None:  # rank 0 carries the global totals after a resume, the other ranks zeros
                sums, correct, nonfinite = totals[:-2], totals[-2], totals[-1].long()
            return PartialEpoch(epoch, steps, samples, time.perf_counter() - start, sums, correct, nonfinite)
        terms, finite, batch_correct = step(images, labels, weights, *cached_teacher, strong=strong)
        sums += terms
        nonfinite += (~finite).long()
        correct += batch_correct
        steps += 1
        samples += labels.numel()
        fault_point("mid-epoch")
        if progress is not None:
            progress(steps, samples, time.perf_counter() - start, sums)  # read back at most once a second
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
    limit = cfg.engine.nonfinite_skip_limit
    if cfg.engine.nonfinite == "skip" and skipped_steps > limit * max(steps, 1):
        raise NonFiniteLossError(
            f"{skipped_steps} of {steps} steps of epoch {epoch} had a non-finite loss and were skipped, more than "
            f"engine.nonfinite_skip_limit={limit:g} of them: the run is diverging (lower the learning rate) or an "
            "input is broken (check the teacher and the data)"
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


def make_train_step(
    cfg: RunConfig, student: nn.Module, teacher: nn.Module | None, optimizer: torch.optim.Optimizer,
    placement: Placement, dist: DistContext, console: Console | None = None, loss_fn: LossFn | None = None,
) -> TrainStep:  # fmt: skip
    """The run's optimizer step (compiled per `engine.compile`); built once, reused by every epoch. `loss_fn`: the
    method's loss, when its parameters already joined the student and the optimizer."""
    warn = {} if console is None else {"warn": lambda text: dist.print(console, f"[yellow]warning:[/] {escape(text)}")}
    compile = resolve_compile(cfg.engine.compile, placement.device)
    batch = cfg.optim.batch_size // dist.world_size
    cache = None
    if compile:  # before the first compile: runs of the same pair, batch and M share their compiled code
        teacher_arch = cfg.teacher.arch if cfg.teacher is not None else None
        scales, device = format_scales(cfg.scales), placement.describe()["device"]
        cache = use_compile_cache(compile_cache_key(teacher_arch, cfg.student, batch, scales, device))
    if loss_fn is None:
        loss_fn = make_loss_fn(cfg.method, placement.device)
        if loss_fn.parameters is not None:  # they would be in no optimizer and no DDP module: silently untrained
            raise ValueError(f"{cfg.method.name} trains parameters of its own: build its loss first, let them join "
                             "the student and the optimizer, and pass it as loss_fn (as engine.loop does)")  # fmt: skip
    step = TrainStep(
        student, teacher, loss_fn, optimizer, placement,
        scales=cfg.scales,
        batch_size=batch, nonfinite=cfg.engine.nonfinite, grad_clip=cfg.optim.grad_clip, compile=compile, dist=dist,
        **warn,
    )  # fmt: skip
    step.compile_cache = cache
    return step
