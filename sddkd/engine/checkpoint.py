"""Checkpoints and RNG state: saved atomically through `sddkd.files` (a crash never leaves half a checkpoint),
checksummed, and verified when loaded (a damaged file is refused, never resumed).

Checkpoints hold only tensors and plain Python values, so they load with `torch.load(..., weights_only=True)`, always
to the CPU: the caller moves what it needs to its device, and RNG states stay the CPU ByteTensors that
`torch.set_rng_state` requires. The checksum is a sha256 over the loaded content (every key path, every tensor's
dtype, shape and bytes, every plain value), stored under `CHECKSUM_KEY` inside the file itself: it survives the
atomic write (one file, one rename) and catches damage the zip container does not (torch does not verify its
CRCs: flipped bytes in a tensor load silently).
"""

from __future__ import annotations

import hashlib
import pickle
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from sddkd.errors import DamagedCheckpointError, UserError
from sddkd.files import atomic_write

CHECKSUM_KEY = "sha256"


def _feed(digest: Any, key: str, value: Any) -> None:
    digest.update(key.encode())
    if isinstance(value, torch.Tensor):
        tensor = value.detach().cpu().contiguous()
        digest.update(f"{tensor.dtype}{tuple(tensor.shape)}".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    elif isinstance(value, dict):
        digest.update(b"{")
        for k in sorted(value, key=repr):
            _feed(digest, f"{key}/{k!r}", value[k])
        digest.update(b"}")
    elif isinstance(value, (list, tuple)):
        digest.update(b"[" if isinstance(value, list) else b"(")
        for i, item in enumerate(value):
            _feed(digest, f"{key}/{i}", item)
        digest.update(b"]")
    else:
        digest.update(repr((type(value).__name__, value)).encode())


def content_checksum(state: dict[str, Any]) -> str:
    """sha256 of everything in `state` except the checksum itself, independent of the device tensors live on."""
    digest = hashlib.sha256()
    _feed(digest, "", {k: v for k, v in state.items() if k != CHECKSUM_KEY})
    return digest.hexdigest()


def _tensor_bytes(value: Any) -> int:
    if isinstance(value, torch.Tensor):
        return value.numel() * value.element_size()
    if isinstance(value, dict):
        return sum(_tensor_bytes(v) for v in value.values())
    if isinstance(value, (list, tuple)):
        return sum(_tensor_bytes(v) for v in value)
    return 0


def save_checkpoint(path: Path, state: dict[str, Any], before_rename: Callable[[], object] | None = None) -> None:
    """Write `state` plus its checksum atomically; `before_rename` runs between the write and the rename."""
    payload = {**state, CHECKSUM_KEY: content_checksum(state)}
    atomic_write(path, lambda f: torch.save(payload, f), needed=_tensor_bytes(payload) + 65536,
                 before_rename=before_rename)  # fmt: skip


def _unreadable_reason(exc: BaseException) -> str:
    """Why torch could not read a file, in a few words (its own messages run to paragraphs)."""
    text = str(exc)
    if "Weights only load failed" in text or isinstance(exc, pickle.UnpicklingError):
        return "not a PyTorch checkpoint of weights: another kind of file, or a pickle that would need to run code"
    if isinstance(exc, zipfile.BadZipFile) or "zip archive" in text or "central directory" in text:
        return "a truncated or damaged PyTorch file"
    first = text.splitlines()[0] if text else type(exc).__name__
    return first if len(first) <= 120 else first[:117].rsplit(" ", 1)[0] + "…"


def load_checkpoint(path: Path, map_location: str | torch.device = "cpu", *, verify: bool = False) -> dict[str, Any]:
    """Load a checkpoint without running any pickled code (weights_only=True).

    verify=True (what a resume uses): the file must carry a checksum that matches its content; any unreadable,
    damaged or foreign file is a `DamagedCheckpointError` of one sentence. Files of other tools (published
    teachers) carry no checksum and load with verify=False.
    """
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except FileNotFoundError:
        raise
    except (RuntimeError, EOFError, ValueError, OSError, pickle.UnpicklingError, zipfile.BadZipFile,
            KeyError, IndexError, TypeError, AttributeError) as exc:  # fmt: skip
        # torch raises any of these for a truncated, empty or scrambled file; none of them is a bug of ours
        if isinstance(exc, PermissionError):
            raise UserError(f"no permission to read {path}; fix its permissions") from exc
        if isinstance(exc, OSError) and exc.errno is not None:
            raise  # an I/O error of the machine, not of the file's content
        raise DamagedCheckpointError(f"{path} cannot be read ({_unreadable_reason(exc)})") from exc
    if not isinstance(state, dict):
        raise DamagedCheckpointError(f"{path} is not an sddkd checkpoint (expected a dict)")
    if verify:
        stored = state.get(CHECKSUM_KEY)
        if stored is None:
            raise DamagedCheckpointError(f"{path} carries no checksum (not written by this sddkd)")
        if stored != content_checksum(state):
            raise DamagedCheckpointError(f"{path} is damaged (its content does not match its sha256 checksum)")
    return state


def rng_state() -> dict[str, Any]:
    """The global RNG states (CPU, and the current CUDA device's), for an exact resume.

    Only the current device: a process trains on one GPU, and the set of visible GPUs can shrink between save and
    resume (a suite child with its own CUDA_VISIBLE_DEVICES, a smaller node); states saved for every visible GPU
    and restored by index then fail on the missing ones."""
    state: dict[str, Any] = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state()  # the current device's ByteTensor
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    saved = state.get("cuda")
    if saved is None or not torch.cuda.is_available():
        return
    if isinstance(saved, (list, tuple)):
        # Older checkpoints held one state per visible GPU: the current device's entry, where it exists, is what
        # that run's own device used (its index under the same visibility); else the first, a run's usual device.
        if not saved:
            return
        current = torch.cuda.current_device()
        saved = saved[current] if current < len(saved) else saved[0]
    torch.cuda.set_rng_state(saved)  # onto the current device
