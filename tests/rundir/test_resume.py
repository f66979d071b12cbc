"""The run directory's torch-free half of checkpoints as the truth (`sddkd.rundir.resume`): the order of an epoch's
writes, when a resume repairs `best.pt`, what it refuses; and that nothing in `sddkd.rundir` imports torch."""

from __future__ import annotations

import json
import pkgutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

import sddkd.rundir
from sddkd.config import config_hash, load_config
from sddkd.errors import DamagedCheckpointError, UserError
from sddkd.rundir.record import RunPaths
from sddkd.rundir.resume import (
    BEST_CHECKPOINT_KEYS,
    check_resume_checkpoint,
    checkpoint_fields,
    commit_epoch,
    rebuild_from_checkpoint,
)


def test_no_module_of_the_run_directory_imports_torch():
    modules = sorted(f"sddkd.rundir.{m.name}" for m in pkgutil.iter_modules(sddkd.rundir.__path__))
    assert "sddkd.rundir.resume" in modules
    code = f"import importlib, sys\nfor name in {modules!r}:\n    importlib.import_module(name)\n"
    code += "assert 'torch' not in sys.modules, 'torch imported'\n"
    subprocess.run([sys.executable, "-c", code], check=True)


def _state(epoch: int, best_epoch: int | None) -> dict[str, Any]:
    record = {"best_top1": 50.0, "best_epoch": best_epoch}
    return {"model": "weights", "optimizer": "momentum", "rng": "rng", "epoch": epoch, "global_step": 10 * epoch,
            "config": {}, "config_hash": "abc", "accuracy": 50.0, "record": record, "metrics": [{"epoch": epoch}],
            "partial": None}  # fmt: skip


@pytest.mark.parametrize("improved", [True, False])
def test_an_epoch_commits_last_then_best_then_the_record(tmp_path: Path, improved: bool):
    paths, writes = RunPaths(tmp_path), []
    save_last = lambda path, state: writes.append((path, sorted(state)))  # noqa: E731
    save_best = lambda path, state: writes.append((path, sorted(state)))  # noqa: E731
    record: dict[str, Any] = {"epochs_done": 3}
    commit_epoch(paths, _state(3, 3), record, improved=improved, save_last=save_last, save_best=save_best)
    writes.append((paths.result, json.loads(paths.result.read_text())["epochs_done"]))
    expected = [(paths.last, sorted(_state(3, 3)))]
    expected += [(paths.best, sorted(BEST_CHECKPOINT_KEYS))] if improved else []
    assert writes == [*expected, (paths.result, 3)]


@pytest.mark.parametrize(
    "best_epoch, on_disk, rewritten",
    [(3, 2, True), (3, None, True), (3, 3, False), (2, 1, False), (None, None, False)],
)
def test_a_resume_repairs_best_only_when_the_checkpoints_own_epoch_was_the_best(
    tmp_path: Path, best_epoch: int | None, on_disk: int | None, rewritten: bool
):
    paths, asked, saved = RunPaths(tmp_path), [], []

    def saved_epoch(path: Path) -> int | None:
        asked.append(path)
        return on_disk

    rebuild_from_checkpoint(paths, _state(3, best_epoch), saved_epoch=saved_epoch,
                            save_best=lambda path, state: saved.append((path, state["epoch"])))  # fmt: skip
    assert paths.metrics.read_text() == '{"epoch": 3}\n'  # rebuilt from the checkpoint's rows
    assert asked == ([paths.best] if best_epoch == 3 else [])  # best.pt is only read when it may be behind
    assert saved == ([(paths.best, 3)] if rewritten else [])


def test_a_resume_refuses_another_recipe_and_a_checkpoint_lacking_keys(tmp_path: Path):
    cfg = load_config("synthetic/kd/res20_res8")
    paths = RunPaths(tmp_path)
    fields = {"model": {}, "optimizer": {}, "rng": {}, **checkpoint_fields(cfg, 1, 4, {"best_top1": None}, [])}
    check_resume_checkpoint(cfg, paths, fields)
    assert fields["config_hash"] == config_hash(cfg)
    with pytest.raises(UserError, match="belongs to another recipe"):
        check_resume_checkpoint(cfg, paths, {**fields, "config_hash": "0" * 12})
    with pytest.raises(DamagedCheckpointError, match="lacks optimizer, rng.*--restart"):
        check_resume_checkpoint(cfg, paths, {k: v for k, v in fields.items() if k not in ("optimizer", "rng")})
