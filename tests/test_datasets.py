"""The dataset facts live in one torch-free place, and everything that used to keep its own copy agrees with it."""

import subprocess
import sys

import pytest

from sddkd.config import build_config, load_config, swap_to_synthetic
from sddkd.data import build_loaders
from sddkd.datasets import (
    DATASET_NAMES,
    EXACT_CACHE_MAX_VIEWS,
    MODEL_GEOMETRIES,
    PUBLISHED_DATASETS,
    SyntheticConfig,
    dataset_spec,
    synthetic_spec,
    synthetic_stand_in,
)
from sddkd.engine.teacher_cache import views_of
from sddkd.models import DATASETS, list_models


def test_the_dataset_facts_import_no_torch():
    code = "import sys, sddkd.datasets, sddkd.config; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_the_training_crops_and_what_they_allow():
    cifar, cub, imagenet = (dataset_spec(name) for name in ("cifar100", "cub200", "imagenet"))
    assert (cifar.train_crops.padding, cifar.train_crops.views, cifar.train_crops.drop_last) == (4, 162, False)
    assert (cub.train_crops.stored_size, cub.train_crops.crop, cub.train_crops.views) == (256, 224, 33 * 33 * 2)
    assert cub.train_crops.drop_last and imagenet.train_crops is None
    assert cifar.exact_cache_problem is None and cifar.two_views_problem is None
    assert "2,178 views per image" in cub.exact_cache_problem and "continuous" in imagenet.exact_cache_problem
    assert "not cub200" in cub.two_views_problem and "not imagenet" in imagenet.two_views_problem
    big = synthetic_spec(SyntheticConfig(image_size=224))
    assert not big.train_crops.drop_last and big.train_crops.views > EXACT_CACHE_MAX_VIEWS  # keeps small sets whole
    assert "not 224 px synthetic data" in big.two_views_problem
    assert [dataset_spec(name).title for name in PUBLISHED_DATASETS] == ["CIFAR-100", "CUB-200", "ImageNet"]


@pytest.mark.parametrize("image_size", [32, 224])
def test_the_loaders_and_the_teacher_cache_crop_as_the_spec_says(image_size: int):
    config = SyntheticConfig(num_classes=3, image_size=image_size, train_per_class=2, test_per_class=1)
    crops = synthetic_spec(config).train_crops
    train, _ = build_loaders("synthetic", batch_size=2, device="cpu", seed=0, synthetic=config)
    assert (train.images.shape[-1], train.crop_size, train.padding, train.drop_last) == (
        crops.stored_size, crops.crop, crops.padding, crops.drop_last,
    )  # fmt: skip
    assert views_of(train).count == crops.views


def test_the_config_reads_its_class_count_and_geometry_from_the_spec():
    for name in PUBLISHED_DATASETS:
        cfg = build_config({"data": {"name": name}, "student": "resnet8", "method": {"name": "vanilla"},
                            "optim": {"lr": 0.1}})  # fmt: skip
        assert cfg.data.spec == dataset_spec(name) and cfg.data.num_classes == dataset_spec(name).num_classes


@pytest.mark.parametrize("name", PUBLISHED_DATASETS)
def test_a_synthetic_stand_in_keeps_the_classes_and_crop_of_its_dataset(name: str):
    stand_in, real = synthetic_spec(synthetic_stand_in(name)), dataset_spec(name)
    assert (stand_in.num_classes, stand_in.image_size) == (real.num_classes, real.image_size)
    raw = {"data": {"name": name}}
    swap_to_synthetic(raw)
    assert raw["data"] == {"name": "synthetic", "synthetic": synthetic_stand_in(name).model_dump(exclude={"seed"})}


def test_a_cub_preset_on_synthetic_data_builds_cub_geometry():
    cfg = load_config("cub200/kd/res32x4_res8x4", dataset="synthetic")
    assert (cfg.data.spec.image_size, cfg.data.spec.model_dataset, cfg.data.num_classes) == (224, "cub200", 200)


def test_models_teachers_and_the_cli_name_the_same_datasets():
    from sddkd.teachers.sources import SOURCES

    assert DATASETS == MODEL_GEOMETRIES == PUBLISHED_DATASETS and set(SOURCES) == set(PUBLISHED_DATASETS)
    assert set(DATASET_NAMES) == {*PUBLISHED_DATASETS, "synthetic"}
    for geometry in ("cifar100", "cub200"):  # the CIFAR-style nets serve both
        assert {"resnet8x4", "wrn_16_2", "vgg8", "MobileNetV2", "ShuffleV2"} <= set(list_models(geometry))


@pytest.mark.parametrize("bad", [{"image_size": 64}, {"num_classes": 1}, {"train_per_class": 0}, {"colour": 1}])
def test_one_synthetic_config_refuses_bad_shapes_in_python_and_in_a_config(bad: dict):
    with pytest.raises(ValueError):
        SyntheticConfig(**bad)
    with pytest.raises(ValueError, match="data.synthetic"):
        build_config({"data": {"name": "synthetic", "synthetic": bad}, "student": "resnet8",
                      "method": {"name": "vanilla"}, "optim": {"lr": 0.1}})  # fmt: skip
