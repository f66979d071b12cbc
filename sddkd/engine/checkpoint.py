"""Checkpoints and RNG state: saved atomically through `sddkd.files` (a crash never leaves half a checkpoint).

Checkpoints hold only tensors and plain Python values, so they load with `torch.load(..., weights_only=True)`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from sddkd.files import atomic_write


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    atomic_write(path, lambda f: torch.save(state, f))


def load_checkpoint(path: Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a checkpoint without running any pickled code (weights_only=True)."""
    state = torch.load(path, map_location=map_location, weights_only=True)
    if not isinstance(state, dict):
        raise ValueError(f"{path} is not an sddkd checkpoint (expected a dict)")
    return state


def rng_state() -> dict[str, Any]:
    """The global RNG states (CPU and every CUDA device), for an exact resume."""
    state: dict[str, Any] = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
