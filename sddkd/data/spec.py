"""What the engine and the models need to know about a dataset, and the errors a user can cause with data.

Kept free of data loading so the engine can ask for class counts and geometry before any file is read.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sddkd.data.synthetic import SyntheticConfig
from sddkd.errors import UserError

DATASET_NAMES = ("cifar100", "cub200", "imagenet", "synthetic")

# Per-channel statistics of the inputs after ToTensor (values in [0, 1]).
CIFAR100_MEAN = (0.5071, 0.4867, 0.4408)
CIFAR100_STD = (0.2675, 0.2565, 0.2761)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class DataMissingError(UserError):
    """A dataset is not where it should be; the message is one line naming the command that fixes it."""


class DataFormatError(UserError):
    """Dataset files exist but are not what they should be; the message names the fix."""


@dataclass(frozen=True)
class DatasetSpec:
    """Static facts about a dataset.

    image_size: side of the (square) training crop the model sees.
    model_dataset: the geometry models are built for (`create_model(..., dataset=model_dataset)`):
        "cifar100" for 32-px inputs, "cub200" for 224-px inputs with CIFAR-style nets, "imagenet".
    """

    name: str
    num_classes: int
    image_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    model_dataset: str


_FIXED_SPECS = {
    "cifar100": DatasetSpec("cifar100", 100, 32, CIFAR100_MEAN, CIFAR100_STD, "cifar100"),
    "cub200": DatasetSpec("cub200", 200, 224, IMAGENET_MEAN, IMAGENET_STD, "cub200"),
    "imagenet": DatasetSpec("imagenet", 1000, 224, IMAGENET_MEAN, IMAGENET_STD, "imagenet"),
}


def synthetic_spec(config: SyntheticConfig) -> DatasetSpec:
    """32-px synthetic data imitates CIFAR-100 (its statistics and nets); 224-px imitates CUB-200."""
    if config.image_size == 32:
        return DatasetSpec("synthetic", config.num_classes, 32, CIFAR100_MEAN, CIFAR100_STD, "cifar100")
    return DatasetSpec("synthetic", config.num_classes, 224, IMAGENET_MEAN, IMAGENET_STD, "cub200")


def dataset_spec(name: str, **options: Any) -> DatasetSpec:
    """The spec of `name`; `synthetic` takes SyntheticConfig's fields as options (num_classes, image_size)."""
    if name == "synthetic":
        return synthetic_spec(SyntheticConfig.from_options(options))
    if name not in _FIXED_SPECS:
        raise ValueError(f"unknown dataset {name!r}; choose one of {', '.join(DATASET_NAMES)}")
    if options:
        raise ValueError(f"dataset {name!r} takes no options (got {', '.join(sorted(options))})")
    return _FIXED_SPECS[name]
