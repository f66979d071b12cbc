"""CIFAR-100 reader on fake torchvision-format batches, the restricted unpickler, and the CIFAR loaders."""

import _codecs
import os
import pickle
import tarfile

import numpy as np
import pytest
import torch

from sddkd.data import DataFormatError, DataMissingError, build_loaders
from sddkd.data.cifar import read_cifar100_classes, read_cifar100_split, restricted_load
from tests.fakes import make_cifar100_archive, make_cifar100_tree


@pytest.fixture(scope="module")
def cifar_root(tmp_path_factory):
    return make_cifar100_tree(tmp_path_factory.mktemp("data"), n_train=150, n_test=70)


def test_reader_returns_chw_images_and_fine_labels(cifar_root):
    entry = pickle.loads((cifar_root / "cifar-100-python" / "train").read_bytes(), encoding="bytes")
    images, labels = read_cifar100_split(cifar_root, "train")
    assert images.shape == (150, 3, 32, 32) and images.dtype == torch.uint8
    assert labels.dtype == torch.int64 and labels.tolist() == entry[b"fine_labels"]
    # Each row of b"data" is 1024 red, then 1024 green, then 1024 blue values, row-major.
    assert np.array_equal(images[7, 1].numpy(), entry[b"data"][7, 1024:2048].reshape(32, 32))
    assert read_cifar100_split(cifar_root, "test")[0].shape == (70, 3, 32, 32)
    assert read_cifar100_classes(cifar_root)[:2] == ["class_000", "class_001"]


def test_reader_accepts_newer_pickle_protocols_of_the_same_content(tmp_path):
    folder = make_cifar100_tree(tmp_path, n_train=5, n_test=5) / "cifar-100-python"
    for protocol in (4, 5):
        entry = pickle.loads((folder / "train").read_bytes(), encoding="bytes")
        (folder / "train").write_bytes(pickle.dumps(entry, protocol=protocol))
        assert read_cifar100_split(tmp_path, "train")[1].tolist() == entry[b"fine_labels"]


class _RunsCode:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"echo pwned > {self.marker}",)


def test_restricted_unpickler_refuses_a_pickle_that_would_run_code(tmp_path):
    make_cifar100_tree(tmp_path, n_train=5, n_test=5)
    marker = tmp_path / "pwned"
    payload = {b"data": _RunsCode(marker), b"fine_labels": [0]}
    (tmp_path / "cifar-100-python" / "train").write_bytes(pickle.dumps(payload, protocol=2))
    with pytest.raises(DataFormatError, match="refusing to load global"):
        read_cifar100_split(tmp_path, "train")
    assert not marker.exists()


class _OtherCodec:
    def __reduce__(self):
        return _codecs.encode, ("x", "rot13")


def test_restricted_unpickler_allows_only_the_latin1_codec(tmp_path):
    path = tmp_path / "codec"
    path.write_bytes(pickle.dumps(_OtherCodec(), protocol=2))
    with pytest.raises(pickle.UnpicklingError, match="only latin-1"):
        restricted_load(path)
    path.write_bytes(pickle.dumps(b"\xff bytes", protocol=2))  # Python 3 stores these via _codecs.encode
    assert restricted_load(path) == b"\xff bytes"


def test_reader_rejects_wrong_shapes_and_labels(tmp_path):
    folder = make_cifar100_tree(tmp_path, n_train=5, n_test=5) / "cifar-100-python"
    bad = {b"data": np.zeros((5, 100), np.uint8), b"fine_labels": [0] * 5}
    (folder / "train").write_bytes(pickle.dumps(bad, protocol=2))
    with pytest.raises(DataFormatError, match="is not a CIFAR-100 batch"):
        read_cifar100_split(tmp_path, "train")
    bad = {b"data": np.zeros((5, 3072), np.uint8), b"fine_labels": [0, 1, 2, 3, 100]}
    (folder / "test").write_bytes(pickle.dumps(bad, protocol=2))
    with pytest.raises(DataFormatError, match="sddkd prepare-data cifar100"):
        read_cifar100_split(tmp_path, "test")
    (folder / "meta").write_bytes(b"not a pickle")
    with pytest.raises(DataFormatError, match="not a readable CIFAR-100 file"):
        read_cifar100_classes(tmp_path)


def test_missing_cifar_names_the_command_that_fixes_it(tmp_path):
    with pytest.raises(DataMissingError) as error:
        build_loaders("cifar100", tmp_path / "data", batch_size=8, device="cpu", seed=0)
    message = str(error.value)
    assert "\n" not in message and f"under {tmp_path / 'data' / 'cifar-100-python'}" in message
    assert message.endswith(f"run `sddkd prepare-data cifar100 --data-root {tmp_path / 'data'}`")


def test_cifar_loaders_yield_normalized_batches(cifar_root):
    train, test = build_loaders("cifar100", cifar_root, batch_size=64, device="cpu", seed=0)
    assert (len(train), len(test)) == (3, 2)  # 150 and 70 samples, last partial batches kept
    assert (train.dataset_size, test.num_samples) == (150, 70)
    train.set_epoch(0)
    batches = list(train)
    assert [len(y) for _, y in batches] == [64, 64, 22]
    images, labels = batches[0]
    assert images.shape == (64, 3, 32, 32) and images.dtype == torch.float32 and labels.dtype == torch.int64
    # Zero padding becomes (0 - mean) / std after normalization: the minimum of the red channel.
    assert images[:, 0].min().item() == pytest.approx(-0.5071 / 0.2675, abs=1e-5)


def test_fake_archive_has_torchvision_layout(tmp_path):
    path = make_cifar100_archive(tmp_path / "cifar-100-python.tar.gz", n_train=4, n_test=2)
    with tarfile.open(path) as archive:
        names = set(archive.getnames())
    assert {
        "cifar-100-python",
        "cifar-100-python/train",
        "cifar-100-python/test",
        "cifar-100-python/meta",
    } <= names
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cifar-100-python.tar.gz"]
