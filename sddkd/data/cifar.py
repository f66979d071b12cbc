"""CIFAR-100 from torchvision's extracted `cifar-100-python/{train,test,meta}` pickled batches.

The batches are pickles. They are read with a restricted Unpickler that resolves only the few numpy/builtin
names those files contain, so a tampered file cannot run code; the result is then checked for shape and label
range. (torchvision's CIFAR100 class is not used: it md5-checks each extracted file, which rejects regenerated
mirrors.)
"""

from __future__ import annotations

import codecs
import io
import pickle
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from sddkd.data.errors import DataFormatError, DataMissingError
from sddkd.datasets import dataset_spec

CIFAR100_DIRNAME = "cifar-100-python"
NUM_CLASSES = dataset_spec("cifar100").num_classes
_PIXELS = 3 * 32 * 32


def _latin1_encode(text: str, encoding: str = "latin1") -> bytes:
    # Python 3 writes bytes into protocol-2 pickles as _codecs.encode(text, "latin1"); allow only that.
    if codecs.lookup(encoding).name != "iso8859-1":
        raise pickle.UnpicklingError(f"CIFAR pickle asks for codec {encoding!r}; only latin-1 is allowed")
    return text.encode("latin-1")


def _numpy_global(module: str, name: str) -> Any:
    # numpy 2 moved numpy.core to numpy._core; pickles name either, depending on the numpy that wrote them.
    for candidate in (module.replace("numpy.core", "numpy._core"), module):
        try:
            return getattr(__import__(candidate, fromlist=[name]), name)
        except (ImportError, AttributeError):
            continue
    raise pickle.UnpicklingError(f"numpy has no {module}.{name}")


_ALLOWED_GLOBALS = {
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("numpy.core.multiarray", "_reconstruct"),  # how numpy pickles arrays (protocols 2-4)
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.numeric", "_frombuffer"),  # protocol 5
    ("numpy._core.numeric", "_frombuffer"),
    ("_codecs", "encode"),
}


class RestrictedUnpickler(pickle.Unpickler):
    """An Unpickler that resolves only numpy array reconstruction and latin-1 byte strings; nothing else."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in _ALLOWED_GLOBALS:
            raise pickle.UnpicklingError(f"refusing to load global {module}.{name} from a data pickle")
        if module == "_codecs":
            return _latin1_encode
        return _numpy_global(module, name)


def restricted_load(path: Path) -> Any:
    """Unpickle `path` (Python 2 strings become bytes) with RestrictedUnpickler."""
    data = path.read_bytes()
    return RestrictedUnpickler(io.BytesIO(data), encoding="bytes").load()


def cifar100_dir(data_root: str | Path) -> Path:
    return Path(data_root) / CIFAR100_DIRNAME


def _fix(data_root: Path) -> str:
    return f"run `sddkd prepare-data cifar100 --data-root {data_root}`"


def _load_entry(data_root: Path, name: str) -> dict[str, Any]:
    """The dict pickled in cifar-100-python/<name>, with str keys (the files hold Python 2 byte keys)."""
    path = cifar100_dir(data_root) / name
    if not path.is_file():
        raise DataMissingError(f"CIFAR-100 not found under {path.parent} (no {name!r} file); {_fix(data_root)}")
    try:
        entry = restricted_load(path)
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError) as error:
        raise DataFormatError(
            f"{path} is not a readable CIFAR-100 file ({error}); delete {path.parent} and {_fix(data_root)}"
        ) from error
    if not isinstance(entry, dict):
        raise DataFormatError(f"{path} does not hold a CIFAR-100 dict; delete {path.parent} and {_fix(data_root)}")
    return {key.decode("latin-1") if isinstance(key, bytes) else str(key): value for key, value in entry.items()}


def read_cifar100_split(data_root: str | Path, split: str) -> tuple[Tensor, Tensor]:
    """Images uint8 [N, 3, 32, 32] and fine labels int64 [N] of split "train" or "test"."""
    if split not in ("train", "test"):
        raise ValueError(f"CIFAR-100 split must be 'train' or 'test', got {split!r}")
    root = Path(data_root)
    entry = _load_entry(root, split)
    images, labels = entry.get("data"), entry.get("fine_labels")
    broken = (
        not isinstance(images, np.ndarray)
        or images.dtype != np.uint8
        or images.ndim != 2
        or images.shape[1] != _PIXELS
        or not isinstance(labels, list)
        or len(labels) != images.shape[0]
        or not all(isinstance(label, int) and 0 <= label < NUM_CLASSES for label in labels)
    )
    if broken:
        raise DataFormatError(
            f"{cifar100_dir(root) / split} is not a CIFAR-100 batch (expected uint8 'data' N x {_PIXELS} and "
            f"N 'fine_labels' in [0, {NUM_CLASSES})); delete {cifar100_dir(root)} and {_fix(root)}"
        )
    pixels = torch.from_numpy(np.ascontiguousarray(images)).view(-1, 3, 32, 32)  # rows are CHW-ordered
    return pixels, torch.tensor(labels, dtype=torch.int64)


def read_cifar100_classes(data_root: str | Path) -> list[str]:
    """The 100 fine class names from `meta`, in label order."""
    root = Path(data_root)
    names = _load_entry(root, "meta").get("fine_label_names")
    if not isinstance(names, list) or len(names) != NUM_CLASSES:
        raise DataFormatError(
            f"{cifar100_dir(root) / 'meta'} does not list {NUM_CLASSES} fine class names; "
            f"delete {cifar100_dir(root)} and {_fix(root)}"
        )
    return [name.decode() if isinstance(name, bytes) else str(name) for name in names]
