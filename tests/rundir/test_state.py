"""The one reader of a run directory's state (`sddkd.rundir.state`): the scheduler, the suite's --status view and the
report ask it the same question and differ only in whether they know the time."""

from __future__ import annotations

import json
import socket
from datetime import datetime, timedelta, timezone
from pathlib import Path

from sddkd.rundir.lock import acquire_run_lock
from sddkd.rundir.state import read_run_state, run_state

NOW = datetime(2026, 1, 2, 12, 0, tzinfo=timezone.utc)


def _iso(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def _write(folder: Path, **record: object) -> Path:
    (folder / "result.json").write_text(json.dumps({"config_hash": "abc", **record}))
    return folder


def test_another_hosts_unlocked_record_counts_for_a_reader_not_for_the_scheduler(tmp_path: Path):
    fresh = _write(tmp_path, status="running", host="node-17", pid=4242, updated=_iso(NOW - timedelta(minutes=5)))
    assert read_run_state(fresh, "abc").state == "incomplete"  # the scheduler reruns it; a live copy's lock stops it
    assert read_run_state(fresh, "abc", NOW).state == "running"  # --status, like the report, trusts a fresh record
    stale = _write(tmp_path, status="running", host="node-17", pid=4242, updated=_iso(NOW - timedelta(hours=3)))
    assert read_run_state(stale, "abc", NOW).state == "incomplete"
    record = json.loads((tmp_path / "result.json").read_text())
    assert run_state(record, NOW, socket.gethostname(), owned=False) == read_run_state(stale, "abc", NOW).state


def test_a_lock_means_running_but_a_finished_run_stays_finished(tmp_path: Path):
    lock = acquire_run_lock(tmp_path)
    try:
        _write(tmp_path, status="failed", host=socket.gethostname())
        assert read_run_state(tmp_path, "abc", NOW).state == "running"
        assert "holder" in read_run_state(tmp_path, "abc").record
        _write(tmp_path, status="finished", host=socket.gethostname())
        assert read_run_state(tmp_path, "abc").state == "finished"
        assert run_state({"status": "finished"}, NOW, "any", owned=True) == "finished"
    finally:
        lock.release()


def test_interrupted_and_unknown_statuses_are_incomplete(tmp_path: Path):
    for status in ("interrupted", "paused"):
        assert run_state({"status": status}, NOW, "any") == "incomplete"
        assert read_run_state(_write(tmp_path, status=status), "abc").state == "incomplete"
