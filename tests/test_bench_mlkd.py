"""The MLKD bench: its reference loop computes the official values, and one tiny round of all three loops runs."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from sddkd.bench_mlkd import ReferenceRandAugment, reference_mlkd_terms, run_mlkd_bench
from sddkd.losses import mlkd_loss

GOLDEN = json.loads((Path(__file__).parent / "fixtures" / "mlkd_golden.json").read_text())["cases"]


@pytest.mark.parametrize("case", GOLDEN, ids=lambda c: f"B{c['B']}-{'z' if c['standardize'] else 'raw'}")
def test_the_reference_loops_mlkd_is_the_official_computation(case):
    views = [torch.tensor(case[k], dtype=torch.float64) for k in ("student_weak", "student_strong", "teacher_weak",
                                                                   "teacher_strong")]  # fmt: skip
    reference = reference_mlkd_terms(*views, case["temperature"], logit_stand=case["standardize"])
    ours = mlkd_loss(*views, case["temperature"], standardize=case["standardize"])
    for key in ("kd", "cc", "bc"):
        assert reference[key].item() == pytest.approx(case[key], rel=1e-9, abs=0)
        assert ours[key].item() == pytest.approx(reference[key].item(), rel=1e-9, abs=0)


def test_reference_rand_augment_returns_a_changed_image_of_the_same_size():
    random.seed(0)
    np.random.seed(0)
    image = Image.fromarray(np.random.randint(0, 256, (32, 32, 3), dtype=np.uint8))
    outputs = [ReferenceRandAugment()(image) for _ in range(8)]
    assert all(out.size == (32, 32) and out.mode == "RGB" for out in outputs)
    assert sum(not np.array_equal(np.asarray(out), np.asarray(image)) for out in outputs) >= 6  # Cutout nearly always


def test_one_tiny_round_of_the_three_loops_runs_on_cpu():
    report = run_mlkd_bench(device="cpu", steps=1, batch_size=8, pair="res20_res8", warmup=1, rounds=1, workers=0,
                            amp="off")  # fmt: skip
    for loop in ("mlkd", "single_view", "reference"):
        assert report[loop]["ms_per_step"] > 0 and report[loop]["images_per_s"] > 0
    assert report["settings"]["mlkd_M"] == "1" and report["settings"]["amp"] == "fp32"
    assert report["mlkd_speedup_vs_reference"] == pytest.approx(
        report["reference"]["ms_per_step"] / report["mlkd"]["ms_per_step"]
    )


def test_the_mlkd_loops_cuda_calls_run_with_a_mocked_cuda(monkeypatch):
    """The loop's CUDA-only lines (graph step marker, final synchronize) on a CPU with a mocked CUDA API."""
    from sddkd.bench import bench_config
    from sddkd.bench_mlkd import MlkdLoop
    from sddkd.engine.placement import Placement

    calls: list[str] = []
    monkeypatch.setattr(torch.compiler, "cudagraph_mark_step_begin", lambda: calls.append("mark"))
    monkeypatch.setattr(torch.cuda, "synchronize", lambda device=None: calls.append(f"sync {device}"))
    cfg = bench_config("res20_res8", "1", 4, "cpu", False, "off", None, 8, 4)
    loop = MlkdLoop(cfg, Placement(torch.device("cpu"), None, False))
    loop.placement = Placement(torch.device("cuda", 0), None, False)  # the data and models stay on the CPU
    assert loop.run(2) > 0
    assert calls == ["mark", "mark", "sync cuda:0"] and torch.isfinite(loop.loss_sum)
