"""The engine end to end on CPU with generated data: teacher, student, resume, failure policies, run directories."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch

from sddkd.config import EngineConfig, RunConfig, load_config
from sddkd.engine.checkpoint import load_checkpoint
from sddkd.engine.distill import distill_weight
from sddkd.engine.loop import lr_at, train
from sddkd.engine.placement import native_bf16, resolve_placement
from sddkd.errors import UserError

TINY_DATA = [
    "data.synthetic.num_classes=5",
    "data.synthetic.train_per_class=24",
    "data.synthetic.test_per_class=8",
    "optim.batch_size=32",
    "engine.progress=false",
]


def tiny(preset: str, *extra: str, scales: str | None = None) -> RunConfig:
    return load_config(preset, scales=scales, overrides=[*TINY_DATA, *extra])


def metric_rows(run_dir: Path) -> list[dict]:
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    for row in rows:  # timing differs between processes; everything else must not
        for key in ("seconds", "images_per_s"):
            row.pop(key)
    return rows


@pytest.fixture(scope="module")
def smoke_teacher(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small resnet20 teacher trained on the smoke suite's synthetic data (10 classes)."""
    out = tmp_path_factory.mktemp("teacher")
    cfg = load_config(
        "synthetic/vanilla/resnet20", overrides=["optim.epochs=6", "engine.progress=false", "engine.amp=off"]
    )
    record = train(cfg, out)
    assert record["status"] == "finished"
    return out / record["run_name"] / "checkpoints" / "best.pt"


@pytest.mark.slow
def test_teacher_then_sdd_kd_lskd_student_end_to_end(smoke_teacher: Path, tmp_path: Path):
    teacher_state = load_checkpoint(smoke_teacher)
    assert teacher_state["accuracy"] > 30.0, "the teacher learns the synthetic classes (chance is 10%)"
    cfg = load_config(
        "synthetic/sdd_kd_lskd/res20_res8",
        scales="1,2,4",
        overrides=[f"teacher.checkpoint={smoke_teacher}", "optim.epochs=4", "engine.progress=false"],
    )
    record = train(cfg, tmp_path)
    # 4 of the preset's 8 epochs: the name says so, and the record marks the run partial.
    run_dir = tmp_path / "synthetic-sdd_kd_lskd-resnet20_resnet8-M1-2-4-s0-partial-e4of8"
    assert record["run_name"] == run_dir.name and record["status"] == "finished" and record["partial"]
    on_disk = json.loads((run_dir / "result.json").read_text())
    assert on_disk["status"] == "finished" and on_disk["epochs_done"] == 4 and on_disk["scales"] == [1, 2, 4]
    assert on_disk["best_top1"] > 25.0, "clearly above the 10% chance level"
    assert on_disk["teacher_checkpoint"]["test_top1"] == pytest.approx(teacher_state["accuracy"], abs=1e-6)
    assert len(on_disk["teacher_checkpoint"]["sha256"]) == 64
    precision = "bf16 autocast" if native_bf16(torch.device("cpu")) else "fp32"  # what amp=auto picks here
    assert on_disk["execution"] == {"device": "cpu", "precision": precision, "channels_last": True, "compile": "eager",
                                    "world_size": 1}  # fmt: skip
    rows = metric_rows(run_dir)
    assert [r["epoch"] for r in rows] == [1, 2, 3, 4]
    assert set(rows[0]["losses"]) == {"ce", "kd"} and all(r["nonfinite_steps"] == 0 for r in rows)
    assert (run_dir / "config.yaml").read_text().startswith("# Resolved config")
    best = load_checkpoint(run_dir / "checkpoints" / "best.pt")
    assert best["epoch"] == on_disk["best_epoch"] and RunConfig.model_validate(best["config"]) == cfg


def test_resume_equals_an_uninterrupted_run(tmp_path: Path):
    cfg = tiny("synthetic/vanilla/resnet8", "optim.epochs=3", "optim.lr_decay_epochs=[2]")
    straight = train(cfg, tmp_path / "straight")
    interrupted = train(cfg, tmp_path / "resumed", stop_after_epoch=2)
    assert interrupted["status"] == "running" and interrupted["epochs_done"] == 2
    with pytest.raises(UserError, match="pass --resume"):
        train(cfg, tmp_path / "resumed")
    resumed = train(cfg, tmp_path / "resumed", resume=True)
    assert resumed["status"] == "finished"
    name = straight["run_name"]
    a = load_checkpoint(tmp_path / "straight" / name / "checkpoints" / "last.pt")["model"]
    b = load_checkpoint(tmp_path / "resumed" / name / "checkpoints" / "last.pt")["model"]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert metric_rows(tmp_path / "straight" / name) == metric_rows(tmp_path / "resumed" / name)
    for key in ("best_top1", "best_epoch", "last_top1", "last_top5"):
        assert straight[key] == resumed[key]


def test_a_finished_run_is_not_trained_again_and_other_recipes_are_not_overwritten(tmp_path: Path):
    cfg = tiny("synthetic/vanilla/resnet8", "optim.max_steps=2")
    first = train(cfg, tmp_path)
    assert first["status"] == "finished" and first["epochs_done"] == 1
    again = train(cfg, tmp_path)
    assert again["updated"] == first["updated"]
    other = train(tiny("synthetic/vanilla/resnet8", "optim.max_steps=2", "optim.lr=0.01"), tmp_path)
    assert other["run_name"] != first["run_name"]  # another recipe: a directory of its own (sweeps coexist)
    with pytest.raises(UserError, match="holds a different run"):  # forced into the first one's directory
        train(
            tiny("synthetic/vanilla/resnet8", "optim.max_steps=2", "optim.lr=0.01", f"name={first['run_name']}"),
            tmp_path,
        )


def test_nonfinite_loss_policy(tmp_path: Path):
    exploding = ("optim.lr=1e30", "optim.max_steps=4", "optim.momentum=0")
    with pytest.raises(UserError, match="non-finite in epoch 1"):
        train(tiny("synthetic/vanilla/resnet8", *exploding), tmp_path / "fail")
    record = json.loads(next((tmp_path / "fail").glob("*/result.json")).read_text())
    assert record["status"] == "failed" and "non-finite" in record["error"]
    # skip drops such steps, up to engine.nonfinite_skip_limit of an epoch's steps (here: all of them)
    permissive = ("engine.nonfinite=skip", "engine.nonfinite_skip_limit=1.0")
    skipped = train(tiny("synthetic/vanilla/resnet8", *exploding, *permissive), tmp_path / "skip")
    rows = metric_rows(tmp_path / "skip" / skipped["run_name"])
    assert rows[0]["nonfinite_steps"] >= 1
    with pytest.raises(UserError, match="were skipped, more than engine.nonfinite_skip_limit=0.1"):
        train(tiny("synthetic/vanilla/resnet8", *exploding, "engine.nonfinite=skip"), tmp_path / "limited")


def test_missing_teacher_names_how_to_get_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("SDDKD_HOME", str(tmp_path / "home"))
    cfg = tiny("synthetic/sdd_kd_lskd/res20_res8", "optim.max_steps=1")
    with pytest.raises(UserError) as info:
        train(cfg, tmp_path / "runs")
    message = str(info.value)
    assert "resnet20" in message and "sddkd" in message
    # the record exists before anything can fail, so report and suite --status show why this run failed
    (record_path,) = (tmp_path / "runs").glob("*/result.json")
    record = json.loads(record_path.read_text())
    assert record["status"] == "failed" and record["error"] == message and record["epochs_done"] == 0
    assert not list((tmp_path / "runs").glob("*/checkpoints/*.pt"))


def test_teacher_of_the_wrong_architecture_is_refused(smoke_teacher: Path, tmp_path: Path):
    cfg = load_config(
        "synthetic/sdd_kd_lskd/res20_res8",
        overrides=["teacher.arch=resnet32", f"teacher.checkpoint={smoke_teacher}", "engine.progress=false"],
    )
    with pytest.raises(UserError, match="resnet32"):
        train(cfg, tmp_path)


def test_teacher_logits_do_not_depend_on_the_batch(smoke_teacher: Path):
    from sddkd.teachers.store import load_teacher

    teacher, _ = load_teacher(smoke_teacher, "resnet20", "cifar100", 10)
    images = torch.randn(12, 3, 32, 32)
    with torch.inference_mode():
        alone = teacher(images[:1])
        in_batch = teacher(images)[:1]
        shuffled = teacher(images.flip(0))[-1:]
    torch.testing.assert_close(alone, in_batch, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(alone, shuffled, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("native", [True, False])
def test_auto_precision_is_bf16_only_where_the_hardware_computes_it(native: bool, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: native)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False)
    auto = resolve_placement(EngineConfig(device="cpu"))
    assert auto.amp_dtype == (torch.bfloat16 if native else None)
    assert auto.describe() == {
        "device": "cpu",
        "precision": "bf16 autocast" if native else "fp32",
        "channels_last": True,
    }
    assert resolve_placement(EngineConfig(device="cpu", amp="bf16")).amp_dtype == torch.bfloat16
    assert resolve_placement(EngineConfig(device="cpu", amp="off")).amp_dtype is None


def test_gpus_that_only_emulate_bf16_stay_in_fp32(monkeypatch: pytest.MonkeyPatch):
    asked: list[bool] = []
    monkeypatch.setattr(
        torch.cuda,
        "is_bf16_supported",
        lambda including_emulation=True: asked.append(including_emulation) or including_emulation,
    )
    assert native_bf16(torch.device("cuda")) is False and asked == [False]  # a V100 emulates bf16: not native


def test_schedule_helpers():
    optim = load_config("res32x4_res8x4").optim
    assert [lr_at(optim, e) for e in (1, 150, 151, 181, 211)] == pytest.approx([0.05, 0.05, 0.005, 5e-4, 5e-5])
    assert [distill_weight(20, e) for e in (1, 10, 20, 40)] == [0.05, 0.5, 1.0, 1.0]
    assert distill_weight(0, 1) == 1.0


def test_tensorboard_event_files_mirror_the_metrics(tmp_path: Path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    record = train(tiny("synthetic/vanilla/resnet8", "optim.epochs=2", "engine.tensorboard=true"), tmp_path)
    events = EventAccumulator(str(tmp_path / record["run_name"] / "tensorboard"))
    events.Reload()
    assert {"loss/ce", "train/top1", "test/top1", "test/top5", "lr"} <= set(events.Tags()["scalars"])
    assert [e.step for e in events.Scalars("test/top1")] == [1, 2]
    assert events.Scalars("test/top1")[-1].value == pytest.approx(record["last_top1"], rel=1e-6)


def test_tensorboard_without_the_package_fails_before_any_work(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # as if the extra were not installed
    with pytest.raises(UserError, match=r"pip install 'sddkd\[tensorboard\]'"):
        train(tiny("synthetic/vanilla/resnet8", "engine.tensorboard=true"), tmp_path)
    assert not any(tmp_path.iterdir())
