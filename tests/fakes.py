"""Small fake datasets in the real on-disk formats, for tests of data, prepare-data, the engine and the CLI.

Every function is deterministic (fixed seeds) and writes only under the path it is given. The tree makers take
a data root (what `--data-root` points at), write the dataset's folder inside it where sddkd looks for it and
return the data root; the archive makers return the archive's path. Images are random noise: these fakes test
formats and plumbing, not learning.

- make_cifar100_tree / make_cifar100_archive: torchvision's `cifar-100-python` pickles (Python-2 style byte
  keys, numpy uint8 `data` N x 3072 in CHW order, `fine_labels`, `coarse_labels`, `meta`), as a tree or a
  `.tar.gz`.
- make_cub_tree / make_cub_archive: the `CUB_200_2011/` layout with small real JPEGs (varied sizes, one
  grayscale) and the real metadata files, as a tree or a `CUB_200_2011.tgz`.
- make_imagenet_tree: `imagenet/train/` and `imagenet/val/` class folders of small JPEGs.
"""

from __future__ import annotations

import io
import pickle
import shutil
import tarfile
from pathlib import Path

import numpy as np
from PIL import Image

CIFAR100_DIRNAME = "cifar-100-python"
CUB_DIRNAME = "CUB_200_2011"


def _cifar_batch(n: int, rng: np.random.Generator, batch_label: bytes) -> dict[bytes, object]:
    fine = rng.integers(0, 100, size=n)
    fine[: min(n, 100)] = np.arange(min(n, 100))  # every class present when n >= 100
    return {
        b"filenames": [f"fake_{i:05d}.png".encode() for i in range(n)],
        b"batch_label": batch_label,
        b"fine_labels": [int(label) for label in fine],
        b"coarse_labels": [int(label) // 5 for label in fine],
        b"data": rng.integers(0, 256, size=(n, 3 * 32 * 32), dtype=np.uint8),
    }


def make_cifar100_tree(root: str | Path, n_train: int = 200, n_test: int = 100, seed: int = 0) -> Path:
    """Write `root/cifar-100-python/{train,test,meta}` and return `root` (the data root)."""
    root = Path(root)
    folder = root / CIFAR100_DIRNAME
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    entries = {
        "train": _cifar_batch(n_train, rng, b"training batch 1 of 1"),
        "test": _cifar_batch(n_test, rng, b"testing batch 1 of 1"),
        "meta": {
            b"fine_label_names": [f"class_{i:03d}".encode() for i in range(100)],
            b"coarse_label_names": [f"superclass_{i:02d}".encode() for i in range(20)],
        },
    }
    for name, entry in entries.items():
        # Protocol 2, like the original (Python 2) files.
        (folder / name).write_bytes(pickle.dumps(entry, protocol=2))
    (folder / "file.txt~").write_text("")  # the real archive carries this stray editor backup too
    return root


def make_cifar100_archive(path: str | Path, n_train: int = 200, n_test: int = 100, seed: int = 0) -> Path:
    """Write a `.tar.gz` holding `cifar-100-python/...` like torchvision's archive; return its path."""
    path = Path(path)
    staging = path.parent / f".{path.name}.staging"
    make_cifar100_tree(staging, n_train=n_train, n_test=n_test, seed=seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w:gz") as archive:
        archive.add(staging / CIFAR100_DIRNAME, arcname=CIFAR100_DIRNAME)
    shutil.rmtree(staging)
    return path


def _jpeg(rng: np.random.Generator, width: int, height: int, grayscale: bool = False) -> bytes:
    shape = (height, width) if grayscale else (height, width, 3)
    image = Image.fromarray(rng.integers(0, 256, size=shape, dtype=np.uint8))
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


def make_cub_tree(root: str | Path, n_classes: int = 3, per_class: int = 4, seed: int = 0) -> Path:
    """Write `root/CUB_200_2011/` with images and metadata; return `root`.

    Within each class, every other image is in the train split (is_training_image 1), so train and test both
    hold every class. Image sizes vary (landscape and portrait, 40-90 px) and the very first image is
    grayscale, as a few real CUB images are.
    """
    rng = np.random.default_rng(seed)
    base = Path(root) / CUB_DIRNAME
    (base / "images").mkdir(parents=True, exist_ok=True)
    classes, images, labels, split = [], [], [], []
    image_id = 0
    for class_id in range(1, n_classes + 1):
        folder = f"{class_id:03d}.Fake_Bird_{class_id}"
        classes.append(f"{class_id} {folder}")
        (base / "images" / folder).mkdir(exist_ok=True)
        for k in range(per_class):
            image_id += 1
            relative = f"{folder}/Fake_Bird_{class_id}_{k + 1:04d}_{image_id}.jpg"
            width, height = (int(v) for v in rng.integers(40, 91, size=2))
            (base / "images" / relative).write_bytes(_jpeg(rng, width, height, grayscale=image_id == 1))
            images.append(f"{image_id} {relative}")
            labels.append(f"{image_id} {class_id}")
            split.append(f"{image_id} {1 if k % 2 == 0 else 0}")
    for name, lines in [
        ("classes.txt", classes),
        ("images.txt", images),
        ("image_class_labels.txt", labels),
        ("train_test_split.txt", split),
    ]:
        (base / name).write_text("\n".join(lines) + "\n")
    return Path(root)


def make_cub_archive(path: str | Path, n_classes: int = 3, per_class: int = 4, seed: int = 0) -> Path:
    """Write a `CUB_200_2011.tgz`-style archive (`CUB_200_2011/...` plus the top-level `attributes.txt`)."""
    path = Path(path)
    staging = path.parent / f".{path.name}.staging"
    make_cub_tree(staging, n_classes=n_classes, per_class=per_class, seed=seed)
    (staging / "attributes.txt").write_text("1 has_bill_shape::curved_(up_or_down)\n")
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w:gz") as archive:
        archive.add(staging / "attributes.txt", arcname="attributes.txt")
        archive.add(staging / CUB_DIRNAME, arcname=CUB_DIRNAME)
    shutil.rmtree(staging)
    return path


def make_imagenet_tree(root: str | Path, classes: int = 3, per_class: int = 2, seed: int = 0) -> Path:
    """Write `root/imagenet/{train,val}/n0000000k/*.JPEG` (per_class images each); return `root`."""
    rng = np.random.default_rng(seed)
    root = Path(root)
    for split in ("train", "val"):
        for c in range(classes):
            folder = root / "imagenet" / split / f"n{c:08d}"
            folder.mkdir(parents=True, exist_ok=True)
            for k in range(per_class):
                width, height = (int(v) for v in rng.integers(40, 91, size=2))
                (folder / f"{split}_{c}_{k}.JPEG").write_bytes(_jpeg(rng, width, height))
    return root
