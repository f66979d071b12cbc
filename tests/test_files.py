"""Atomic writes: the old file or the new one, never half of one, no temporary left behind, the umask's permissions."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from sddkd.files import atomic_write, read_json, write_json_atomic, write_text_atomic


@pytest.mark.skipif(os.name != "posix", reason="POSIX permission bits")
@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_new_files_get_the_permissions_open_would_give(tmp_path: Path, umask: int, mode: int):
    previous = os.umask(umask)
    try:
        written = write_text_atomic(tmp_path / "result.json", "{}\n")
    finally:
        os.umask(previous)
    assert stat.S_IMODE(written.stat().st_mode) == mode  # mkstemp would give 0o600 whatever the umask


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path: Path):
    target = tmp_path / "last.pt"
    target.write_bytes(b"old")

    def write_half_then_fail(handle):
        handle.write(b"half of the new")
        raise KeyboardInterrupt  # e.g. Ctrl-C in the middle of torch.save

    with pytest.raises(KeyboardInterrupt):
        atomic_write(target, write_half_then_fail)
    assert target.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.pt"]


def test_json_for_people_and_compact_json_for_indexes(tmp_path: Path):
    payload = {"b": [1, 2], "a": "x"}
    readable = write_json_atomic(tmp_path / "deep" / "result.json", payload)  # creates missing folders
    assert readable.read_text() == '{\n  "a": "x",\n  "b": [\n    1,\n    2\n  ]\n}\n'
    compact = write_json_atomic(tmp_path / "index.json", payload, compact=True)
    assert compact.read_text() == '{"b":[1,2],"a":"x"}\n'
    assert read_json(readable) == read_json(compact) == payload
    (tmp_path / "broken.json").write_text("{")
    assert read_json(tmp_path / "broken.json") is None and read_json(tmp_path / "missing.json") is None
    assert json.loads(readable.read_text()) == payload


def test_run_records_and_reports_are_written_without_importing_torch():
    code = (
        "import sys; import sddkd.files, sddkd.rundir.record, sddkd.report.render, sddkd.suite.plan; "
        "assert 'torch' not in sys.modules, 'torch imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
