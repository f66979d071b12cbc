"""The MLKD bench: its reference loop computes the official values, and one tiny round of all three loops runs."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from sddkd.bench.mlkd import ReferenceRandAugment, reference_mlkd_terms, run_mlkd_bench
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


def test_the_mlkd_loop_times_the_registrys_two_view_step():
    """The mlkd loop is the engine's run of `mlkd_lskd` (`sdd_mlkd_lskd` at several scales): its loader serves two
    views and its step's loss has MLKD's terms; a single-view method is refused."""
    from sddkd.bench.core import bench_config
    from sddkd.bench.mlkd import MlkdLoop
    from sddkd.engine.placement import Placement

    placement = Placement(torch.device("cpu"), None, False)
    for scales, method in (("1", "mlkd_lskd"), ("1,2", "sdd_mlkd_lskd")):
        cfg = bench_config("res20_res8", scales, 4, "cpu", False, "off", None, 8, 4, method=method)
        loop = MlkdLoop(cfg, placement)
        assert loop.step.loss_fn.names == ("ce", "kd", "cc", "bc") and loop.train_loader.two_views
        assert loop.run(2) > 0
    with pytest.raises(ValueError, match="two-view"):
        MlkdLoop(bench_config("res20_res8", "1", 4, "cpu", False, "off", None, 8, 4), placement)


def test_python_m_sddkd_bench_has_an_mlkd_mode(monkeypatch, capsys):
    """`python -m sddkd.bench --mlkd` calls run_mlkd_bench with its flags (M defaults to 1 there) and prints its JSON;
    a flag MLKD mode does not time is one line and exit 2."""
    from typer.testing import CliRunner

    import sddkd.bench.mlkd
    from sddkd.bench.__main__ import app

    seen = {}

    def fake(*args):
        seen["args"] = args
        return {"mlkd": {"ms_per_step": 1.0}}

    monkeypatch.setattr(sddkd.bench.mlkd, "run_mlkd_bench", fake)
    runner = CliRunner()
    result = runner.invoke(app, ["--mlkd", "--device", "cpu", "--steps", "3", "--pair", "res20_res8", "--no-compile",
                                 "--no-baseline"])  # fmt: skip
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == {"mlkd": {"ms_per_step": 1.0}}
    device, steps, batch, pair, scales, compile, amp, warmup, rounds, workers, reference = seen["args"]
    assert (device, steps, batch, pair, scales, compile, reference) == ("cpu", 3, 64, "res20_res8", "1", False, False)
    refused = runner.invoke(app, ["--mlkd", "--cache"])
    assert refused.exit_code == 2 and "drop --cache" in refused.output


@pytest.mark.parametrize(
    "flags, named",
    [(["--no-eval"], "--no-eval"), (["--eval"], "--eval"), (["--cache"], "--cache"), (["--no-cache"], "--no-cache"),
     (["--cache-images", "64"], "--cache-images"), (["--cache-build-images", "4"], "--cache-build-images"),
     (["--channels-last"], "--channels-last"), (["--no-channels-last"], "--no-channels-last"),
     (["--no-eval", "--cache-images", "64"], "--no-eval, --cache-images")],
)  # fmt: skip
def test_mlkd_mode_refuses_every_flag_only_the_single_view_bench_reads(monkeypatch, flags, named):
    """Each option main() passes to run_bench but not to run_mlkd_bench is one sentence naming it and exit 2, before
    either bench starts; the same flags without --mlkd reach run_bench."""
    from typer.testing import CliRunner

    import sddkd.bench.__main__ as bench_main
    import sddkd.bench.mlkd

    started = []
    monkeypatch.setattr(sddkd.bench.mlkd, "run_mlkd_bench", lambda *a: started.append("mlkd") or {})
    monkeypatch.setattr(bench_main, "run_bench", lambda *a: started.append("single") or {})
    refused = CliRunner().invoke(bench_main.app, ["--mlkd", "--device", "cpu", *flags])
    assert refused.exit_code == 2 and started == []
    lines = refused.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: --mlkd") and f"ignore {named};" in lines[0]
    assert CliRunner().invoke(bench_main.app, ["--device", "cpu", *flags]).exit_code == 0 and started == ["single"]
