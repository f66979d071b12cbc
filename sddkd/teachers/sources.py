"""Where each dataset's published teachers come from, and fetching them into the store (`sddkd fetch-teachers`).

- CIFAR-100: mdistiller's release tar (`cifar_teachers/<arch>_vanilla/ckpt_epoch_240.pth`). No checksum is
  published, so the sha256 the URL served the first time is recorded and a later download must match it.
- CUB-200: only a Baidu Pan share (not scriptable): the user passes the folder or archive they downloaded
  (`cub200/<arch>_vanilla/<arch>_best.pth`), or trains the teacher.
- ImageNet: torchvision's weights, downloaded and hash-checked by torch.hub.
Any source may also be a local folder, archive or single checkpoint (`--source`), for offline machines and mirrors.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import sys
import tarfile
import urllib.error
import zipfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from fnmatch import fnmatchcase
from pathlib import Path, PurePosixPath
from typing import IO, Literal

from rich.console import Group
from rich.table import Table
from rich.text import Text

from sddkd.datasets import DATASET_NAMES, dataset_spec
from sddkd.download import download, file_digest, is_url, verify_digest
from sddkd.teachers.loading import TeacherError
from sddkd.teachers.store import (
    PUBLISHED_TOP1,
    find_teacher,
    read_index,
    record_source,
    register_teacher,
    sddkd_home,
    store_dir,
    store_path,
)  # fmt: skip

CIFAR_TEACHERS_URL = "https://github.com/megvii-research/mdistiller/releases/download/checkpoints/cifar_teachers.tar"
CUB_TEACHERS_SHARE = "https://pan.baidu.com/s/1uxyG3ZZO67i_dbXwuFB2yQ"
CUB_TEACHERS_CODE = "bzc6"


@dataclass(frozen=True)
class Source:
    default_archs: tuple[str, ...]
    patterns: tuple[str, ...]  # where one arch's checkpoint sits inside the published archive or folder
    url: str | None  # None: not downloadable by script


SOURCES = {
    "cifar100": Source(
        ("resnet32x4", "wrn_40_2", "ResNet50", "vgg13", "resnet56", "resnet110"),
        ("{arch}_vanilla/ckpt_epoch_240.pth", "{arch}.pth"), CIFAR_TEACHERS_URL,
    ),
    "cub200": Source(("resnet32x4", "vgg13", "ResNet50"), ("{arch}_vanilla/{arch}_best.pth", "{arch}.pth"), None),
    "imagenet": Source(("resnet34", "resnet50"), ("{arch}.pth", "{arch}-*.pth"), None),  # + torchvision hub names
}  # fmt: skip


@dataclass(frozen=True)
class TeacherStatus:
    dataset: str
    arch: str
    state: Literal["verified", "fetched", "missing"]  # verified: already in the store and its sha256 matches
    path: Path | None = None
    sha256: str | None = None
    published_top1: float | None = None
    recorded_top1: float | None = None
    note: str = ""


def fetch_teachers(
    dataset: str,
    archs: Sequence[str] = (),
    *,
    source: str | None = None,
    sha256: str | None = None,
    force: bool = False,
    progress: bool = True,
) -> list[TeacherStatus]:
    """Make each teacher of `dataset` available in the store; return one status per arch (missing ones say why).

    `source` replaces the default origin (URL, archive, folder or single checkpoint); `sha256` is that file's
    expected digest. `force` fetches again even when a verified copy is in the store.
    """
    if dataset not in SOURCES:
        raise TeacherError(f"unknown dataset {dataset!r}; choose one of {', '.join(SOURCES)}")
    archs = list(dict.fromkeys(archs or SOURCES[dataset].default_archs))
    _check_archs(dataset, archs)
    todo = []
    for arch in archs:
        try:
            present = None if force else find_teacher(dataset, arch)
        except TeacherError:  # the stored copy changed: fetch it again
            present = None
        if present is None:
            todo.append(arch)
    if todo:
        if dataset == "imagenet" and source is None:
            for arch in todo:
                _fetch_torchvision(arch, progress)
        elif source is not None or SOURCES[dataset].url is not None:
            _fetch_from(dataset, todo, source or str(SOURCES[dataset].url), sha256=sha256, progress=progress)
    return [_status(dataset, arch, fetched=arch in todo, source=source) for arch in archs]


def _check_archs(dataset: str, archs: list[str]) -> None:
    from sddkd.models import list_models

    known = set(list_models(dataset))
    unknown = [a for a in archs if a not in known]
    if unknown:
        raise TeacherError(f"unknown {dataset} architecture {unknown[0]!r}; choose from {', '.join(sorted(known))}")


def _status(dataset: str, arch: str, *, fetched: bool, source: str | None) -> TeacherStatus:
    path = find_teacher(dataset, arch)
    published = PUBLISHED_TOP1.get(dataset, {}).get(arch)
    if path is None:
        return TeacherStatus(
            dataset, arch, "missing", published_top1=published, note=missing_note(dataset, arch, source)
        )
    entry = read_index()["teachers"][f"{dataset}/{arch}"]
    return TeacherStatus(
        dataset, arch, "fetched" if fetched else "verified", path, entry["sha256"],
        published, entry.get("accuracy"), note=entry.get("origin", ""),
    )  # fmt: skip


def missing_note(dataset: str, arch: str, source: str | None) -> str:
    """Where a missing teacher comes from, and the command that trains it instead."""
    train = _train_hint(dataset, arch)
    published = arch in PUBLISHED_TOP1.get(dataset, {}) or (dataset == "imagenet" and _has_torchvision_weights(arch))
    if dataset == "cub200" and published and source is None:
        return (
            f"download cub200/{arch}_vanilla/{arch}_best.pth from {CUB_TEACHERS_SHARE} (code {CUB_TEACHERS_CODE}) "
            f"and pass it (or the downloaded folder) with --source; or {train}"
        )
    if not published:
        return f"no published {_title(dataset)} teacher exists for {arch}; {train}"
    if source is not None:
        return f"not found in {source}; {train}"
    return f"run `sddkd fetch-teachers --dataset {dataset} --arch {arch}`, or {train}"


def _title(dataset: str) -> str:
    return dataset_spec(dataset).title if dataset in DATASET_NAMES else dataset


def _train_hint(dataset: str, arch: str) -> str:
    from sddkd.config import list_presets

    preset = f"{dataset}/vanilla/{arch}"
    # The same sentence serves the CLI and the Python API: name both ways of giving the checkpoint.
    given = "with --teacher (in Python: the override teacher.checkpoint=PATH)"
    if preset not in list_presets():
        return f"train it with a vanilla preset of your own and pass its checkpoint {given}"
    if dataset == "synthetic":
        return (
            f"`sddkd suite smoke` trains and registers it, or train it: `sddkd train --preset {preset}`, then "
            f"pass RUN_DIR/checkpoints/best.pt {given}"
        )
    then = (
        f"`sddkd fetch-teachers --dataset {dataset} --arch {arch} --source RUN_DIR/checkpoints/best.pt`"
        if dataset in SOURCES
        else f"pass RUN_DIR/checkpoints/best.pt {given}"
    )
    return f"train it: `sddkd train --preset {preset}`, then {then}"


def _has_torchvision_weights(arch: str) -> bool:
    from torchvision.models import get_model_weights

    try:
        return hasattr(get_model_weights(arch), "IMAGENET1K_V1")
    except ValueError:
        return False


# --- fetching from an archive, folder or single checkpoint ----------------------------------------------------


def _fetch_from(dataset: str, archs: list[str], source: str, *, sha256: str | None, progress: bool) -> None:
    downloads = sddkd_home() / "downloads"
    if is_url(source):
        name = PurePosixPath(source.split("?", 1)[0]).name or "teachers"
        local = download(
            source, downloads / name, sha256=sha256, progress=progress,
            alternative="download it elsewhere and pass --source PATH (the file or its unpacked folder)",
        )  # fmt: skip
    else:
        local = Path(source).expanduser()
        if not local.exists():
            raise TeacherError(f"--source {source} does not exist; pass a URL, an archive, a folder or a checkpoint")
        if sha256 and not local.is_file():
            raise TeacherError(f"--sha256 checks a file, but --source {source} is a folder; leave --sha256 out")
        if sha256:
            verify_digest(local, sha256, "sha256", what=str(local), fix="pass the right file or its sha256")
    try:
        if is_url(source):
            _pin_first_seen(source, local, explicit=sha256 is not None)
        with _checkpoints_in(local, SOURCES[dataset].patterns, len(archs)) as find:
            origin = source if is_url(source) else str(local.resolve())
            for arch in archs:
                _install_member(dataset, arch, find, origin=origin)
    finally:
        if is_url(source):
            local.unlink(missing_ok=True)


def _pin_first_seen(url: str, local: Path, *, explicit: bool) -> None:
    """Trust on first use: a URL must keep serving the file it served the first time, unless --sha256 says so."""
    digest = file_digest(local)
    previous = read_index()["sources"].get(url)
    if previous and previous != digest and not explicit:
        raise TeacherError(
            f"{url} now serves a file with sha256 {digest}, not the {previous} it served before; "
            f"pass --sha256 {digest} if you trust the new file"
        )
    record_source(url, digest)


Finder = Callable[[str, Path], "str | None"]  # (arch, where to write it) -> the member copied, None if absent


@contextlib.contextmanager
def _checkpoints_in(local: Path, patterns: Sequence[str], num_archs: int) -> Iterator[Finder]:
    """A finder that copies one arch's checkpoint out of an archive, a folder or a single file.

    Archive members are read as bytes into our own file name, so their names and links are never extracted.
    """

    def pick(arch: str, names: Iterator[str]) -> str | None:
        found = sorted(name for name in names if _matches(arch, name, patterns))
        return found[0] if found else None

    if local.is_dir():
        files = {p.relative_to(local).as_posix(): p for p in local.rglob("*") if p.is_file()}

        def from_folder(arch: str, dest: Path) -> str | None:
            name = pick(arch, iter(files))
            if name is not None:
                shutil.copyfile(files[name], dest)
            return name

        yield from_folder
    elif tarfile.is_tarfile(local):
        with tarfile.open(local) as handle:
            members = {m.name: m for m in handle.getmembers() if m.isfile()}

            def from_tar(arch: str, dest: Path) -> str | None:
                name = pick(arch, iter(members))
                return name if name is not None and _copy_stream(handle.extractfile(members[name]), dest) else None

            yield from_tar
    elif zipfile.is_zipfile(local) and not _is_torch_zip(local):
        with zipfile.ZipFile(local) as zip_handle:

            def from_zip(arch: str, dest: Path) -> str | None:
                name = pick(arch, (n for n in zip_handle.namelist() if not n.endswith("/")))
                return name if name is not None and _copy_stream(zip_handle.open(name), dest) else None

            yield from_zip
    elif num_archs == 1:

        def whole_file(arch: str, dest: Path) -> str | None:
            shutil.copyfile(local, dest)
            return ""

        yield whole_file
    else:
        raise TeacherError(f"{local} is a single checkpoint; name the one architecture it holds with --arch")


def _matches(arch: str, relative: str, patterns: Sequence[str]) -> bool:
    """Whether an archive or folder path is this arch's checkpoint, under any leading folders."""
    parts = relative.split("/")
    suffixes = ["/".join(parts[i:]) for i in range(len(parts))]
    return any(fnmatchcase(s, p.format(arch=arch)) for p in patterns for s in suffixes)


def _copy_stream(stream: IO[bytes] | None, dest: Path) -> bool:
    if stream is None:
        return False
    with stream, open(dest, "wb") as out:
        shutil.copyfileobj(stream, out, 1 << 20)
    return True


def _is_torch_zip(path: Path) -> bool:
    """torch.save's zip format (a checkpoint, not an archive of checkpoints)."""
    with zipfile.ZipFile(path) as handle:
        return any(name.endswith("/data.pkl") for name in handle.namelist())


def _install_member(dataset: str, arch: str, find: Finder, *, origin: str) -> None:
    staged = store_path(dataset, arch).with_name(f".{arch}.pth.{os.getpid()}.incoming")
    staged.parent.mkdir(parents=True, exist_ok=True)
    try:
        member = find(arch, staged)
        if member is not None:
            where = f"{origin}#{member}" if member else origin
            register_teacher(dataset, arch, staged, origin=where, accuracy=None, move=True)
    finally:
        staged.unlink(missing_ok=True)


# --- ImageNet: torchvision's weights --------------------------------------------------------------------------


def torchvision_release(arch: str) -> tuple[str, float]:
    """(URL, published ImageNet top-1) of torchvision's IMAGENET1K_V1 weights: the field's ImageNet teachers."""
    from torchvision.models import get_model_weights

    try:
        weights = get_model_weights(arch).IMAGENET1K_V1
    except (ValueError, AttributeError):
        raise TeacherError(f"torchvision publishes no ImageNet weights for {arch}; pass --source PATH.pth") from None
    return weights.url, float(weights.meta["_metrics"]["ImageNet-1K"]["acc@1"])


def _fetch_torchvision(arch: str, progress: bool) -> None:
    """Download with torch.hub, which checks the sha256 prefix in the file name (`resnet50-0676ba61.pth`)."""
    import torch.hub

    url, top1 = torchvision_release(arch)
    hash_prefix = re.search(r"-([a-f0-9]+)\.pth$", url)
    staged = store_path("imagenet", arch).with_name(f".{arch}.pth.{os.getpid()}.incoming")
    staged.parent.mkdir(parents=True, exist_ok=True)
    try:
        try:
            prefix = hash_prefix.group(1) if hash_prefix else None
            # A bar only on a terminal, as for every other download (logs and CI stay clean).
            show = progress and sys.stderr.isatty()
            torch.hub.download_url_to_file(url, str(staged), hash_prefix=prefix, progress=show)
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise TeacherError(
                f"cannot reach {url} ({reason}); without network, download it elsewhere and pass --source PATH.pth"
            ) from None
        except RuntimeError as exc:  # torch.hub's hash check
            raise TeacherError(f"{url} failed torchvision's hash check ({exc}); download it again") from None
        register_teacher("imagenet", arch, staged, origin=url, accuracy=top1, move=True)
    finally:
        staged.unlink(missing_ok=True)


# --- the status report ----------------------------------------------------------------------------------------


def status_report(statuses: Sequence[TeacherStatus]) -> Group:
    """A table (one row per arch) followed by one line per missing teacher saying where it comes from."""
    dataset = statuses[0].dataset if statuses else ""
    table = Table(title=f"{dataset} teachers in {sddkd_home() / 'teachers'}", title_justify="left")
    for column in ("arch", "status", "sha256", "published top-1", "recorded top-1"):
        table.add_column(column, no_wrap=True)
    colors = {"verified": "green", "fetched": "green", "missing": "red"}
    for s in statuses:
        table.add_row(
            s.arch, f"[{colors[s.state]}]{s.state}[/]", (s.sha256 or "")[:12] + ("…" if s.sha256 else ""),
            _percent(s.published_top1), _percent(s.recorded_top1),
        )  # fmt: skip
    notes = [Text(f"{s.arch}: {s.note}") for s in statuses if s.state == "missing"]
    return Group(table, *notes)


def _percent(value: float | None) -> str:
    return "" if value is None else f"{value:.2f}"


def missing_teacher_message(dataset: str, arch: str) -> str:
    """Why no teacher was found for (dataset, arch), and how to get one: fetch it, download it by hand, or train it."""
    return f"no {arch} teacher for {dataset} in {store_dir()}: {missing_note(dataset, arch, None)}"
