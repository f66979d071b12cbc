"""`sddkd prepare-data`: download (or take a local copy), verify, extract and cache a dataset under the data root.

Layout under the data root (what the loaders read):
- `cifar-100-python/{train,test,meta}`: torchvision's archive, extracted;
- `CUB_200_2011/...` plus the decoded uint8 cache the CUB loader reads (built by `sddkd.data.cub`);
- `imagenet/{train,val}/<class>/*`: the user's copy (or a link to it) plus the index of `sddkd.data.imagenet`;
- `.prepared/<dataset>.json`: the marker of a finished preparation (archive md5, source, when). A dataset with a
  marker is not fetched or extracted again.
Nothing is half-written: downloads grow in a `.part` file, archives are extracted into a temporary folder that is
renamed into place, and the marker is written last.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sddkd.download import FetchError, extracted, file_digest, replace_dir
from sddkd.download import download as download_file
from sddkd.files import write_json_atomic

CIFAR100_URL = "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz"
CIFAR100_MD5 = "eb9058c3a382ffc7106e4002c42a8d85"
CUB200_URL = "https://data.caltech.edu/records/65de6-vp158/files/CUB_200_2011.tgz?download=1"
CUB200_MD5 = "97eceeb196236b17998738112f37df78"
FOLDERS = {"cifar100": "cifar-100-python", "cub200": "CUB_200_2011", "imagenet": "imagenet"}
CIFAR100_FILES = ("train", "test", "meta")
CUB200_FILES = ("images.txt", "train_test_split.txt", "image_class_labels.txt", "classes.txt", "images")
# Four images of the real archive and their md5s (from the CUB reference loader): a cheap check of the content.
CUB200_SPOT_CHECK = {
    "images/001.Black_footed_Albatross/Black_Footed_Albatross_0001_796111.jpg": "4c84da568f89519f84640c54b7fba7c2",
    "images/002.Laysan_Albatross/Laysan_Albatross_0001_545.jpg": "e7db63424d0e384dba02aacaf298cdc0",
    "images/198.Rock_Wren/Rock_Wren_0001_189289.jpg": "487d082f1fbd58faa7b08aa5ede3cc00",
    "images/200.Common_Yellowthroat/Common_Yellowthroat_0003_190521.jpg": "96fd60ce4b4805e64368efc32bf5c6fe",
}
OFFICIAL = {"cifar100": (CIFAR100_URL, CIFAR100_MD5), "cub200": (CUB200_URL, CUB200_MD5)}


class PrepareError(FetchError):
    """A dataset that cannot be prepared as asked; the message names the fix."""


@dataclass(frozen=True)
class Prepared:
    dataset: str
    path: Path  # the dataset's folder under the data root
    archive_md5: str | None  # None when prepared from an extracted folder
    reused: bool  # already prepared: nothing was fetched or extracted
    spot_check: str = ""  # CUB: "passed" or why it was skipped


def prepare_dataset(
    dataset: str,
    data_root: Path | str = "data",
    *,
    url: str | None = None,
    md5: str | None = None,
    source: Path | str | None = None,
    progress: bool = True,
) -> Prepared:
    """Make `dataset` ready under `data_root`, from the official URL, a mirror (`url`, `md5`) or a local `source`.

    `source` is an archive or an already-extracted folder; `md5` overrides the official archive checksum.
    """
    root = Path(data_root).expanduser()
    if dataset == "imagenet":
        if url or md5:
            raise PrepareError("ImageNet cannot be downloaded (licence); pass --from DIR with its train/ and val/")
        return _prepare_imagenet(root, Path(source).expanduser() if source else None)
    if dataset not in OFFICIAL:
        raise PrepareError(f"unknown dataset {dataset!r}; choose cifar100, cub200 or imagenet")
    md5 = md5.lower() if md5 else None
    previous = read_marker(root, dataset)
    if previous is not None and (md5 is None or previous.get("archive_md5") == md5) and _files_ready(dataset, root):
        return Prepared(dataset, root / FOLDERS[dataset], previous.get("archive_md5"), True,
                        previous.get("spot_check", ""))  # fmt: skip
    marker_path(root, dataset).unlink(missing_ok=True)  # from here on the dataset reads as not prepared
    local = Path(source).expanduser() if source else None
    if local is not None and local.is_dir():
        if md5:
            raise PrepareError(f"--md5 checks an archive, but --from {source} is a folder; leave --md5 out")
        return _prepare_from_folder(dataset, root, local, progress)
    official_url, official_md5 = OFFICIAL[dataset]
    expected_md5 = md5 or official_md5
    downloaded = None
    if local is None:
        downloaded = download_file(
            url or official_url, root / ".downloads" / _archive_name(dataset), md5=expected_md5, progress=progress,
            alternative="download the archive elsewhere and pass --from PATH (the archive or its extracted folder)",
        )  # fmt: skip
        archive = downloaded
    elif local.is_file():
        archive = local
        actual = file_digest(archive, "md5")
        if actual != expected_md5:
            which = "the --md5 given" if md5 else f"the official {dataset} archive"
            raise PrepareError(
                f"{archive} has md5 {actual}, not {expected_md5} ({which}); pass the right file, or --md5 {actual} "
                "if you trust this copy"
            )
    else:
        raise PrepareError(f"--from {source} does not exist; pass the archive or its extracted folder")
    try:
        result = _install_archive(dataset, root, archive, expected_md5, progress)
    except FetchError:
        # A download with the right checksum but unusable content (unsafe, wrong layout) is not kept; after any
        # other failure (an interrupt, a bug) the verified archive stays in .downloads/ and the next run reuses it.
        if downloaded is not None:
            _remove_download(downloaded)
        raise
    if downloaded is not None:
        _remove_download(downloaded)
    return result


def _remove_download(path: Path) -> None:
    path.unlink(missing_ok=True)
    with contextlib.suppress(OSError):  # keep .downloads/ only while it holds something
        path.parent.rmdir()


def _archive_name(dataset: str) -> str:
    return {"cifar100": "cifar-100-python.tar.gz", "cub200": "CUB_200_2011.tgz"}[dataset]


def _install_archive(dataset: str, root: Path, archive: Path, archive_md5: str, progress: bool) -> Prepared:
    dest = root / FOLDERS[dataset]
    with extracted(archive, near=dest, progress=progress) as tmp:
        folder = tmp / FOLDERS[dataset]
        _check_layout(dataset, folder, f"{archive.name} (extracted)")
        spot_check = _spot_check(folder, official=archive_md5 == CUB200_MD5) if dataset == "cub200" else ""
        replace_dir(folder, dest)
    try:
        return _finish(dataset, root, dest, archive_md5=archive_md5, source=str(archive), spot_check=spot_check,
                       progress=progress)  # fmt: skip
    except BaseException:
        shutil.rmtree(dest, ignore_errors=True)  # no marker, no half-prepared folder
        raise


def _prepare_from_folder(dataset: str, root: Path, local: Path, progress: bool) -> Prepared:
    """An already-extracted copy: the dataset folder itself or a folder holding it."""
    is_dataset_folder = (local / CIFAR100_FILES[0]).exists() or (local / "images.txt").exists()
    folder = local if is_dataset_folder else local / FOLDERS[dataset]
    _check_layout(dataset, folder, str(local))
    dest = root / FOLDERS[dataset]
    spot_check = "skipped: prepared from a folder given with --from" if dataset == "cub200" else ""
    if dataset == "cub200":
        dest = folder  # the cache is built from the user's folder in place; the images are not copied
    elif folder.resolve() != dest.resolve():
        dest.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{dest.name}.copy-", dir=dest.parent))
        try:
            shutil.copytree(folder, staging / dest.name)
            replace_dir(staging / dest.name, dest)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return _finish(dataset, root, dest, archive_md5=None, source=str(local.resolve()), spot_check=spot_check,
                   progress=progress)  # fmt: skip


def _check_layout(dataset: str, folder: Path, what: str) -> None:
    expected = CIFAR100_FILES if dataset == "cifar100" else CUB200_FILES
    missing = [name for name in expected if not (folder / name).exists()]
    if missing:
        raise PrepareError(
            f"{what} does not hold {FOLDERS[dataset]}/{missing[0]}; pass the {dataset} archive or its extracted folder"
        )


def _spot_check(folder: Path, *, official: bool) -> str:
    """The official archive must hold four known images with known md5s; a mirror the user vouched for is skipped."""
    if not official:
        return "skipped: archive checksum given with --md5/--from"
    for relative, expected in CUB200_SPOT_CHECK.items():
        path = folder / relative
        actual = file_digest(path, "md5") if path.is_file() else "missing"
        if actual != expected:
            raise PrepareError(f"CUB image {relative} is {actual}, expected md5 {expected}; download the archive again")
    return "passed"


def _finish(
    dataset: str, root: Path, dest: Path, *, archive_md5: str | None, source: str, spot_check: str, progress: bool
) -> Prepared:
    """Build what the loader needs beyond the files, then write the marker (last, so it means 'complete')."""
    if dataset == "cub200":
        from sddkd.data.cub import build_cub_cache, cub_cache_dir

        build_cub_cache(dest, cub_cache_dir(root), progress=progress)
    write_marker(root, dataset, {"archive_md5": archive_md5, "source": source, "spot_check": spot_check,
                                 "path": str(dest)})  # fmt: skip
    return Prepared(dataset, dest, archive_md5, False, spot_check)


def _files_ready(dataset: str, root: Path) -> bool:
    if dataset == "cub200":
        from sddkd.data.cub import cub_cache_ready

        return bool(cub_cache_ready(root))
    return all((root / FOLDERS[dataset] / name).exists() for name in CIFAR100_FILES)


# --- ImageNet: the user's copy --------------------------------------------------------------------------------


def _prepare_imagenet(root: Path, source: Path | None) -> Prepared:
    """Link the user's copy in as `<root>/imagenet` (too large to copy), check it and write the index."""
    from sddkd.data.imagenet import build_imagenet_index, imagenet_index_path

    dest = root / FOLDERS["imagenet"]
    if source is not None and not (source / "train").is_dir() and (source / FOLDERS["imagenet"]).is_dir():
        source = source / FOLDERS["imagenet"]  # a data root holding imagenet/ rather than the folder itself
    same_place = source is None or (dest.exists() and source.resolve() == dest.resolve())
    if read_marker(root, "imagenet") is not None and same_place and imagenet_index_path(root).is_file():
        return Prepared("imagenet", dest, None, True)
    linked = False
    if source is not None and (not dest.exists() or source.resolve() != dest.resolve()):
        if not (source / "train").is_dir() or not (source / "val").is_dir():
            raise PrepareError(f"--from {source} needs train/ and val/ folders with one folder per ImageNet class")
        if dest.exists() and not dest.is_symlink():
            raise PrepareError(f"{dest} already exists; remove it or pass another --data-root to use {source}")
        dest.unlink(missing_ok=True)
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.symlink_to(source.resolve(), target_is_directory=True)
        linked = True
    elif not dest.exists():
        raise PrepareError(
            "ImageNet cannot be downloaded (its licence requires getting it from image-net.org); pass --from DIR "
            f"with its train/ and val/ class folders, or put them under {dest}"
        )
    try:
        build_imagenet_index(root)
    except BaseException:
        if linked:
            dest.unlink()
        raise
    write_marker(root, "imagenet", {"archive_md5": None, "source": str(dest.resolve()), "path": str(dest)})
    return Prepared("imagenet", dest, None, False)


# --- the marker -----------------------------------------------------------------------------------------------


def marker_path(root: Path, dataset: str) -> Path:
    return root / ".prepared" / f"{dataset}.json"


def read_marker(root: Path, dataset: str) -> dict[str, Any] | None:
    path = marker_path(root, dataset)
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None


def write_marker(root: Path, dataset: str, fields: dict[str, Any]) -> None:
    path = marker_path(root, dataset)
    payload = {"dataset": dataset, **fields, "prepared": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    write_json_atomic(path, payload)
