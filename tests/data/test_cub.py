"""CUB-200-2011: cache build from a fake extracted tree, atomicity, readiness, loaders."""

import json
import tarfile

import pytest
import torch
import torchvision.transforms as T
import torchvision.transforms.functional as TF
from PIL import Image

import sddkd.data.cub as cub
from sddkd.data import DataMissingError, build_cub_cache, build_loaders, cub_cache_dir, cub_cache_ready
from sddkd.data.cub import load_cub_cache, read_cub_splits
from sddkd.datasets import IMAGENET_MEAN, IMAGENET_STD
from tests.fakes import make_cub_archive, make_cub_tree


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    """A data root holding a fake extracted CUB_200_2011/ (3 classes x 4 images) and its cache."""
    root = tmp_path_factory.mktemp("data")
    make_cub_tree(root, n_classes=3, per_class=4)
    build_cub_cache(root, cub_cache_dir(root), progress=False)
    return root


def test_cache_holds_resized_images_and_labels_from_the_metadata(data_root):
    cache = load_cub_cache(data_root)
    splits = read_cub_splits(data_root / "CUB_200_2011")
    assert cache.train_images.shape == (6, 3, 256, 256) and cache.test_images.shape == (6, 3, 256, 256)
    assert cache.train_images.dtype == torch.uint8 and cache.train_labels.dtype == torch.int64
    assert cache.train_labels.tolist() == [0, 0, 1, 1, 2, 2] == [label for _, label in splits.train]
    assert cache.classes == ["001.Fake_Bird_1", "002.Fake_Bird_2", "003.Fake_Bird_3"]
    resize = T.Resize((256, 256))  # the reference transform on PIL images
    for i, (relative, _) in enumerate(splits.train[:2]):  # the first image is grayscale
        with Image.open(data_root / "CUB_200_2011" / "images" / relative) as image:
            expected = TF.pil_to_tensor(resize(image.convert("RGB")))
        assert torch.equal(cache.train_images[i], expected)


def test_index_records_shapes_sizes_and_checksums(data_root):
    index = json.loads((cub_cache_dir(data_root) / "index.json").read_text())
    assert index["format"] == "sddkd-cub200-cache" and index["version"] == 1
    record = index["splits"]["test"]
    assert record["shape"] == [6, 3, 256, 256] and record["bytes"] == 6 * 3 * 256 * 256
    assert record["images"][0] == "001.Fake_Bird_1/Fake_Bird_1_0002_2.jpg"
    assert cub_cache_ready(data_root) and cub_cache_ready(data_root, verify=True)
    assert sorted(p.name for p in cub_cache_dir(data_root).iterdir()) == ["index.json", "test.u8", "train.u8"]


def test_corruption_and_truncation_are_detected(tmp_path, data_root):
    copy = tmp_path / "data"
    (copy / "cub200_cache").mkdir(parents=True)
    for path in cub_cache_dir(data_root).iterdir():
        (copy / "cub200_cache" / path.name).write_bytes(path.read_bytes())
    with open(copy / "cub200_cache" / "train.u8", "r+b") as handle:
        handle.seek(1000)
        byte = handle.read(1)
        handle.seek(1000)
        handle.write(bytes([byte[0] ^ 1]))
    assert cub_cache_ready(copy) and not cub_cache_ready(copy, verify=True)
    with open(copy / "cub200_cache" / "test.u8", "r+b") as handle:
        handle.truncate(100)
    assert not cub_cache_ready(copy)


def test_an_interrupted_build_never_looks_complete(tmp_path, monkeypatch):
    root = tmp_path / "data"
    make_cub_tree(root, n_classes=2, per_class=2)
    build_cub_cache(root, cub_cache_dir(root), progress=False)
    calls = []

    def failing_decode(path, size=256):
        calls.append(path)
        if len(calls) == 3:
            raise KeyboardInterrupt  # killed half-way through the train split
        return decode(path, size)

    decode = cub.decode_resized
    monkeypatch.setattr(cub, "decode_resized", failing_decode)
    with pytest.raises(KeyboardInterrupt):
        build_cub_cache(root, cub_cache_dir(root), progress=False)
    assert not cub_cache_ready(root)
    assert sorted(p.name for p in cub_cache_dir(root).iterdir()) == ["test.u8", "train.u8"]  # no temp files
    with pytest.raises(DataMissingError):
        load_cub_cache(root)


def test_missing_cache_names_the_command_that_fixes_it(tmp_path):
    assert not cub_cache_ready(tmp_path)
    with pytest.raises(DataMissingError) as error:
        build_loaders("cub200", tmp_path, batch_size=4, device="cpu", seed=0)
    message = str(error.value)
    assert "\n" not in message and f"run `sddkd prepare-data cub200 --data-root {tmp_path}`" in message


def test_missing_metadata_or_image_is_reported(tmp_path):
    base = make_cub_tree(tmp_path, n_classes=2, per_class=2) / "CUB_200_2011"
    next((base / "images").rglob("*.jpg")).unlink()
    with pytest.raises(DataMissingError, match="is missing; re-extract CUB-200-2011"):
        build_cub_cache(tmp_path, tmp_path / "cache", progress=False)
    (base / "train_test_split.txt").unlink()
    with pytest.raises(DataMissingError, match="train_test_split.txt is missing"):
        build_cub_cache(tmp_path, tmp_path / "cache", progress=False)


def test_cub_loaders_crop_224_and_drop_the_last_partial_train_batch(data_root):
    train, test = build_loaders("cub200", data_root, batch_size=4, device="cpu", seed=0)
    assert (len(train), len(test)) == (1, 2)  # 6 train images: one full batch of 4; 6 test: 4 + 2
    train.set_epoch(0)
    ((images, labels),) = list(train)
    assert images.shape == (4, 3, 224, 224) and labels.dtype == torch.int64
    test_batches = list(test)
    assert [len(y) for _, y in test_batches] == [4, 2]
    cache = load_cub_cache(data_root)
    expected = TF.normalize(
        TF.center_crop(cache.test_images[:4], [224, 224]).float() / 255, IMAGENET_MEAN, IMAGENET_STD
    )
    assert torch.allclose(test_batches[0][0], expected, atol=1e-6)
    assert torch.cat([y for _, y in test_batches]).tolist() == cache.test_labels.tolist()


def test_fake_archive_has_the_real_layout(tmp_path):
    path = make_cub_archive(tmp_path / "CUB_200_2011.tgz", n_classes=2, per_class=2)
    with tarfile.open(path) as archive:
        names = set(archive.getnames())
    assert {
        "attributes.txt",
        "CUB_200_2011/images.txt",
        "CUB_200_2011/classes.txt",
        "CUB_200_2011/image_class_labels.txt",
        "CUB_200_2011/train_test_split.txt",
    } <= names
    assert any(name.startswith("CUB_200_2011/images/001.") and name.endswith(".jpg") for name in names)
