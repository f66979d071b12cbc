"""Fetching files safely: HTTP download with resume and checksums, and archive extraction that cannot escape.

Every function here either finishes its job or leaves nothing half-done behind: a download grows in a `.part` file
that is renamed only after its checksum matches (and survives an interrupted transfer, so the next attempt resumes
it with an HTTP Range request); an archive is extracted into a temporary folder next to its destination, member
by member after checking that no name or link leaves that folder.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import os
import shutil
import tarfile
import tempfile
import urllib.error
import urllib.request
import zipfile
import zlib
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from typing import IO

from tqdm import tqdm

from sddkd.errors import UserError

CHUNK_BYTES = 1 << 20
USER_AGENT = "sddkd-fetch/1"


class FetchError(UserError, RuntimeError):
    """A problem the user can fix (network, checksum, unsafe or unexpected file); the message is one sentence."""


class ChecksumError(FetchError):
    """A file's digest differs from the expected one."""


class UnsafeArchiveError(FetchError):
    """An archive member would be written outside the extraction folder (absolute path, `..`, escaping link)."""


# --- checksums ------------------------------------------------------------------------------------------------


def file_digest(path: Path, algorithm: str = "sha256") -> str:
    """Hex digest of a file, read in 1 MiB chunks."""
    digest = hashlib.new(algorithm)
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(CHUNK_BYTES), b""):
            digest.update(chunk)
    return digest.hexdigest()


def verify_digest(path: Path, expected: str, algorithm: str, *, what: str, fix: str) -> str:
    """Return the digest of `path`, raising ChecksumError naming both digests and `fix` when it is not `expected`."""
    actual = file_digest(path, algorithm)
    if actual != expected.lower():
        raise ChecksumError(f"{what} has {algorithm} {actual}, expected {expected.lower()}; {fix}")
    return actual


# --- download -------------------------------------------------------------------------------------------------


def download(
    url: str,
    dest: Path,
    *,
    md5: str | None = None,
    sha256: str | None = None,
    alternative: str = "",
    attempts: int = 3,
    progress: bool = True,
    timeout_s: float = 60.0,
) -> Path:
    """Download `url` to `dest`, resuming an interrupted transfer, and verify md5 and/or sha256 when given.

    The bytes go to `dest.part` and are renamed to `dest` only once complete and verified. A dropped connection
    is retried (`attempts` in all) from where it stopped; when every attempt fails the `.part` file stays, so the
    next call resumes it. A checksum mismatch deletes the file. `alternative` is the sentence that says what to do
    without network (e.g. "pass --from PATH with a copy of the file").
    """
    if dest.is_file() and (md5 or sha256):  # kept from an earlier run whose later step failed
        checks = [(a, e) for a, e in (("md5", md5), ("sha256", sha256)) if e]
        if all(file_digest(dest, a) == e.lower() for a, e in checks):
            return dest
        dest.unlink()
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    for attempt in range(1, attempts + 1):
        try:
            _fetch_into(url, part, progress=progress, timeout_s=timeout_s)
            break
        except _NoConnection as exc:
            raise FetchError(f"{exc}{'; without network, ' + alternative if alternative else ''}") from None
        except _Interrupted as exc:
            if attempt == attempts:
                raise FetchError(
                    f"the download of {url} was interrupted {attempts} times ({exc}); run the command again to "
                    f"resume it{_hint(alternative)}"
                ) from None
    try:
        for algorithm, expected in (("md5", md5), ("sha256", sha256)):
            if expected:
                verify_digest(
                    part, expected, algorithm, what=f"the file downloaded from {url}",
                    fix="the server or mirror sent a different file; check the URL and checksum (it was deleted)",
                )  # fmt: skip
    except ChecksumError:
        part.unlink(missing_ok=True)
        raise
    os.replace(part, dest)
    return dest


class _Interrupted(Exception):
    """The connection ended before the announced length arrived: worth a retry with Range."""


class _NoConnection(Exception):
    """No connection at all (refused, DNS, offline): a retry will not help."""

    def __init__(self, url: str, reason: object) -> None:
        super().__init__(f"cannot reach {url} ({reason})")


def _fetch_into(url: str, part: Path, *, progress: bool, timeout_s: float) -> None:
    """One HTTP attempt appending to `part`; raises _Interrupted on a short read, FetchError on a hard failure."""
    offset = part.stat().st_size if part.exists() else 0
    request = urllib.request.Request(url, headers={"User-Agent": USER_AGENT})
    if offset:
        request.add_header("Range", f"bytes={offset}-")
    try:
        response = urllib.request.urlopen(request, timeout=timeout_s)
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and offset:  # the .part is already complete or the file shrank: start over
            part.unlink()
            raise _Interrupted("the server refused the resume range") from None
        raise FetchError(f"{url} answered HTTP {exc.code} {exc.reason}; check the URL or use a mirror") from None
    except (urllib.error.URLError, OSError, http.client.HTTPException) as exc:
        reason = getattr(exc, "reason", exc)
        raise _NoConnection(url, reason) from None
    with response:
        if offset and response.status != 206:
            offset = 0  # the server ignored Range and sends the whole file: start over
        elif offset and not _range_starts_at(response, offset):
            part.unlink()
            raise _Interrupted("the server answered a different range than asked")
        total = _expected_total(response, offset)
        mode = "ab" if offset else "wb"
        with open(part, mode) as out, _progress_bar(url, total, offset, progress) as bar:
            received = _copy_stream(response, out, bar)
    if total is not None and offset + received < total:
        raise _Interrupted(f"{offset + received} of {total} bytes arrived")


def _range_starts_at(response: http.client.HTTPResponse, offset: int) -> bool:
    content_range = response.headers.get("Content-Range", "")  # "bytes START-END/TOTAL"
    return content_range.startswith(f"bytes {offset}-")


def _expected_total(response: http.client.HTTPResponse, offset: int) -> int | None:
    length = response.headers.get("Content-Length")
    return offset + int(length) if length is not None and length.isdigit() else None


def _copy_stream(response: IO[bytes], out: IO[bytes], bar: tqdm) -> int:
    received = 0
    while True:
        try:
            chunk = response.read(CHUNK_BYTES)
        except (OSError, http.client.HTTPException) as exc:  # reset mid-body: keep what arrived
            out.flush()
            raise _Interrupted(str(exc) or type(exc).__name__) from None
        if not chunk:
            return received
        out.write(chunk)
        received += len(chunk)
        bar.update(len(chunk))


def _progress_bar(url: str, total: int | None, offset: int, enabled: bool) -> tqdm:
    # disable=None hides the bar when stderr is not a terminal (logs, CI); False would force it.
    name = PurePosixPath(url.split("?", 1)[0]).name or url
    return tqdm(
        total=total, initial=offset, unit="B", unit_scale=True, unit_divisor=1024, desc=name,
        disable=None if enabled else True, leave=False,
    )  # fmt: skip


def _hint(alternative: str) -> str:
    return f", or {alternative}" if alternative else ""


def is_url(text: str) -> bool:
    return text.startswith(("http://", "https://", "ftp://", "file://"))


# --- extraction -----------------------------------------------------------------------------------------------


def check_member_name(name: str, archive: Path) -> PurePosixPath:
    """The member's path relative to the extraction root, or UnsafeArchiveError for absolute or `..` paths."""
    path = PurePosixPath(name.replace("\\", "/"))
    if path.is_absolute() or (path.parts and path.parts[0].endswith(":")) or ".." in path.parts:
        raise UnsafeArchiveError(f"{archive.name} holds the unsafe path {name!r} (absolute or with '..'); refusing")
    return path


def _check_tar_members(members: list[tarfile.TarInfo], archive: Path) -> None:
    links: set[PurePosixPath] = set()
    for member in members:
        path = check_member_name(member.name, archive)
        if any(parent in links for parent in path.parents):  # writing through a link could land anywhere
            raise UnsafeArchiveError(f"{archive.name} writes {member.name!r} through a link; refusing")
        if member.issym() or member.islnk():
            # A symlink's target is relative to its own folder; a hard link's to the archive root.
            base = path.parent if member.issym() else PurePosixPath()
            target = PurePosixPath(os.path.normpath(str(base / member.linkname)))
            if PurePosixPath(member.linkname).is_absolute() or target.parts[:1] == ("..",):
                raise UnsafeArchiveError(
                    f"{archive.name} holds a link {member.name!r} -> {member.linkname!r} that leaves the archive; "
                    "refusing"
                )
            links.add(path)
        elif not (member.isfile() or member.isdir()):
            raise UnsafeArchiveError(f"{archive.name} holds {member.name!r}, which is not a file or folder; refusing")


def _extract_all(archive: Path, root: Path, progress: bool) -> None:
    """Check every member, then extract; tar (any compression) or zip."""
    disable = None if progress else True
    if tarfile.is_tarfile(archive):
        with tarfile.open(archive) as handle:
            members = handle.getmembers()
            _check_tar_members(members, archive)
            # Python >= 3.11.4 has extraction filters: "data" repeats these checks against the real filesystem.
            options = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
            for member in tqdm(members, desc=f"extract {archive.name}", disable=disable):
                handle.extract(member, root, **options)  # type: ignore[arg-type]
    elif zipfile.is_zipfile(archive):
        with zipfile.ZipFile(archive) as handle:
            names = handle.namelist()
            for name in names:
                check_member_name(name, archive)
            for name in tqdm(names, desc=f"extract {archive.name}", disable=disable):
                handle.extract(name, root)
    else:
        raise FetchError(f"{archive} is neither a tar nor a zip archive; pass the archive itself")


@contextlib.contextmanager
def extracted(archive: Path, near: Path, *, progress: bool = True) -> Iterator[Path]:
    """Extract a tar (any compression) or zip archive into a temporary folder beside `near`; yield that folder.

    The caller moves what it needs into place (same filesystem, so `os.replace` is atomic); the folder is removed
    on exit, whether the caller succeeded or not. Every member is checked before anything is written.
    """
    near.parent.mkdir(parents=True, exist_ok=True)
    root = Path(tempfile.mkdtemp(prefix=f".{near.name}.extract-", dir=near.parent))
    try:
        try:
            _extract_all(archive, root, progress)
        except getattr(tarfile, "FilterError", ()) as exc:
            raise UnsafeArchiveError(f"{archive.name} holds an unsafe member ({exc}); refusing") from None
        except (tarfile.TarError, zipfile.BadZipFile, EOFError, zlib.error) as exc:
            raise FetchError(f"{archive} is a damaged archive ({exc}); download it again") from None
        yield root
    finally:
        shutil.rmtree(root, ignore_errors=True)


def replace_dir(source: Path, dest: Path) -> None:
    """Move folder `source` to `dest`, replacing an existing `dest` (e.g. an unfinished earlier attempt)."""
    if dest.is_symlink() or dest.is_file():
        dest.unlink()
    elif dest.exists():
        shutil.rmtree(dest)
    os.replace(source, dest)
