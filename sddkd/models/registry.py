"""The model registry: one name -> one factory, each tagged with the datasets (input geometries) it supports.

Architectures register themselves with `@register_model(name, datasets=...)` when their module is imported
(`sddkd.models` imports them all). The registry knows nothing of weights or file paths: checkpoints belong to
`sddkd.teachers`.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from torch import nn

from sddkd.datasets import MODEL_GEOMETRIES, ModelGeometry
from sddkd.models.base import ImageClassifier

# The datasets a network can be built for are the input geometries of `sddkd.datasets`.
Dataset = ModelGeometry
DATASETS: tuple[str, ...] = MODEL_GEOMETRIES

# A factory builds a fresh, randomly initialised network for `num_classes` classes and the dataset's geometry.
ModelFactory = Callable[[int, str], nn.Module]
F = TypeVar("F", bound=ModelFactory)


@dataclass(frozen=True)
class ModelEntry:
    name: str
    factory: ModelFactory
    datasets: tuple[str, ...]


_REGISTRY: dict[str, ModelEntry] = {}


def register_model(name: str, datasets: tuple[str, ...]) -> Callable[[F], F]:
    """Decorator: register `factory(num_classes, dataset) -> nn.Module` under `name` for `datasets`."""
    unknown = [d for d in datasets if d not in DATASETS]
    if not datasets or unknown:
        raise ValueError(f"register_model({name!r}): datasets must be a non-empty subset of {DATASETS}")

    def decorator(factory: F) -> F:
        if name in _REGISTRY:
            raise ValueError(f"model {name!r} is registered twice")
        _REGISTRY[name] = ModelEntry(name, factory, tuple(datasets))
        return factory

    return decorator


def list_models(dataset: str | None = None) -> list[str]:
    """Registered names in registration order, optionally only those available for `dataset`."""
    if dataset is not None:
        _check_dataset(dataset)
    return [e.name for e in _REGISTRY.values() if dataset is None or dataset in e.datasets]


def create_model(name: str, num_classes: int = 100, dataset: str = "cifar100") -> ImageClassifier:
    """Build the registered network `name` for `dataset` ("cifar100", "cub200" or "imagenet").

    The result maps images to logits `[B, num_classes]` and exposes `forward_features` and `get_classifier`.
    Raises ValueError naming close matches for an unknown name, or the supported datasets for a known one.
    """
    _check_dataset(dataset)
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"num_classes must be a positive integer, got {num_classes!r}")
    entry = _REGISTRY.get(name)
    if entry is None:
        raise ValueError(_unknown_name_message(name))
    if dataset not in entry.datasets:
        supported = ", ".join(entry.datasets)
        same_dataset = close_matches(name, list_models(dataset))
        hint = f" (for {dataset} did you mean {' or '.join(same_dataset)}?)" if same_dataset else ""
        raise ValueError(f"model {name!r} is not available for dataset {dataset!r}; it supports {supported}{hint}")
    model = entry.factory(num_classes, dataset)
    assert isinstance(model, ImageClassifier), f"{name} must subclass ImageClassifier (forward_features, classifier)"
    return model


def _check_dataset(dataset: str) -> None:
    if dataset not in DATASETS:
        raise ValueError(f"unknown dataset {dataset!r}; expected one of {', '.join(DATASETS)}")


def close_matches(name: str, candidates: list[str]) -> list[str]:
    """Up to three of `candidates` that look like `name`, for a "did you mean" hint."""
    # Compare case-insensitively: the field's names mix cases (resnet18 on ImageNet, ResNet18 on CIFAR).
    by_lower = {c.lower(): c for c in candidates}
    return [by_lower[m] for m in difflib.get_close_matches(name.lower(), list(by_lower), n=3, cutoff=0.6)]


def _unknown_name_message(name: str) -> str:
    matches = close_matches(name, list(_REGISTRY))
    hint = f"; did you mean {', '.join(matches)}?" if matches else "."
    return (
        f"unknown model {name!r}{hint} "
        "Call sddkd.models.list_models() (optionally with a dataset) to see every registered name."
    )
