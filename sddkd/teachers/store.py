"""The teacher store under `SDDKD_HOME` (else `$XDG_CACHE_HOME/sddkd`): checksums, the index, finding and
registering teachers.

Store layout: `$SDDKD_HOME/teachers/<dataset>/<arch>.pth` (the published file, byte for byte) plus
`$SDDKD_HOME/teachers/index.json`, which records for each one its sha256, size, origin and recorded accuracy.
A file enters the store only after it loaded strictly into its architecture, and is re-verified on every use
(size always; sha256 when its mtime changed since the last check). Checkpoints are read with
`torch.load(weights_only=True)`: a downloaded pickle never runs code.

Where each dataset's teachers come from, and fetching them, is `sddkd.teachers.sources`.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from torch import nn

from sddkd import locations
from sddkd.download import file_digest
from sddkd.files import write_json_atomic
from sddkd.teachers.loading import TeacherError, _build_model, _geometry, _read, load_strict, read_checkpoint

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
    """{"teachers": {"<dataset>/<arch>": entry}, "sources": {url: sha256 first seen}}; a damaged file is one
    sentence (TeacherError) naming the way out."""
    index, problem = _read_index_leniently()
    if problem is not None:
        raise TeacherError(
            f"the teacher store's index {_index_path()} is damaged ({problem}); fetch or register the teacher again "
            "(`sddkd fetch-teachers ... --force`, which rewrites its entry), or delete the index to start it over"
        )
    return index


def _entry_problem(name: object, entry: object) -> str | None:
    if not isinstance(name, str) or name.count("/") != 1:
        return f"entry {name!r} is not named dataset/arch"
    if not isinstance(entry, dict):
        return f"entry {name} is not an object"
    sha256 = entry.get("sha256")
    if not isinstance(sha256, str) or len(sha256) != 64:
        return f"entry {name} has no sha256"
    for key in ("size", "mtime_ns"):
        value = entry.get(key)
        if key in entry or key == "size":
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                return f"entry {name} has no valid {key}"
    return None


def _read_index_leniently() -> tuple[dict[str, Any], str | None]:
    """The index with its valid parts only, and what was wrong with it (None when nothing): writers rebuild a
    damaged index from what is left, readers refuse it."""
    path = _index_path()
    empty: dict[str, Any] = {"teachers": {}, "sources": {}}
    if not path.exists():
        return empty, None
    try:
        raw = json.loads(path.read_bytes().decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
        return empty, "not valid JSON"
    except OSError as exc:
        raise TeacherError(f"cannot read the teacher store's index {path} ({exc.strerror})") from None
    if not isinstance(raw, dict):
        return empty, "not a JSON object"
    problems: list[str] = []
    teachers, sources = raw.get("teachers", {}), raw.get("sources", {})
    if not isinstance(teachers, dict):
        problems.append("'teachers' is not an object")
        teachers = {}
    if not isinstance(sources, dict) or not all(isinstance(v, str) for v in sources.values()):
        problems.append("'sources' is not an object of checksums")
        sources = {}
    kept = {}
    for name, entry in teachers.items():
        problem = _entry_problem(name, entry)
        if problem is None:
            kept[name] = entry
        else:
            problems.append(problem)
    return {**raw, "teachers": kept, "sources": sources}, (problems[0] if problems else None)


@contextlib.contextmanager
def _updating_index() -> Iterator[dict[str, Any]]:
    """Read-modify-write of the index under a file lock, replaced atomically so readers never see half a file."""
    store_dir().mkdir(parents=True, exist_ok=True)
    with open(store_dir() / ".index.lock", "w") as lock:
        with contextlib.suppress(ImportError):
            import fcntl  # POSIX; elsewhere concurrent fetches are not expected

            fcntl.flock(lock, fcntl.LOCK_EX)
        index, _ = _read_index_leniently()  # a write repairs a damaged index: the bad parts are dropped
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


def load_teacher(
    path: Path, arch: str, dataset: str, num_classes: int, *, data_name: str | None = None
) -> tuple[nn.Module, dict[str, Any]]:
    """The teacher in eval mode with gradients off, plus what a run records about it (JSON-ready): path, sha256,
    arch, dataset, published_top1 (what the field reports, if known) and recorded_top1 (stored in the file, if any).

    `dataset` is the model geometry (`cifar100` for generated 32-px data too); `data_name`, the data the run
    uses, is what the record names as its dataset (a synthetic run's teacher is not a CIFAR-100 teacher).

    Only tensors and plain containers are unpickled (`weights_only=True`); the state dict must fit `arch` exactly.
    """
    path = Path(path)
    if path.exists() and not path.is_file():
        kind = "a folder" if path.is_dir() else "not a regular file"
        raise TeacherError(f"teacher checkpoint {path} is {kind}; pass the checkpoint file itself")
    if not path.is_file():
        raise TeacherError(f"teacher checkpoint {path} does not exist; check the path or run `sddkd fetch-teachers`")
    state_dict, recorded = read_checkpoint(path)
    model = _build_model(arch, dataset, num_classes)
    load_strict(model, state_dict, arch=arch, source=path, dataset=dataset)
    model.eval()
    model.requires_grad_(False)
    named = data_name or dataset
    info = {
        "path": str(path.resolve()), "sha256": _sha256_cached(path), "arch": arch, "dataset": named,
        "published_top1": PUBLISHED_TOP1.get(named, {}).get(arch), "recorded_top1": recorded,
    }  # fmt: skip
    return model, info


_SHA_CACHE: dict[tuple[str, int, int], str] = {}


def teacher_sha256(path: Path) -> str:
    """The sha256 a run records for this teacher file (from the store's index when it knows the file)."""
    return _sha256_cached(Path(path))


def _sha256_cached(path: Path) -> str:
    """sha256 of a file, computed once per (path, size, mtime) in this process, or taken from the store's index."""
    stat = path.stat()
    key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    if key not in _SHA_CACHE:
        index, _ = _read_index_leniently()  # only a hint here: a damaged index must not stop a run's own file
        for name, entry in index["teachers"].items():
            dataset, arch = name.split("/", 1)
            if store_path(dataset, arch).resolve() == path.resolve() and entry.get("mtime_ns") == stat.st_mtime_ns:
                _SHA_CACHE[key] = entry["sha256"]
                break
        else:
            _SHA_CACHE[key] = file_digest(path)
    return _SHA_CACHE[key]
