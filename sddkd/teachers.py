"""Teacher checkpoints: the store under `SDDKD_HOME` (else `$XDG_CACHE_HOME/sddkd`), checksums and safe loading.

Store layout: `$SDDKD_HOME/teachers/<dataset>/<arch>.pth` (the published file, byte for byte) plus
`$SDDKD_HOME/teachers/index.json`, which records for each one its sha256, size, origin and recorded accuracy.
A file enters the store only after it loaded strictly into its architecture, and is re-verified on every use
(size always; sha256 when its mtime changed since the last check). Checkpoints are read with
`torch.load(weights_only=True)`: a downloaded pickle never runs code.

Where each dataset's teachers come from, and fetching them, is `sddkd.teacher_sources`.
"""

from __future__ import annotations

import contextlib
import json
import os
import pickle
import re
import shutil
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from sddkd import locations
from sddkd.download import FetchError, file_digest
from sddkd.files import write_json_atomic

NUM_CLASSES = {"cifar100": 100, "cub200": 200, "imagenet": 1000}

# Published top-1 (%) of the teachers the field distils from (CIFAR-100: RepDistiller / mdistiller; CUB-200: SDD
# Table 5). ImageNet teachers are torchvision's weights, whose accuracies torchvision itself reports.
PUBLISHED_TOP1: dict[str, dict[str, float]] = {
    "cifar100": {
        "resnet32x4": 79.42, "wrn_40_2": 75.61, "ResNet50": 79.34,
        "vgg13": 74.64, "resnet56": 72.34, "resnet110": 74.31,
    },
    "cub200": {"resnet32x4": 66.17, "vgg13": 70.19, "ResNet50": 60.01},
    "imagenet": {"resnet34": 73.314, "resnet50": 76.13},
}  # fmt: skip

# Keys under which training scripts store the weights and the test accuracy they reached.
STATE_DICT_KEYS = ("model", "state_dict", "net")
ACCURACY_KEYS = ("accuracy", "best_acc", "best_top1", "test_top1")


class TeacherError(FetchError):
    """A teacher that is missing, changed, unsafe or does not fit its architecture; one sentence naming the fix."""


def sddkd_home() -> Path:
    """$SDDKD_HOME, else $XDG_CACHE_HOME/sddkd, else ~/.cache/sddkd (`sddkd.locations`)."""
    return locations.sddkd_home()


def store_dir() -> Path:
    return sddkd_home() / "teachers"


def store_path(dataset: str, arch: str) -> Path:
    return store_dir() / dataset / f"{arch}.pth"


# --- the index ------------------------------------------------------------------------------------------------


def _index_path() -> Path:
    return store_dir() / "index.json"


def read_index() -> dict[str, Any]:
    """{"teachers": {"<dataset>/<arch>": entry}, "sources": {url: sha256 first seen}}."""
    path = _index_path()
    if not path.exists():
        return {"teachers": {}, "sources": {}}
    try:
        index = json.loads(path.read_text())
    except json.JSONDecodeError:
        raise TeacherError(f"{path} is not valid JSON; delete it and run `sddkd fetch-teachers` again") from None
    index.setdefault("teachers", {})
    index.setdefault("sources", {})
    return index


@contextlib.contextmanager
def _updating_index() -> Iterator[dict[str, Any]]:
    """Read-modify-write of the index under a file lock, replaced atomically so readers never see half a file."""
    store_dir().mkdir(parents=True, exist_ok=True)
    with open(store_dir() / ".index.lock", "w") as lock:
        with contextlib.suppress(ImportError):
            import fcntl  # POSIX; elsewhere concurrent fetches are not expected

            fcntl.flock(lock, fcntl.LOCK_EX)
        index = read_index()
        yield index
        write_json_atomic(_index_path(), index)


def record_source(url: str, sha256: str) -> str | None:
    """Remember the sha256 a URL served the first time; return what was recorded before (None if new)."""
    with _updating_index() as index:
        previous = index["sources"].get(url)
        index["sources"][url] = sha256
    return previous


# --- find, register, load -------------------------------------------------------------------------------------


def find_teacher(dataset: str, arch: str) -> Path | None:
    """A verified checkpoint in the store, or None when the store has none.

    Raises TeacherError when the stored file no longer matches the sha256 recorded when it was fetched.
    """
    path = store_path(dataset, arch)
    entry = read_index()["teachers"].get(f"{dataset}/{arch}")
    if entry is None or not path.is_file():
        return None
    stat = path.stat()
    refetch = f"run `sddkd fetch-teachers --dataset {dataset} --arch {arch} --force`"
    if stat.st_size != entry["size"]:
        raise TeacherError(f"the stored teacher {path} changed size since it was fetched; {refetch}")
    if stat.st_mtime_ns != entry.get("mtime_ns"):  # touched or copied: hash it once, then trust the new mtime
        actual = file_digest(path)
        if actual != entry["sha256"]:
            raise TeacherError(
                f"the stored teacher {path} has sha256 {actual[:12]}…, not the {entry['sha256'][:12]}… recorded "
                f"when it was fetched; {refetch}"
            )
        with _updating_index() as index:
            index["teachers"][f"{dataset}/{arch}"]["mtime_ns"] = stat.st_mtime_ns
    return path


def register_teacher(
    dataset: str, arch: str, checkpoint: Path, *, origin: str, accuracy: float | None = None, move: bool = False
) -> Path:
    """Test-load `checkpoint` into `arch`, copy it into the store atomically and record its sha256; return the path.

    `accuracy` overrides the top-1 recorded inside the checkpoint; `move` takes over a temporary file that is
    already in the store's folder instead of copying it.
    """
    checkpoint = Path(checkpoint)
    state_dict, recorded, config = _read(checkpoint)
    model_dataset, num_classes = _geometry(dataset, config, checkpoint)
    model = _build_model(arch, model_dataset, num_classes)
    load_strict(model, state_dict, arch=arch, source=checkpoint, dataset=dataset)
    del model, state_dict

    final = store_path(dataset, arch)
    final.parent.mkdir(parents=True, exist_ok=True)
    if move and checkpoint.parent == final.parent:
        staged = checkpoint
    else:
        staged = final.with_name(f".{final.name}.{os.getpid()}.tmp")
        shutil.copyfile(checkpoint, staged)
    try:
        sha256 = file_digest(staged)
        os.replace(staged, final)
    finally:
        staged.unlink(missing_ok=True)
    stat = final.stat()
    with _updating_index() as index:
        index["teachers"][f"{dataset}/{arch}"] = {
            "sha256": sha256, "size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "origin": origin,
            "accuracy": accuracy if accuracy is not None else recorded,
            "added": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }  # fmt: skip
    _SHA_CACHE[(str(final.resolve()), stat.st_size, stat.st_mtime_ns)] = sha256
    return final


def load_teacher(path: Path, arch: str, dataset: str, num_classes: int) -> tuple[nn.Module, dict[str, Any]]:
    """The teacher in eval mode with gradients off, plus what a run records about it (JSON-ready): path, sha256,
    arch, dataset, published_top1 (what the field reports, if known) and recorded_top1 (stored in the file, if any).

    Only tensors and plain containers are unpickled (`weights_only=True`); the state dict must fit `arch` exactly.
    """
    path = Path(path)
    if not path.is_file():
        raise TeacherError(f"teacher checkpoint {path} does not exist; check the path or run `sddkd fetch-teachers`")
    state_dict, recorded = read_checkpoint(path)
    model = _build_model(arch, dataset, num_classes)
    load_strict(model, state_dict, arch=arch, source=path, dataset=dataset)
    model.eval()
    model.requires_grad_(False)
    info = {
        "path": str(path.resolve()), "sha256": _sha256_cached(path), "arch": arch, "dataset": dataset,
        "published_top1": PUBLISHED_TOP1.get(dataset, {}).get(arch), "recorded_top1": recorded,
    }  # fmt: skip
    return model, info


def missing_teacher_message(dataset: str, arch: str) -> str:
    """Why no teacher was found for (dataset, arch), and how to get one: fetch it, download it by hand, or train it."""
    from sddkd.teacher_sources import missing_note

    return f"no {arch} teacher for {dataset} in {store_dir()}: {missing_note(dataset, arch, None)}"


_SHA_CACHE: dict[tuple[str, int, int], str] = {}


def _sha256_cached(path: Path) -> str:
    """sha256 of a file, computed once per (path, size, mtime) in this process, or taken from the store's index."""
    stat = path.stat()
    key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    if key not in _SHA_CACHE:
        for name, entry in read_index()["teachers"].items():
            dataset, arch = name.split("/", 1)
            if store_path(dataset, arch).resolve() == path.resolve() and entry.get("mtime_ns") == stat.st_mtime_ns:
                _SHA_CACHE[key] = entry["sha256"]
                break
        else:
            _SHA_CACHE[key] = file_digest(path)
    return _SHA_CACHE[key]


# --- reading checkpoints --------------------------------------------------------------------------------------


def read_checkpoint(path: Path) -> tuple[dict[str, torch.Tensor], float | None]:
    """(state dict without a DataParallel `module.` prefix, recorded top-1 or None) from any accepted format.

    Accepted: RepDistiller `{'epoch','model','accuracy','optimizer'}`, mdistiller `{'model'}`, this toolkit's
    checkpoints, or a bare state dict.
    """
    state_dict, recorded, _config = _read(path)
    return state_dict, recorded


def _read(path: Path) -> tuple[dict[str, torch.Tensor], float | None, dict[str, Any] | None]:
    """read_checkpoint plus the run config this toolkit's checkpoints carry (None for published files)."""
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        culprit = re.search(r"GLOBAL (\S+)", str(exc))  # the weights-only unpickler names what it refused
        if culprit is None:
            raise TeacherError(f"{path} is not a readable torch checkpoint; download it again") from None
        raise TeacherError(
            f"{path} was refused: it is not a plain weights file and unpickling it would run code (it asks for "
            f"{culprit.group(1)}); use the published checkpoint or a state dict saved with torch.save"
        ) from None
    except (RuntimeError, EOFError, OSError, ValueError) as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise TeacherError(f"{path} is not a readable torch checkpoint ({reason}); download it again") from None
    if not isinstance(payload, dict):
        raise TeacherError(f"{path} holds a {type(payload).__name__}, not a checkpoint dict or a state dict")
    recorded = _recorded_accuracy(payload)
    config = payload.get("config") if isinstance(payload.get("config"), dict) else None
    for key in STATE_DICT_KEYS:
        if isinstance(payload.get(key), dict):
            payload = payload[key]
            break
    if not payload or not all(isinstance(v, torch.Tensor) for v in payload.values()):
        keys = ", ".join(sorted(map(str, payload))[:6])
        raise TeacherError(f"{path} holds no state dict (top-level keys: {keys}); expected 'model' or tensors")
    state_dict = {k.removeprefix("module."): v for k, v in payload.items()}
    return state_dict, recorded, config


def _recorded_accuracy(payload: Mapping[str, Any]) -> float | None:
    for key in ACCURACY_KEYS:
        value = payload.get(key)
        if isinstance(value, torch.Tensor) and value.numel() == 1:
            return round(float(value), 4)
        if isinstance(value, int | float) and not isinstance(value, bool):
            return round(float(value), 4)
    return None


def _geometry(dataset: str, config: dict[str, Any] | None, checkpoint: Path) -> tuple[str, int]:
    """(model geometry, class count) of a teacher for `dataset`: fixed for the real datasets; for generated data
    read from the run config the engine saves in its checkpoints (the smoke suite registers such teachers)."""
    if dataset in NUM_CLASSES:
        return dataset, NUM_CLASSES[dataset]
    if config is None:
        raise TeacherError(
            f"{checkpoint} carries no run config, so its {dataset} class count is unknown; register the "
            "checkpoints/best.pt that `sddkd train` wrote"
        )
    from sddkd.config import RunConfig

    try:
        data = RunConfig.model_validate(config).data
    except ValueError:  # pydantic's ValidationError: a config of another sddkd version
        raise TeacherError(f"{checkpoint} carries a run config this sddkd cannot read; train it again") from None
    size = data.synthetic.image_size if data.synthetic is not None else 32
    # As the data layer's synthetic spec: 32 px imitates CIFAR-100, 224 px CUB-200 (CIFAR-style nets either way).
    return ("cifar100" if size == 32 else "cub200"), data.num_classes


def _build_model(arch: str, dataset: str, num_classes: int) -> nn.Module:
    from sddkd.models import create_model

    try:
        return create_model(arch, num_classes=num_classes, dataset=dataset)
    except (KeyError, ValueError) as exc:
        raise TeacherError(f"cannot build teacher architecture {arch!r} for {dataset}: {exc}") from None


def load_strict(
    model: nn.Module, state_dict: Mapping[str, torch.Tensor], *, arch: str, source: Path, dataset: str
) -> None:
    """load_state_dict(strict=True), reporting the first missing, unexpected or misshaped key in one line."""
    expected = model.state_dict()
    problem = None
    for key, tensor in expected.items():
        if key not in state_dict:
            problem = f"it lacks {key!r}"
        elif tuple(state_dict[key].shape) != tuple(tensor.shape):
            got, want = tuple(state_dict[key].shape), tuple(tensor.shape)
            problem = f"{key!r} has shape {got}, the architecture needs {want}"
        if problem:
            break
    else:
        unexpected = [k for k in state_dict if k not in expected]
        if unexpected:
            problem = f"it has the unexpected key {unexpected[0]!r}"
    if problem:
        raise TeacherError(
            f"{source} does not fit {arch} on {dataset}: {problem}; use the {dataset} checkpoint trained for {arch} "
            f"(`sddkd fetch-teachers --dataset {dataset} --arch {arch}`) or pass the right --arch"
        )
    model.load_state_dict(state_dict, strict=True)
