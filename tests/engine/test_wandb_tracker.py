"""Weights & Biases (extra `wandb`) in its offline mode: a run logs its config and every epoch's metrics.

Skipped where wandb is not installed (it is in the `test` extra). Offline, W&B writes one protobuf log per run
(`run-<id>.wandb`); its records carry config keys and metric names as plain strings, which is what is checked here.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from sddkd.config import load_config
from sddkd.errors import UserError


def test_missing_wandb_fails_before_any_work(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    from sddkd.engine.loop import train

    monkeypatch.setitem(sys.modules, "wandb", None)  # `import wandb` raises ImportError
    cfg = load_config("synthetic/vanilla/resnet8", overrides=["engine.wandb=true", "engine.device=cpu"])
    with pytest.raises(UserError, match=r"pip install 'sddkd\[wandb\]'"):
        train(cfg, tmp_path)
    assert not any(tmp_path.iterdir())  # nothing written


def test_an_offline_run_logs_config_and_each_epoch(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    pytest.importorskip("wandb")
    from sddkd.engine.loop import train

    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path / "wandb-dir"))
    monkeypatch.setenv("WANDB_SILENT", "true")
    (tmp_path / "wandb-dir").mkdir()
    cfg = load_config("synthetic/vanilla/resnet8", overrides=[
        "data.synthetic.num_classes=4", "data.synthetic.train_per_class=4", "data.synthetic.test_per_class=2",
        "optim.epochs=2", "engine.progress=false", "engine.device=cpu", "engine.wandb=true",
        "engine.wandb_project=sddkd-test",
    ])  # fmt: skip
    record = train(cfg, tmp_path / "logs")
    assert record["status"] == "finished"
    import wandb

    wandb.teardown()  # finish() hands the last records to W&B's service process; teardown waits until it wrote them
    (log,) = (tmp_path / "wandb-dir").glob("wandb/offline-run-*/run-*.wandb")
    data = log.read_bytes()
    for text in ("sddkd-test", record["run_name"], "train_per_class", "loss/ce", "test/top1", "images_per_s"):
        assert text.encode() in data, f"{text!r} not logged"
    assert (tmp_path / "logs" / record["run_name"] / "result.json").is_file()
