"""The embedded synthetic dataset, dataset specs and the loader entry point."""

import time

import pytest
import torch

from sddkd.data import build_loaders, make_synthetic
from sddkd.datasets import DatasetSpec, SyntheticConfig, dataset_spec


@pytest.fixture(scope="module")
def default_data():
    return make_synthetic()


def test_default_generation_is_fast_deterministic_and_cifar_shaped(default_data):
    start = time.process_time()
    again = make_synthetic(SyntheticConfig())
    # About 0.4 s of wall time on an idle 2-core machine; CPU time of both threads is robust to a busy runner.
    assert time.process_time() - start < 4.0
    assert default_data.train_images.shape == (5000, 3, 32, 32) and default_data.test_images.shape == (
        1000,
        3,
        32,
        32,
    )
    assert default_data.train_images.dtype == torch.uint8 and default_data.train_labels.dtype == torch.int64
    for a, b in [
        (default_data.train_images, again.train_images),
        (default_data.test_images, again.test_images),
    ]:
        assert torch.equal(a, b)
    other = make_synthetic(SyntheticConfig(num_classes=5, train_per_class=2, test_per_class=1, seed=1))
    same_shape = make_synthetic(SyntheticConfig(num_classes=5, train_per_class=2, test_per_class=1, seed=0))
    assert not torch.equal(other.train_images, same_shape.train_images)


def test_classes_are_exactly_balanced(default_data):
    assert torch.bincount(default_data.train_labels).tolist() == [50] * 100
    assert torch.bincount(default_data.test_labels).tolist() == [10] * 100
    small = make_synthetic(SyntheticConfig(num_classes=7, train_per_class=3, test_per_class=2))
    assert torch.bincount(small.train_labels).tolist() == [3] * 7


def test_classes_are_learnable_but_not_trivially(default_data):
    # Nearest class mean on raw pixels: far above chance (1%), far from perfect. A CNN does better than this.
    train = default_data.train_images.flatten(1).float()
    means = torch.zeros(100, train.shape[1]).index_add_(0, default_data.train_labels, train) / 50
    predicted = torch.cdist(default_data.test_images.flatten(1).float(), means).argmin(1)
    accuracy = (predicted == default_data.test_labels).float().mean().item()
    assert 0.05 < accuracy < 0.6
    # Pixel statistics in the range the CIFAR normalization expects.
    pixels = default_data.train_images.float() / 255
    assert 0.35 < pixels.mean().item() < 0.65 and 0.1 < pixels.std().item() < 0.35


def test_224_pixel_data_takes_the_cub_path():
    config = {"num_classes": 3, "train_per_class": 3, "test_per_class": 2, "image_size": 224}
    data = make_synthetic(SyntheticConfig(**config))
    assert data.train_images.shape == (9, 3, 256, 256)
    spec = dataset_spec("synthetic", **config)
    assert (spec.image_size, spec.model_dataset, spec.num_classes) == (224, "cub200", 3)
    train, test = build_loaders("synthetic", batch_size=4, device="cpu", seed=0, synthetic=config)
    assert (len(train), len(test)) == (3, 2)  # partial batches kept: 9 -> 4 + 4 + 1, 6 -> 4 + 2
    train.set_epoch(0)
    images, labels = next(iter(train))
    assert images.shape == (4, 3, 224, 224) and labels.max().item() < 3


def test_default_synthetic_loaders_match_cifar_geometry():
    train, test = build_loaders("synthetic", "unused", batch_size=64, device="cpu", seed=0)
    assert (len(train), len(test), train.dataset_size, test.num_samples) == (79, 16, 5000, 1000)
    images, labels = next(iter(test))
    assert images.shape == (64, 3, 32, 32) and images.dtype == torch.float32 and labels.dtype == torch.int64
    assert dataset_spec("synthetic") == DatasetSpec(
        "synthetic", 100, 32, (0.5071, 0.4867, 0.4408), (0.2675, 0.2565, 0.2761), "cifar100"
    )


def test_dataset_specs():
    cifar, cub, imagenet = dataset_spec("cifar100"), dataset_spec("cub200"), dataset_spec("imagenet")
    assert (cifar.num_classes, cifar.image_size, cifar.model_dataset) == (100, 32, "cifar100")
    assert (cub.num_classes, cub.image_size, cub.model_dataset, cub.mean) == (
        200,
        224,
        "cub200",
        imagenet.mean,
    )
    assert (imagenet.num_classes, imagenet.std) == (1000, (0.229, 0.224, 0.225))
    with pytest.raises(ValueError, match="unknown dataset 'cifar10'; choose one of cifar100, cub200"):
        dataset_spec("cifar10")
    with pytest.raises(ValueError, match="takes no options"):
        dataset_spec("cifar100", num_classes=10)
    with pytest.raises(ValueError, match="unknown synthetic option.*classes; allowed"):
        dataset_spec("synthetic", classes=10)
    with pytest.raises(ValueError, match="image_size must be 32 or 224"):
        SyntheticConfig(image_size=64)
    with pytest.raises(ValueError, match="unknown dataset"):
        build_loaders("mnist", batch_size=4, device="cpu", seed=0)
