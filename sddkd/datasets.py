"""Every fact about a dataset that holds before a file is read: its name, classes, geometry and statistics, the
training augmentation, whether MLKD's two views and an exact teacher-logit cache apply, and its synthetic stand-in.

One torch-free home, read by all who need these facts: the config validates against it, the model registry takes
its geometries, the CLI its names, the loaders their crops, the teacher-logit cache its view counts, the suite its
cache plans and the synthetic generator its shape. Reading files is `sddkd.data`'s work; a new dataset is one entry
here plus its reader there.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, field_validator

DatasetName = Literal["cifar100", "cub200", "imagenet", "synthetic"]
DATASET_NAMES: tuple[str, ...] = get_args(DatasetName)

# The datasets that have files to prepare and published teachers; synthetic data is generated and has neither.
PublishedDataset = Literal["cifar100", "cub200", "imagenet"]
PUBLISHED_DATASETS: tuple[str, ...] = get_args(PublishedDataset)

# The input geometries a network is built for: 32 px CIFAR; 224 px CUB, served by the CIFAR-style nets with the SDD
# authors' 224 px stem; ImageNet's own nets.
ModelGeometry = Literal["cifar100", "cub200", "imagenet"]
MODEL_GEOMETRIES: tuple[str, ...] = get_args(ModelGeometry)
CIFAR_STYLE_GEOMETRIES: tuple[str, ...] = ("cifar100", "cub200")  # ResNet, WRN, VGG, MobileNetV2, ShuffleNet

# Per-channel statistics of the inputs after ToTensor (values in [0, 1]).
CIFAR100_MEAN = (0.5071, 0.4867, 0.4408)
CIFAR100_STD = (0.2675, 0.2565, 0.2761)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# 224 px training crops come from images stored at 256 px (CUB's Resize((256, 256)), and synthetic data's likewise).
STORED_SIZE_FOR_224 = 256
CIFAR_PADDING = 4  # zero padding before the random 32 px crop

# Beyond this many distinct training views per image, an exact teacher-logit cache costs more teacher passes than a
# whole 240-epoch run makes.
EXACT_CACHE_MAX_VIEWS = 240


class SyntheticConfig(BaseModel):
    """The embedded offline dataset: generated deterministically from `seed` (not the run's seed), no files."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    num_classes: int = Field(100, ge=2)
    image_size: int = 32  # 32 px follows the CIFAR-100 path, 224 px the CUB-200 path
    train_per_class: int = Field(50, ge=1)
    test_per_class: int = Field(10, ge=1)
    seed: int = 0

    @field_validator("image_size")
    @classmethod
    def _a_known_geometry(cls, value: int) -> int:
        if value not in (32, 224):
            raise ValueError(f"synthetic image_size must be 32 or 224, got {value}")
        return value

    @classmethod
    def from_options(cls, options: SyntheticConfig | Mapping[str, Any] | None) -> SyntheticConfig:
        """Accept a config, a mapping of its fields (e.g. a model dump) or None (the defaults)."""
        if options is None:
            return cls()
        if isinstance(options, SyntheticConfig):
            return options
        unknown = sorted(set(options) - set(cls.model_fields))
        if unknown:
            allowed = ", ".join(sorted(cls.model_fields))
            raise ValueError(f"unknown synthetic option(s) {', '.join(unknown)}; allowed: {allowed}")
        return cls(**dict(options))

    @property
    def stored_size(self) -> int:
        """The side of the generated images the training crops are taken from."""
        return STORED_SIZE_FOR_224 if self.image_size == 224 else self.image_size


@dataclass(frozen=True)
class TrainCrops:
    """The finite training augmentation of a dataset kept as uint8 arrays: a random `crop` px square of the
    `stored_size` px image zero-padded by `padding`, then a horizontal flip or not."""

    stored_size: int
    crop: int
    padding: int
    drop_last: bool  # drop the final partial training batch (CUB, as the reference does)

    @property
    def views(self) -> int:
        """Distinct training views of one image: crop offsets times the two flips."""
        offsets = self.stored_size + 2 * self.padding - self.crop + 1
        return offsets * offsets * 2


@dataclass(frozen=True)
class DatasetSpec:
    """Static facts about a dataset.

    image_size: side of the (square) crop the model sees.
    model_dataset: the geometry models are built for (`create_model(..., dataset=model_dataset)`).
    """

    name: str
    num_classes: int
    image_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    model_dataset: str

    @property
    def title(self) -> str:
        """The name papers use."""
        return _TITLES[self.name]

    @property
    def train_crops(self) -> TrainCrops | None:
        """The training augmentation as finite crops, or None for ImageNet's RandomResizedCrop (continuous, and
        decoded by CPU workers). 32 px data takes CIFAR's padded crop; 224 px data a crop of the 256 px image."""
        if self.name == "imagenet":
            return None
        if self.image_size == 32:
            return TrainCrops(32, 32, CIFAR_PADDING, drop_last=False)
        # Synthetic data keeps the last partial batch, so small generated sets lose no step.
        return TrainCrops(STORED_SIZE_FOR_224, self.image_size, 0, drop_last=self.name == "cub200")

    @property
    def two_views_problem(self) -> str | None:
        """Why this dataset cannot serve MLKD's weak and strong views (one sentence), or None when it can.

        MLKD's strong view follows the reference CIFAR-100 pipeline (32 px crops); no reference defines one for
        CUB or ImageNet, and the ImageNet loader decodes on CPU workers, so two views are offered on 32 px data."""
        if self.name != "imagenet" and self.image_size == 32:
            return None
        what = f"{self.image_size} px synthetic data" if self.name == "synthetic" else self.name
        return (
            f"MLKD's strong view is defined for CIFAR-100 and 32 px synthetic data only, not {what}; "
            "train an MLKD method on cifar100 or 32 px synthetic data, or choose another method"
        )

    @property
    def exact_cache_problem(self) -> str | None:
        """Why no exact teacher-logit cache is worth building for this dataset's training views, or None."""
        crops = self.train_crops
        if crops is None:
            return continuous_augmentation_problem(self.name)
        if crops.views > EXACT_CACHE_MAX_VIEWS:
            return (
                f"{self.name} crops {crops.crop} px from {crops.stored_size} px images: {crops.views:,} views per "
                "image, so an exact teacher-logit cache costs more teacher passes than a run makes; "
                "set teacher.cache=off"
            )
        return None


_TITLES = {"cifar100": "CIFAR-100", "cub200": "CUB-200", "imagenet": "ImageNet", "synthetic": "synthetic"}

_PUBLISHED_SPECS = {
    "cifar100": DatasetSpec("cifar100", 100, 32, CIFAR100_MEAN, CIFAR100_STD, "cifar100"),
    "cub200": DatasetSpec("cub200", 200, 224, IMAGENET_MEAN, IMAGENET_STD, "cub200"),
    "imagenet": DatasetSpec("imagenet", 1000, 224, IMAGENET_MEAN, IMAGENET_STD, "imagenet"),
}

_STAND_INS = {
    "cifar100": SyntheticConfig(num_classes=100, image_size=32, train_per_class=50, test_per_class=10),
    "cub200": SyntheticConfig(num_classes=200, image_size=224, train_per_class=4, test_per_class=2),
    "imagenet": SyntheticConfig(num_classes=1000, image_size=224, train_per_class=2, test_per_class=1),
}


def synthetic_spec(config: SyntheticConfig) -> DatasetSpec:
    """32 px synthetic data imitates CIFAR-100 (its statistics and nets); 224 px imitates CUB-200."""
    like = _PUBLISHED_SPECS["cifar100" if config.image_size == 32 else "cub200"]
    return DatasetSpec("synthetic", config.num_classes, like.image_size, like.mean, like.std, like.model_dataset)


def continuous_augmentation_problem(name: str) -> str:
    return (
        f"{name} trains with RandomResizedCrop, a continuous augmentation, so no exact teacher-logit cache exists; "
        "set teacher.cache=off"
    )


def synthetic_stand_in(name: str) -> SyntheticConfig:
    """Generated data of dataset `name`'s classes and crop size (`--dataset synthetic` on one of its presets), with
    few enough images per class to train in minutes; CIFAR-100's for a name that is not a published dataset."""
    return _STAND_INS.get(name, _STAND_INS["cifar100"])


def dataset_spec(name: str, **options: Any) -> DatasetSpec:
    """The spec of `name`; `synthetic` takes SyntheticConfig's fields as options (num_classes, image_size, ...)."""
    if name == "synthetic":
        return synthetic_spec(SyntheticConfig.from_options(options))
    if name not in _PUBLISHED_SPECS:
        raise ValueError(f"unknown dataset {name!r}; choose one of {', '.join(DATASET_NAMES)}")
    if options:
        raise ValueError(f"dataset {name!r} takes no options (got {', '.join(sorted(options))})")
    return _PUBLISHED_SPECS[name]
