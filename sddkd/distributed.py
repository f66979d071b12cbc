"""Process-group context: one object the engine asks about ranks, reductions, wrapping and printing.

Under `torchrun` (RANK / WORLD_SIZE / LOCAL_RANK set) it joins the process group: NCCL on CUDA, gloo on CPU.
Without those variables it is a single process and every method is a no-op.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as torch_dist
from torch import Tensor, nn


@dataclass(frozen=True)
class DistContext:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @classmethod
    def from_env(cls) -> DistContext:
        world_size = int(os.environ.get("WORLD_SIZE", "1"))
        if world_size <= 1:
            return cls()
        rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
        if not torch_dist.is_initialized():
            backend = "nccl" if torch.cuda.is_available() else "gloo"
            torch_dist.init_process_group(backend=backend)
        return cls(rank=rank, world_size=world_size, local_rank=local_rank)

    @property
    def is_main(self) -> bool:
        """Only rank 0 writes files and prints."""
        return self.rank == 0

    def all_reduce_sum(self, tensor: Tensor) -> Tensor:
        if self.world_size > 1:
            torch_dist.all_reduce(tensor, op=torch_dist.ReduceOp.SUM)
        return tensor

    def wrap(self, model: nn.Module) -> nn.Module:
        """DistributedDataParallel across ranks; the model itself in a single process."""
        if self.world_size <= 1:
            return model
        device = next(model.parameters()).device
        return nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)

    def print(self, console: Any, message: str) -> None:
        if self.is_main:
            console.print(message, highlight=False)
