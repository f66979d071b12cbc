"""`sddkd prepare-data` end to end: generated archives served on 127.0.0.1, local copies, and clean failures."""

from __future__ import annotations

import hashlib
import io
import tarfile
from pathlib import Path

import pytest
from typer.testing import CliRunner

from sddkd import cli
from sddkd.data.prepare import read_marker
from tests.fakes import make_cifar100_archive, make_cifar100_tree, make_cub_archive, make_imagenet_tree
from tests.local_http import LocalServer, closed_port_url


def md5_of(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def prepare(*args: str):
    return CliRunner().invoke(cli.app, ["prepare-data", *args])


def failed_with_one_line(result) -> bool:
    """A user error: non-zero exit and exactly one line, the sentence that names the fix."""
    lines = result.output.strip().splitlines()
    return result.exit_code != 0 and len(lines) == 1 and lines[0].startswith("error: ")


def leftovers(root: Path) -> list[str]:
    """Everything under the data root except empty bookkeeping folders: what a failure must not leave."""
    if not root.exists():
        return []
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file() or p.is_symlink())


@pytest.fixture(scope="module")
def cifar_archive(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_cifar100_archive(tmp_path_factory.mktemp("cifar") / "cifar-100-python.tar.gz", n_train=60, n_test=20)


def test_cifar100_download_resumes_verifies_and_is_idempotent(tmp_path: Path, cifar_archive: Path) -> None:
    root, data = tmp_path / "data", cifar_archive.read_bytes()
    with LocalServer({"c.tgz": data}) as server:
        server.drop_once("c.tgz", after_bytes=len(data) // 3)
        url, md5 = server.url("c.tgz"), md5_of(cifar_archive)
        result = prepare("cifar100", "--data-root", str(root), "--url", url, "--md5", md5)
    assert result.exit_code == 0, result.output
    assert [r.range for r in server.requests] == [None, f"bytes={len(data) // 3}-"]
    assert all((root / "cifar-100-python" / name).is_file() for name in ("train", "test", "meta"))
    assert read_marker(root, "cifar100")["archive_md5"] == md5_of(cifar_archive)
    assert not (root / ".downloads").exists()  # the download is not kept

    from sddkd.data.cifar import read_cifar100_split

    images, labels = read_cifar100_split(root, "train")  # what the engine reads
    assert len(images) == len(labels) == 60

    requests = len(server.requests)
    again = prepare("cifar100", "--data-root", str(root), "--url", server.url("c.tgz"))
    assert again.exit_code == 0 and "already prepared" in again.output and len(server.requests) == requests


def test_checksum_mismatch_leaves_nothing(tmp_path: Path, cifar_archive: Path) -> None:
    root = tmp_path / "data"
    with LocalServer({"c.tgz": cifar_archive.read_bytes()}) as server:
        result = prepare("cifar100", "--data-root", str(root), "--url", server.url("c.tgz"), "--md5", "0" * 32)
    assert failed_with_one_line(result)
    assert f"md5 {md5_of(cifar_archive)}, expected {'0' * 32}" in result.output
    assert len(result.output.strip().splitlines()) == 1
    assert leftovers(root) == []


def test_a_local_archive_must_match_the_official_md5_or_the_given_one(tmp_path: Path, cifar_archive: Path) -> None:
    root = tmp_path / "data"
    refused = prepare("cifar100", "--data-root", str(root), "--from", str(cifar_archive))
    assert failed_with_one_line(refused) and f"--md5 {md5_of(cifar_archive)}" in refused.output
    assert leftovers(root) == []
    md5 = md5_of(cifar_archive)
    accepted = prepare("cifar100", "--data-root", str(root), "--from", str(cifar_archive), "--md5", md5)
    assert accepted.exit_code == 0, accepted.output
    assert cifar_archive.exists()  # the user's own file is never deleted


def test_an_extracted_folder_is_copied_in(tmp_path: Path) -> None:
    elsewhere = make_cifar100_tree(tmp_path / "usb", n_train=10, n_test=5)
    root = tmp_path / "data"
    result = prepare("cifar100", "--data-root", str(root), "--from", str(elsewhere))
    assert result.exit_code == 0, result.output
    assert (root / "cifar-100-python" / "train").read_bytes() == (elsewhere / "cifar-100-python" / "train").read_bytes()
    assert read_marker(root, "cifar100")["archive_md5"] is None


def _unsafe_cifar_archive(path: Path, kind: str) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        for name in ("train", "test", "meta"):
            info = tarfile.TarInfo(f"cifar-100-python/{name}")
            info.size = 4
            tar.addfile(info, io.BytesIO(b"data"))
        info = tarfile.TarInfo({"dotdot": "../escaped.txt", "absolute": "/tmp/sddkd-escaped.txt"}.get(kind, "x/link"))
        if kind == "symlink":
            info.type, info.linkname = tarfile.SYMTYPE, "../../.."
            tar.addfile(info)
        else:
            info.size = 4
            tar.addfile(info, io.BytesIO(b"evil"))
    return path


@pytest.mark.parametrize("kind", ["dotdot", "absolute", "symlink"])
def test_unsafe_archive_is_refused_and_leaves_nothing(tmp_path: Path, kind: str) -> None:
    archive = _unsafe_cifar_archive(tmp_path / "bad.tgz", kind)
    root = tmp_path / "data"
    result = prepare("cifar100", "--data-root", str(root), "--from", str(archive), "--md5", md5_of(archive))
    assert failed_with_one_line(result) and "refusing" in result.output
    assert leftovers(root) == [] and not (root / "cifar-100-python").exists()
    assert not (tmp_path / "escaped.txt").exists() and not Path("/tmp/sddkd-escaped.txt").exists()


def test_no_network_names_the_url_and_the_offline_alternative(tmp_path: Path) -> None:
    url = closed_port_url("cifar-100-python.tar.gz")
    result = prepare("cifar100", "--data-root", str(tmp_path / "data"), "--url", url)
    assert failed_with_one_line(result)
    assert url in result.output and "--from PATH" in result.output
    assert leftovers(tmp_path / "data") == []


def test_cub200_archive_builds_the_cache(tmp_path: Path) -> None:
    from sddkd.data.cub import cub_cache_ready

    archive = make_cub_archive(tmp_path / "CUB_200_2011.tgz", n_classes=3, per_class=2)
    root = tmp_path / "data"
    with LocalServer({"cub.tgz": archive.read_bytes()}) as server:
        result = prepare("cub200", "--data-root", str(root), "--url", server.url("cub.tgz"), "--md5", md5_of(archive))
    assert result.exit_code == 0, result.output
    assert cub_cache_ready(root) and (root / "CUB_200_2011" / "image_class_labels.txt").is_file()
    assert read_marker(root, "cub200")["spot_check"].startswith("skipped")  # generated images, md5 overridden
    assert not (root / "attributes.txt").exists()  # only the dataset folder is taken from the archive


def test_cub200_official_md5_requires_the_spot_check_images(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import sddkd.data.prepare as prepare_module

    archive = make_cub_archive(tmp_path / "CUB_200_2011.tgz", n_classes=2, per_class=1)
    monkeypatch.setattr(prepare_module, "CUB200_MD5", md5_of(archive))  # pretend it is the official archive
    monkeypatch.setitem(prepare_module.OFFICIAL, "cub200", (prepare_module.CUB200_URL, md5_of(archive)))
    root = tmp_path / "data"
    result = prepare("cub200", "--data-root", str(root), "--from", str(archive))
    assert failed_with_one_line(result) and "Black_Footed_Albatross_0001_796111.jpg is missing" in result.output
    assert leftovers(root) == []


def test_imagenet_is_linked_from_the_users_copy(tmp_path: Path) -> None:
    root = tmp_path / "data"
    refused = prepare("imagenet", "--data-root", str(root))
    assert failed_with_one_line(refused) and "licence" in refused.output and "--from" in refused.output

    tree = make_imagenet_tree(tmp_path / "usb", classes=2, per_class=1) / "imagenet"  # {train,val}/<class>/
    result = prepare("imagenet", "--data-root", str(root), "--from", str(tree))
    assert result.exit_code == 0, result.output
    assert (root / "imagenet").resolve() == tree.resolve()
    assert "already prepared" in prepare("imagenet", "--data-root", str(root)).output
    other = tmp_path / "other-root"  # --from may also name a folder that holds imagenet/
    assert prepare("imagenet", "--data-root", str(other), "--from", str(tree.parent)).exit_code == 0
    assert (other / "imagenet").resolve() == tree.resolve()
