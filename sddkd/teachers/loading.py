"""Reading teacher checkpoints safely: every accepted file format, strict loading into an architecture.

Checkpoints are read with `torch.load(weights_only=True)`: a downloaded pickle never runs code. The store
(`sddkd.teachers.store`) and the sources (`sddkd.teachers.sources`) build on this module; it imports neither.
"""

from __future__ import annotations

import pickle
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from sddkd.datasets import PUBLISHED_DATASETS, dataset_spec
from sddkd.download import FetchError

# Keys under which training scripts store the weights and the test accuracy they reached.
STATE_DICT_KEYS = ("model", "state_dict", "net")
ACCURACY_KEYS = ("accuracy", "best_acc", "best_top1", "test_top1")


class TeacherError(FetchError):
    """A teacher that is missing, changed, unsafe or does not fit its architecture; one sentence naming the fix."""


def read_checkpoint(path: Path) -> tuple[dict[str, torch.Tensor], float | None]:
    """(state dict without a DataParallel `module.` prefix, recorded top-1 or None) from any accepted format.

    Accepted: RepDistiller `{'epoch','model','accuracy','optimizer'}`, mdistiller `{'model'}`, this toolkit's
    checkpoints, or a bare state dict.
    """
    state_dict, recorded, _config = _read(path)
    return state_dict, recorded


def _read(path: Path) -> tuple[dict[str, torch.Tensor], float | None, dict[str, Any] | None]:
    """read_checkpoint plus the run config this toolkit's checkpoints carry (None for published files)."""
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        culprit = re.search(r"GLOBAL (\S+)", str(exc))  # the weights-only unpickler names what it refused
        if culprit is None:
            raise TeacherError(f"{path} is not a readable torch checkpoint; download it again") from None
        raise TeacherError(
            f"{path} was refused: it is not a plain weights file and unpickling it would run code (it asks for "
            f"{culprit.group(1)}); use the published checkpoint or a state dict saved with torch.save"
        ) from None
    except (RuntimeError, EOFError, OSError, ValueError, KeyError, IndexError, TypeError, AttributeError) as exc:
        # torch raises any of these for a truncated or scrambled file (which one depends on the bytes and the torch
        # release: 2.11's weights-only unpickler raises IndexError where 2.14 raises UnpicklingError)
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise TeacherError(f"{path} is not a readable torch checkpoint ({reason}); download it again") from None
    if not isinstance(payload, dict):
        raise TeacherError(f"{path} holds a {type(payload).__name__}, not a checkpoint dict or a state dict")
    recorded = _recorded_accuracy(payload)
    config = payload.get("config") if isinstance(payload.get("config"), dict) else None
    for key in STATE_DICT_KEYS:
        if isinstance(payload.get(key), dict):
            payload = payload[key]
            break
    if not payload or not all(isinstance(v, torch.Tensor) for v in payload.values()):
        keys = ", ".join(sorted(map(str, payload))[:6])
        raise TeacherError(f"{path} holds no state dict (top-level keys: {keys}); expected 'model' or tensors")
    state_dict = {k.removeprefix("module."): v for k, v in payload.items()}
    return state_dict, recorded, config


def _recorded_accuracy(payload: Mapping[str, Any]) -> float | None:
    for key in ACCURACY_KEYS:
        value = payload.get(key)
        if isinstance(value, torch.Tensor) and value.numel() == 1:
            return round(float(value), 4)
        if isinstance(value, int | float) and not isinstance(value, bool):
            return round(float(value), 4)
    return None


def _geometry(dataset: str, config: dict[str, Any] | None, checkpoint: Path) -> tuple[str, int]:
    """(model geometry, class count) of a teacher for `dataset`: fixed for the real datasets; for generated data
    read from the run config the engine saves in its checkpoints (the smoke suite registers such teachers)."""
    if dataset in PUBLISHED_DATASETS:
        spec = dataset_spec(dataset)
        return spec.model_dataset, spec.num_classes
    if config is None:
        raise TeacherError(
            f"{checkpoint} carries no run config, so its {dataset} class count is unknown; register the "
            "checkpoints/best.pt that `sddkd train` wrote"
        )
    from sddkd.config import RunConfig

    try:
        data = RunConfig.model_validate(config).data
    except ValueError:  # pydantic's ValidationError: a config of another sddkd version
        raise TeacherError(f"{checkpoint} carries a run config this sddkd cannot read; train it again") from None
    return data.spec.model_dataset, data.spec.num_classes


def _build_model(arch: str, dataset: str, num_classes: int) -> nn.Module:
    from sddkd.models import create_model

    try:
        return create_model(arch, num_classes=num_classes, dataset=dataset)
    except (KeyError, ValueError) as exc:
        raise TeacherError(f"cannot build teacher architecture {arch!r} for {dataset}: {exc}") from None


def load_strict(
    model: nn.Module, state_dict: Mapping[str, torch.Tensor], *, arch: str, source: Path, dataset: str
) -> None:
    """load_state_dict(strict=True), reporting the first missing, unexpected or misshaped key in one line."""
    expected = model.state_dict()
    problem = None
    for key, tensor in expected.items():
        if key not in state_dict:
            problem = f"it lacks {key!r}"
        elif tuple(state_dict[key].shape) != tuple(tensor.shape):
            got, want = tuple(state_dict[key].shape), tuple(tensor.shape)
            problem = f"{key!r} has shape {got}, the architecture needs {want}"
        if problem:
            break
    else:
        unexpected = [k for k in state_dict if k not in expected]
        if unexpected:
            problem = f"it has the unexpected key {unexpected[0]!r}"
    if problem:
        raise TeacherError(
            f"{source} does not fit {arch} on {dataset}: {problem}; use the {dataset} checkpoint trained for {arch} "
            f"(`sddkd fetch-teachers --dataset {dataset} --arch {arch}`) or pass the right --arch"
        )
    model.load_state_dict(state_dict, strict=True)
