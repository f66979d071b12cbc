"""Process-group context: one object the engine asks about ranks, reductions, wrapping, seeding and printing.

Under `torchrun` (RANK / WORLD_SIZE / LOCAL_RANK set) every process trains one shard of each global batch with
DistributedDataParallel; without those variables it is a single process and every method is a no-op. The rules:

- Batch: the preset's batch is the global batch; each rank takes `batch / world_size` (the engine refuses a batch
  that does not split evenly). The learning rate is never scaled: a preset's LR belongs to its global batch.
- Data: every rank builds the same loaders and reads its own shard of the (seed, epoch) permutation
  (`sddkd.data.loader`), so the union of the ranks' step-s batches is the single-process step-s batch.
- Weights: every rank seeds the same initial weights, and DDP broadcasts rank 0's parameters and buffers when it
  wraps the model anyway. The RNG streams used while training (dropout, stochastic depth) are seeded per rank
  and per epoch, so ranks draw different masks and a resumed run draws what an uninterrupted one draws.
- BatchNorm: plain BatchNorm per GPU, as the torchvision / mdistiller ImageNet recipes train (no SyncBatchNorm);
  DDP keeps the running statistics of rank 0, and `sync_buffers` copies them to every rank before evaluation.
- Files and output: rank 0 alone decides the run directory's state (`on_main`), writes files and prints.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import torch
import torch.distributed as torch_dist
from torch import Tensor, nn

from sddkd.errors import UserError

T = TypeVar("T")


@dataclass(frozen=True)
class DistContext:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @classmethod
    def from_env(cls) -> DistContext:
        """The ranks torchrun announces in the environment; call `join` once the device is known."""
        world_size = int(os.environ.get("WORLD_SIZE", "1"))
        if world_size <= 1:
            return cls()
        rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
        return cls(rank=rank, world_size=world_size, local_rank=local_rank)

    @property
    def is_main(self) -> bool:
        """Only rank 0 writes files and prints."""
        return self.rank == 0

    def join(self, device: torch.device) -> None:
        """Join torchrun's process group: NCCL for a CUDA device, gloo for the CPU."""
        if self.world_size <= 1 or torch_dist.is_initialized():
            return
        torch_dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")

    def leave(self) -> None:
        """Destroy the process group at the end of a run (torchrun ends the processes of a failed one)."""
        if self.world_size > 1 and torch_dist.is_initialized():
            torch_dist.destroy_process_group()

    def on_main(self, decide: Callable[[], T]) -> T:
        """Run `decide` on rank 0 alone and give every rank its result, or raise its error on every rank.

        Used for the run directory's state: ranks reading it themselves could see rank 0's first writes.
        """
        if self.world_size <= 1:
            return decide()
        outcome: list[Any] = [None]
        error: BaseException | None = None
        if self.is_main:
            try:
                outcome = [("ok", decide())]
            except Exception as exc:  # every rank must hear of it, or the others wait in the next collective
                error = exc
                outcome = [("user" if isinstance(exc, UserError) else "crash", str(exc) or type(exc).__name__)]
        torch_dist.broadcast_object_list(outcome, src=0)
        if error is not None:
            raise error
        kind, value = outcome[0]
        if kind == "ok":
            return value
        raise UserError(value) if kind == "user" else RuntimeError(f"rank 0 failed: {value}")

    def all_reduce_sum(self, tensor: Tensor) -> Tensor:
        if self.world_size > 1:
            torch_dist.all_reduce(tensor, op=torch_dist.ReduceOp.SUM)
        return tensor

    def all_reduce_max(self, tensor: Tensor) -> Tensor:
        if self.world_size > 1:
            torch_dist.all_reduce(tensor, op=torch_dist.ReduceOp.MAX)
        return tensor

    def wrap(self, model: nn.Module) -> nn.Module:
        """DistributedDataParallel across ranks (it broadcasts rank 0's weights); the model itself in one process."""
        if self.world_size <= 1:
            return model
        device = next(model.parameters()).device
        return nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)

    def sync_buffers(self, model: nn.Module) -> None:
        """Give every rank rank 0's buffers (BatchNorm running statistics).

        DDP broadcasts them before each forward, so after the last step each rank holds its own last update:
        syncing makes every rank evaluate the model rank 0 saves.
        """
        if self.world_size > 1:
            for buffer in model.buffers():
                torch_dist.broadcast(buffer, src=0)

    def seed_epoch(self, seed: int, epoch: int) -> None:
        """Seed the global RNGs (CPU and CUDA) from (seed, rank, epoch): each rank draws its own dropout masks,
        and an epoch draws the same ones whether or not the run was resumed before it."""
        digest = hashlib.blake2b(f"sddkd/train/{seed}/{self.rank}/{epoch}".encode(), digest_size=8).digest()
        torch.manual_seed(int.from_bytes(digest, "little") >> 1)  # 63 bits: a valid seed

    def print(self, console: Any, message: str) -> None:
        if self.is_main:
            # soft_wrap: a piped log (suite stdout.log, SLURM) keeps each line whole instead of wrapping at 80 columns
            console.print(message, highlight=False, soft_wrap=True)
