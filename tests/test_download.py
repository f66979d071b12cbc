"""Downloads (resume, Range ignored, checksums, no network) against a local server; safe archive extraction."""

from __future__ import annotations

import hashlib
import io
import os
import tarfile
import zipfile
from pathlib import Path

import pytest

from sddkd.download import ChecksumError, FetchError, UnsafeArchiveError, download, extracted
from tests.local_http import LocalServer, closed_port_url

BODY = os.urandom(300_000)
MD5 = hashlib.md5(BODY).hexdigest()


def test_download_verifies_and_renames(tmp_path: Path) -> None:
    with LocalServer({"a.bin": BODY}) as server:
        path = download(server.url("a.bin"), tmp_path / "a.bin", md5=MD5, progress=False)
    assert path.read_bytes() == BODY
    assert not (tmp_path / "a.bin.part").exists()


def test_dropped_connection_is_resumed_with_range(tmp_path: Path) -> None:
    with LocalServer({"a.bin": BODY}) as server:
        server.drop_once("a.bin", after_bytes=100_000)
        path = download(server.url("a.bin"), tmp_path / "a.bin", md5=MD5, progress=False)
    assert path.read_bytes() == BODY
    assert [r.range for r in server.requests] == [None, "bytes=100000-"]


def test_exhausted_retries_keep_the_part_for_the_next_run(tmp_path: Path) -> None:
    dest = tmp_path / "a.bin"
    with LocalServer({"a.bin": BODY}) as server:
        server.drop_once("a.bin", after_bytes=50_000, times=2)
        with pytest.raises(FetchError, match="interrupted 2 times.*run the command again"):
            download(server.url("a.bin"), dest, md5=MD5, attempts=2, progress=False)
        assert not dest.exists()
        assert (tmp_path / "a.bin.part").stat().st_size == 100_000  # 50 kB per attempt, appended
        download(server.url("a.bin"), dest, md5=MD5, progress=False)
    assert dest.read_bytes() == BODY
    assert server.requests[-1].range == "bytes=100000-"


def test_server_ignoring_range_restarts_from_zero(tmp_path: Path) -> None:
    (tmp_path / "a.bin.part").write_bytes(b"stale bytes of some other attempt")
    with LocalServer({"a.bin": BODY}, ignore_range=True) as server:
        path = download(server.url("a.bin"), tmp_path / "a.bin", md5=MD5, progress=False)
    assert path.read_bytes() == BODY
    assert server.requests[0].range == "bytes=33-"


def test_checksum_mismatch_deletes_the_file(tmp_path: Path) -> None:
    with LocalServer({"a.bin": BODY}) as server:
        with pytest.raises(ChecksumError, match=f"md5 {MD5}, expected 0{{32}}"):
            download(server.url("a.bin"), tmp_path / "a.bin", md5="0" * 32, progress=False)
    assert list(tmp_path.iterdir()) == []


def test_no_network_names_the_url_and_the_alternative(tmp_path: Path) -> None:
    url = closed_port_url("a.bin")
    with pytest.raises(FetchError) as info:
        download(url, tmp_path / "a.bin", alternative="pass --from PATH", progress=False)
    message = str(info.value)
    assert url in message and "--from PATH" in message and "\n" not in message
    assert list(tmp_path.iterdir()) == []


def test_http_error_is_one_line(tmp_path: Path) -> None:
    with LocalServer({}) as server, pytest.raises(FetchError, match="HTTP 404"):
        download(server.url("missing.bin"), tmp_path / "x", progress=False)


# --- extraction -----------------------------------------------------------------------------------------------


def _tar(path: Path, members: list[tuple[str, bytes | None, str | None]]) -> Path:
    """(name, data, symlink target): data for a file, a target for a symlink."""
    with tarfile.open(path, "w:gz") as tar:
        for name, data, link in members:
            info = tarfile.TarInfo(name)
            if link is not None:
                info.type, info.linkname = tarfile.SYMTYPE, link
                tar.addfile(info)
            else:
                info.size = len(data or b"")
                tar.addfile(info, io.BytesIO(data or b""))
    return path


def test_safe_archive_extracts_with_inner_links(tmp_path: Path) -> None:
    archive = _tar(tmp_path / "ok.tgz", [("top/a.txt", b"A", None), ("top/sub/link", None, "../a.txt")])
    with extracted(archive, near=tmp_path / "out" / "top", progress=False) as root:
        assert (root / "top" / "a.txt").read_bytes() == b"A"
        assert (root / "top" / "sub" / "link").read_bytes() == b"A"
    assert list((tmp_path / "out").iterdir()) == []  # the temporary folder is gone


@pytest.mark.parametrize(
    "members",
    [
        [("top/ok.txt", b"x", None), ("../evil.txt", b"x", None)],
        [("/tmp/sddkd-absolute-evil.txt", b"x", None)],
        [("top/link", None, "../../outside")],
        [("top/link", None, "/etc")],
        [("top/link", None, "."), ("top/link/../../evil.txt", b"x", None)],
        [("top/dir", None, "sub"), ("top/dir/evil.txt", b"x", None)],
    ],
    ids=["dotdot", "absolute", "escaping-symlink", "absolute-symlink", "through-link-dotdot", "through-link"],
)
def test_unsafe_archives_are_refused_before_writing(tmp_path: Path, members: list) -> None:
    archive = _tar(tmp_path / "bad.tgz", members)
    out = tmp_path / "out"
    with pytest.raises(UnsafeArchiveError, match="refusing"):
        with extracted(archive, near=out / "top", progress=False):
            pytest.fail("an unsafe archive was extracted")
    assert list(out.iterdir()) == []
    assert not (tmp_path / "evil.txt").exists() and not Path("/tmp/sddkd-absolute-evil.txt").exists()


def test_zip_with_dotdot_is_refused(tmp_path: Path) -> None:
    archive = tmp_path / "bad.zip"
    with zipfile.ZipFile(archive, "w") as handle:
        handle.writestr("../evil.txt", b"x")
    with pytest.raises(UnsafeArchiveError), extracted(archive, near=tmp_path / "out" / "x", progress=False):
        pass
    assert not (tmp_path / "evil.txt").exists()


def test_not_an_archive(tmp_path: Path) -> None:
    path = tmp_path / "plain.bin"
    path.write_bytes(b"just bytes")
    with pytest.raises(FetchError, match="neither a tar nor a zip"), extracted(path, near=tmp_path / "o" / "x"):
        pass
