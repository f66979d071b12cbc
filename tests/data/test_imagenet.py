"""ImageNet: index checks and errors, the worker-based loader, crop parameters from an explicit generator."""

import json
import shutil

import pytest
import torch
import torchvision.transforms as T
from PIL import Image

from sddkd.data import DataFormatError, DataMissingError, build_imagenet_index, build_loaders
from sddkd.data.imagenet import random_resized_crop_box
from sddkd.datasets import IMAGENET_MEAN, IMAGENET_STD
from tests.fakes import make_imagenet_tree


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    make_imagenet_tree(root, classes=3, per_class=2)
    build_imagenet_index(root)
    return root


def test_index_lists_classes_files_and_labels(data_root):
    index = json.loads((data_root / "imagenet_index.json").read_text())
    assert index["classes"] == ["n00000000", "n00000001", "n00000002"]
    train = index["splits"]["train"]
    assert train["labels"] == [0, 0, 1, 1, 2, 2]
    assert train["files"][2] == "train/n00000001/train_1_0.JPEG"
    assert all((data_root / "imagenet" / f).is_file() for f in index["splits"]["val"]["files"])


def test_loaders_yield_224_batches_deterministically(data_root):
    def epoch_batches(epoch, rank=0, world_size=1):
        train, _ = build_loaders(
            "imagenet",
            data_root,
            batch_size=4,
            device="cpu",
            seed=1,
            rank=rank,
            world_size=world_size,
            num_workers=0,
        )
        train.set_epoch(epoch)
        return list(train)

    first, again, other = epoch_batches(0), epoch_batches(0), epoch_batches(1)
    assert [len(y) for _, y in first] == [4, 2]
    images, labels = first[0]
    assert images.shape == (4, 3, 224, 224) and images.dtype == torch.float32 and labels.dtype == torch.int64
    assert all(torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) for a, b in zip(first, again, strict=True))
    assert not torch.equal(first[0][0], other[0][0])
    shards = [torch.cat([y for _, y in epoch_batches(0, r, 4)]) for r in range(4)]
    assert [len(s) for s in shards] == [2, 2, 2, 2]  # 6 samples padded to 8
    assert set(torch.cat(shards).tolist()) == {0, 1, 2}


def test_validation_is_sharded_exactly_once(data_root):
    seen = []
    for rank in range(4):
        _, val = build_loaders(
            "imagenet", data_root, batch_size=2, device="cpu", seed=0, rank=rank, world_size=4, num_workers=0
        )
        seen += torch.cat([y for _, y in val]).tolist()
        assert val.dataset_size == 6
    assert sorted(seen) == [0, 0, 1, 1, 2, 2]


def test_validation_transform_matches_torchvision(data_root):
    _, val = build_loaders("imagenet", data_root, batch_size=2, device="cpu", seed=0, num_workers=0)
    images, _ = next(iter(val))
    reference = T.Compose([T.Resize(256), T.CenterCrop(224), T.ToTensor(), T.Normalize(IMAGENET_MEAN, IMAGENET_STD)])
    with Image.open(data_root / "imagenet" / "val" / "n00000000" / "val_0_1.JPEG") as image:
        assert torch.allclose(images[1], reference(image.convert("RGB")), atol=1e-6)


def test_worker_processes_give_the_same_batches(data_root):
    def batches(workers):
        train, _ = build_loaders("imagenet", data_root, batch_size=3, device="cpu", seed=2, num_workers=workers)
        train.set_epoch(4)
        return list(train)

    for a, b in zip(batches(0), batches(1), strict=True):
        assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])


def test_random_resized_crop_box_stays_inside_and_uses_only_its_generator():
    global_state = torch.get_rng_state()
    boxes = []
    for seed in range(50):
        top, left, height, width = random_resized_crop_box(120, 80, torch.Generator().manual_seed(seed))
        assert 0 <= top and 0 <= left and top + height <= 80 and left + width <= 120 and height > 0 < width
        boxes.append((top, left, height, width))
    assert torch.equal(torch.get_rng_state(), global_state)
    assert boxes[0] == random_resized_crop_box(120, 80, torch.Generator().manual_seed(0))
    assert len(set(boxes)) > 40


def test_missing_split_names_the_command(tmp_path):
    make_imagenet_tree(tmp_path, classes=2, per_class=1)
    shutil.rmtree(tmp_path / "imagenet" / "val")
    with pytest.raises(DataMissingError) as error:
        build_imagenet_index(tmp_path)
    assert "\n" not in str(error.value) and f"sddkd prepare-data imagenet --data-root {tmp_path}" in str(error.value)


def test_mismatched_or_empty_class_folders_are_errors(tmp_path):
    make_imagenet_tree(tmp_path, classes=2, per_class=1)
    (tmp_path / "imagenet" / "val" / "n00000001").rename(tmp_path / "imagenet" / "val" / "n99999999")
    with pytest.raises(DataFormatError, match="different class folders"):
        build_imagenet_index(tmp_path)
    (tmp_path / "imagenet" / "val" / "n99999999").rename(tmp_path / "imagenet" / "val" / "n00000001")
    for image in (tmp_path / "imagenet" / "train" / "n00000001").iterdir():
        image.unlink()
    with pytest.raises(DataFormatError, match="holds no images"):
        build_imagenet_index(tmp_path)
    assert not (tmp_path / "imagenet_index.json").exists()


def test_loader_without_index_names_the_command(tmp_path):
    with pytest.raises(DataMissingError, match="run `sddkd prepare-data imagenet --data-root"):
        build_loaders("imagenet", tmp_path, batch_size=2, device="cpu", seed=0, num_workers=0)
