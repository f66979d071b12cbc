"""One run on several processes: torchrun with gloo on the CPU gives the single-process result, rank 0 alone writes
and prints, a run resumes under torchrun, and bad input fails every rank with one clear error.

Why the weights can be compared tightly: the model here (`bn_free_net`, tests/engine/ddp_worker.py) has no
BatchNorm, so a rank's forward depends on its own samples only. With the global batch split evenly, DDP's mean of
the ranks' mean gradients is the global mean gradient; the data layer gives the ranks' step-s shards whose union is
the single-process step-s batch, with the same crops and flips. What remains is float32 summation order, about 1e-7
relative per step, hence a tolerance of 1e-5 (abs) / 1e-4 (rel) after 8 SGD steps. With BatchNorm the two runs
differ by design: each GPU normalises with the statistics of its own shard (plain BatchNorm, as the reference
ImageNet recipes train), so such weights are not expected to agree.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from sddkd.engine.checkpoint import load_checkpoint
from sddkd.engine.distributed import DistContext

REPO = Path(__file__).resolve().parents[2]
WORKER = Path(__file__).resolve().parent / "ddp_worker.py"
PRESET = "synthetic/vanilla/resnet8"
# 4 classes x 16 = 64 training images, global batch 16: 4 steps per epoch, 8 images per rank and step.
# fp32: the tolerances below are float32 summation-order ones (bf16 would round each rank's half batch differently).
TINY = [
    "student=bn_free_net", "data.synthetic.num_classes=4", "data.synthetic.train_per_class=16",
    "data.synthetic.test_per_class=8", "optim.batch_size=16", "optim.epochs=2", "optim.lr_decay_epochs=[2]",
    "engine.progress=false", "engine.amp=off",
]  # fmt: skip
TIMING_KEYS = ("seconds", "images_per_s")


def torchrun(nproc: int, *args: str, timeout: float = 80) -> subprocess.CompletedProcess[str]:
    """The worker under torchrun with `nproc` processes; nproc=0: one plain process, no torchrun.

    The worker runs in processes of its own so that bn_free_net never enters this process's model registry."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    env["OMP_NUM_THREADS"] = "1"
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}"]
    command = command if nproc else [sys.executable]
    return subprocess.run(
        [*command, str(WORKER), *args], capture_output=True, text=True, env=env, timeout=timeout, cwd=REPO
    )


def sets(overrides: list[str]) -> list[str]:
    return [arg for override in overrides for arg in ("--set", override)]


def metric_rows(run_dir: Path) -> list[dict]:
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in row.items() if k not in TIMING_KEYS} for row in rows]


@pytest.mark.slow
def test_two_ranks_interrupted_and_resumed_match_one_process(tmp_path: Path):
    single = torchrun(0, "train", "--preset", PRESET, "--out", str(tmp_path / "single"), *sets(TINY))
    assert single.returncode == 0, single.stderr
    # The overrides shorten the preset, so the name carries a suffix of what changed and a partial-run mark.
    (single_dir,) = (tmp_path / "single").iterdir()
    run_name = single_dir.name
    assert run_name.startswith("synthetic-vanilla-bn_free_net-s0+") and "partial" in run_name

    cli = ["train", "--preset", PRESET, "--out", str(tmp_path / "ddp"), *sets(TINY)]
    first = torchrun(2, "--stop-after-epoch", "1", *cli)
    assert first.returncode != 0 and "stopped with status running" in first.stderr
    resumed = torchrun(2, *cli, "--resume")
    assert resumed.returncode == 0, resumed.stderr

    run_dir = tmp_path / "ddp" / run_name
    # Only rank 0 prints: one resume line, one line per epoch, one summary.
    assert resumed.stderr.count("Resuming") == 1 and resumed.stderr.count("epoch 2/2") == 1
    assert resumed.stdout.count("best top-1") == 1 and first.stderr.count("epoch 1/2") == 1
    # Only rank 0 writes: one metrics line per epoch and no stray files.
    files = sorted(str(p.relative_to(run_dir)) for p in run_dir.rglob("*") if p.is_file())
    expected = ["checkpoints/best.pt", "checkpoints/last.pt", "config.yaml", "lock", "metrics.jsonl", "result.json"]
    assert files == expected
    ddp_rows, single_rows = metric_rows(run_dir), metric_rows(tmp_path / "single" / run_name)
    assert [r["epoch"] for r in ddp_rows] == [1, 2] and [r["steps"] for r in ddp_rows] == [4, 4]

    ddp_weights = load_checkpoint(run_dir / "checkpoints" / "last.pt")["model"]
    single_weights = load_checkpoint(tmp_path / "single" / run_name / "checkpoints" / "last.pt")["model"]
    assert ddp_weights.keys() == single_weights.keys()
    for key in single_weights:
        torch.testing.assert_close(ddp_weights[key], single_weights[key], atol=1e-5, rtol=1e-4, msg=key)
    one_image = 100.0 / 32  # a near-tie flipping one test image moves top-1 by this much
    for ddp_row, single_row in zip(ddp_rows, single_rows, strict=True):
        assert ddp_row["losses"]["ce"] == pytest.approx(single_row["losses"]["ce"], rel=1e-4)
        for key in ("train_top1", "test_top1", "test_top5"):
            assert ddp_row[key] == pytest.approx(single_row[key], abs=one_image), key
    record = json.loads((run_dir / "result.json").read_text())
    assert record["status"] == "finished" and record["epochs_done"] == 2


@pytest.mark.slow
def test_more_ranks_than_training_images_is_one_clear_error(tmp_path: Path):
    tiny = ["data.synthetic.num_classes=2", "data.synthetic.train_per_class=1", "optim.batch_size=3"]
    result = torchrun(3, "train", "--preset", PRESET, "--out", str(tmp_path), *sets([*TINY, *tiny]), timeout=60)
    assert result.returncode != 0
    assert result.stderr.count("error:") == 1, result.stderr
    assert "2 training images, fewer than the 3 processes" in result.stderr and "use fewer processes" in result.stderr
    # The refusal is on record (report and `suite --status` show it), and nothing else was written.
    (run_dir,) = tmp_path.iterdir()
    assert sorted(p.name for p in run_dir.iterdir() if p.name != "lock") == ["config.yaml", "result.json"]
    record = json.loads((run_dir / "result.json").read_text())
    assert record["status"] == "failed" and "fewer than the 3 processes" in record["error"]


def test_rank_seeds_differ_per_rank_and_repeat_per_epoch():
    def draws(rank: int, epoch: int) -> torch.Tensor:
        DistContext(rank=rank, world_size=2).seed_epoch(seed=0, epoch=epoch)
        return torch.rand(4)

    assert torch.equal(draws(0, 3), draws(0, 3))
    assert not torch.equal(draws(0, 3), draws(1, 3)) and not torch.equal(draws(0, 3), draws(0, 4))


@pytest.mark.slow
def test_ctkd_temperature_under_two_ranks_matches_one_process(tmp_path: Path):
    """CTKD's theta lives in the module DDP wraps: its gradient is averaged over the ranks like the weights', so
    two ranks learn the single-process temperature (a rank-local theta would drift apart from it). The teacher is
    trained long enough to be confident: against a near-uniform teacher dKD/dT is about 0 and theta only decays."""
    teacher_run = torchrun(0, "train", "--preset", PRESET, "--out", str(tmp_path / "teacher"),
                           *sets([*TINY, "optim.epochs=12", "optim.lr=0.2", "optim.lr_decay_epochs=[12]"]))  # fmt: skip
    assert teacher_run.returncode == 0, teacher_run.stderr
    (teacher_dir,) = (tmp_path / "teacher").iterdir()
    recipe = {
        "data": {"name": "synthetic", "synthetic": {"num_classes": 4, "train_per_class": 16, "test_per_class": 8}},
        "student": "bn_free_net",
        # full reversal from the first step, so theta moves well beyond float32 summation noise
        "method": {"name": "ctkd", "ce_weight": 1.0, "t_range": 2.0, "reversal_max": -1.0, "reversal_min": -1.0},
        "teacher": {"arch": "bn_free_net", "checkpoint": str(teacher_dir / "checkpoints" / "best.pt"), "cache": "off"},
        "optim": {"lr": 0.05, "batch_size": 16, "epochs": 2, "lr_decay_epochs": [2]},
        "engine": {"progress": False, "amp": "off"}, "name": "ctkd",
    }  # fmt: skip
    preset = tmp_path / "ctkd.yaml"
    preset.write_text(json.dumps(recipe))  # JSON is YAML
    for nproc, out in ((0, "single"), (2, "ddp")):
        result = torchrun(nproc, "train", "--preset", str(preset), "--out", str(tmp_path / out))
        assert result.returncode == 0, result.stderr
    single = load_checkpoint(tmp_path / "single" / "ctkd" / "checkpoints" / "last.pt")
    ddp = load_checkpoint(tmp_path / "ddp" / "ctkd" / "checkpoints" / "last.pt")
    theta = single["method_parameters"]["theta"]
    assert abs(theta.item() - 1.0) > 1e-2  # it moved (a rank-local theta ends about 2.5e-3 away from this one)
    torch.testing.assert_close(ddp["method_parameters"]["theta"], theta, atol=1e-6, rtol=1e-5)
    ddp_rows, single_rows = metric_rows(tmp_path / "ddp" / "ctkd"), metric_rows(tmp_path / "single" / "ctkd")
    for ddp_row, single_row in zip(ddp_rows, single_rows, strict=True):
        temperature = single_row["method_metrics"]["temperature"]
        assert ddp_row["method_metrics"]["temperature"] == pytest.approx(temperature, rel=1e-5)


@pytest.mark.slow
def test_mlkd_trains_under_two_ranks(tmp_path: Path):
    """MLKD's two views go through one call of the DDP-wrapped student (the backbone used twice in one graph), so
    DDP's gradient hooks fire once per parameter and two ranks train. The ranks' results are not the single
    process's by design: MLKD's median fractions and its batch term are computed over each rank's own batch."""
    teacher_run = torchrun(0, "train", "--preset", PRESET, "--out", str(tmp_path / "teacher"),
                           *sets([*TINY, "optim.epochs=1"]))  # fmt: skip
    assert teacher_run.returncode == 0, teacher_run.stderr
    (teacher_dir,) = (tmp_path / "teacher").iterdir()
    recipe = {
        "data": {"name": "synthetic", "synthetic": {"num_classes": 4, "train_per_class": 16, "test_per_class": 8}},
        "student": "bn_free_net", "method": {"name": "sdd_mlkd_lskd", "ce_weight": 0.1, "temperature": 2.0,
                                             "kd_weight": 9.0, "scales": [1, 2]},
        "teacher": {"arch": "bn_free_net", "checkpoint": str(teacher_dir / "checkpoints" / "best.pt"), "cache": "off"},
        "optim": {"lr": 0.05, "batch_size": 16, "epochs": 1, "lr_decay_epochs": [1]},
        "engine": {"progress": False, "amp": "off"}, "name": "mlkd",
    }  # fmt: skip
    preset = tmp_path / "mlkd.yaml"
    preset.write_text(json.dumps(recipe))  # JSON is YAML
    result = torchrun(2, "train", "--preset", str(preset), "--out", str(tmp_path / "ddp"))
    assert result.returncode == 0, result.stderr
    (row,) = metric_rows(tmp_path / "ddp" / "mlkd")
    assert row["steps"] == 4 and set(row["losses"]) == {"ce", "kd", "cc", "bc"}  # 64 images, 8 per rank and step
    assert all(value > 0 for value in row["losses"].values())
