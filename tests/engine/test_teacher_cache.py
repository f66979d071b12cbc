"""The exact teacher-logit cache: a cached run equals a live one; the key; damage, resume, disk space, refusals."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from rich.console import Console
from typer.testing import CliRunner

from sddkd.cli import app
from sddkd.config import RunConfig, config_hash, load_config
from sddkd.engine.checkpoint import load_checkpoint
from sddkd.engine.distill import teacher_regions
from sddkd.engine.distributed import DistContext
from sddkd.engine.loop import train
from sddkd.engine.placement import build_data, resolve_placement
from sddkd.engine.run_teacher import load_run_teacher
from sddkd.engine.teacher_cache import CacheDamagedError, cache_name, cache_root, open_cache
from sddkd.engine.teacher_cache_build import build_cache
from sddkd.engine.teacher_cache_serve import (
    CachedTeacherLoader,
    ServedCache,
    build_for_config,
    ensure_cache,
    no_exact_cache_reason,
    run_cache_fields,
    serve_teacher_cache,
    views_of,
)  # fmt: skip
from sddkd.errors import UserError
from sddkd.models import create_model

TINY = [
    "data.synthetic.num_classes=5", "data.synthetic.train_per_class=1", "data.synthetic.test_per_class=2",
    "optim.batch_size=2", "optim.epochs=2", "engine.progress=false", "teacher.arch=resnet8", "engine.device=cpu",
]  # fmt: skip
QUIET = Console(quiet=True)


@pytest.fixture(autouse=True)
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("SDDKD_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


def teacher_file(path: Path, seed: int = 1) -> Path:
    torch.manual_seed(seed)
    torch.save({"model": create_model("resnet8", num_classes=5).state_dict()}, path)
    return path


def tiny(teacher: Path, *extra: str, scales: str = "1,2,4") -> RunConfig:
    overrides = [*TINY, f"teacher.checkpoint={teacher}", *extra]
    return load_config("synthetic/sdd_kd_lskd/res20_res8", scales=scales, overrides=overrides)


def run_parts(cfg: RunConfig):
    placement = resolve_placement(cfg.engine)
    spec, loader, _ = build_data(cfg.data, cfg.optim.batch_size, placement.device, cfg.seed, DistContext())
    teacher, info = load_run_teacher(cfg, spec, placement)
    return placement, loader, teacher, info


def cached_vs_live(cfg: RunConfig, epochs: tuple[int, ...] = (1, 2)) -> tuple[float, bool, torch.dtype]:
    """(max |cached - live| over every step's teacher region logits, bitwise equal?, dtype) for `cfg`."""
    placement, loader, teacher, info = run_parts(cfg)
    served = serve_teacher_cache(cfg, loader, teacher, info, placement, DistContext(), QUIET)
    assert isinstance(served, CachedTeacherLoader)
    worst, bitwise, dtype = 0.0, True, torch.float32
    for epoch in epochs:
        served.set_epoch(epoch)
        for images, _, cached in served:
            with placement.autocast():
                live = teacher_regions(teacher, placement.images(images), cfg.scales)
            assert cached.dtype == live.dtype and cached.shape == live.shape
            dtype = cached.dtype
            worst = max(worst, (cached.float() - live.float()).abs().max().item())
            bitwise = bitwise and torch.equal(cached, live)
    return worst, bitwise, dtype


def test_a_cached_sdd_kd_lskd_run_equals_the_live_run(tmp_path: Path):
    teacher = teacher_file(tmp_path / "t.pth")
    records, weights, rows = {}, {}, {}
    for mode in ("off", "on"):
        cfg = tiny(teacher, f"teacher.cache={mode}", "engine.amp=off")
        records[mode] = train(cfg, tmp_path / mode)
        run_dir = tmp_path / mode / records[mode]["run_name"]
        weights[mode] = load_checkpoint(run_dir / "checkpoints" / "last.pt")["model"]
        lines = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
        rows[mode] = [{k: v for k, v in r.items() if k not in ("seconds", "images_per_s")} for r in lines]
    assert len(list(cache_root().iterdir())) == 2, "one cache folder and its lock file"
    # fp32 on CPU: each step's teacher logits are equal up to float rounding (measured: bit for bit here).
    worst, _, dtype = cached_vs_live(tiny(teacher, "teacher.cache=on", "engine.amp=off"))
    assert dtype == torch.float32 and worst <= 1e-5
    for name, value in weights["on"].items():
        torch.testing.assert_close(value, weights["off"][name], rtol=1e-5, atol=1e-5, msg=name)
    for on, off in zip(rows["on"], rows["off"], strict=True):
        assert on.keys() == off.keys() and on["epoch"] == off["epoch"]
        assert on["losses"] == pytest.approx(off["losses"], rel=1e-5, abs=1e-6)
        assert on["train_top1"] == pytest.approx(off["train_top1"]) and on["test_top1"] == off["test_top1"]
    assert records["on"]["best_top1"] == records["off"]["best_top1"]
    assert config_hash(tiny(teacher, "teacher.cache=on")) == config_hash(tiny(teacher, "teacher.cache=off"))


def test_bf16_logits_are_cached_in_bf16(tmp_path: Path):
    cfg = tiny(teacher_file(tmp_path / "t.pth"), "engine.amp=bf16", "teacher.cache=on")
    worst, _, dtype = cached_vs_live(cfg, epochs=(1,))
    assert dtype == torch.bfloat16
    assert worst <= 0.05, "within bf16 rounding of logits of order 1"


def test_the_key_changes_with_teacher_data_grid_and_precision(tmp_path: Path):
    base = tiny(teacher_file(tmp_path / "t.pth"), "engine.amp=off")

    def name(cfg: RunConfig) -> str:
        placement, loader, teacher, info = run_parts(cfg)
        return cache_name(run_cache_fields(cfg, loader, teacher, info, placement))

    original = name(base)
    other_teacher = teacher_file(tmp_path / "t2.pth", seed=2)
    changed = {
        "teacher file": tiny(other_teacher, "engine.amp=off"),
        "data": tiny(tmp_path / "t.pth", "engine.amp=off", "data.synthetic.seed=3"),
        "grid": tiny(tmp_path / "t.pth", "engine.amp=off", scales="1,2"),
        "precision": tiny(tmp_path / "t.pth", "engine.amp=bf16"),
    }
    names = {what: name(cfg) for what, cfg in changed.items()}
    assert original not in names.values() and len(set(names.values())) == len(names), names
    # Coarser scales come from the finest grid, so every M with the same finest grid shares one cache.
    assert name(tiny(tmp_path / "t.pth", "engine.amp=off", scales="1,4")) == original
    # Overwriting the teacher file in place also changes the key (its sha256 does).
    shutil.copy(other_teacher, tmp_path / "t.pth")
    assert name(base) == names["teacher file"]


def test_a_changed_teacher_builds_a_new_cache(tmp_path: Path):
    teacher = teacher_file(tmp_path / "t.pth")
    first = build_for_config(tiny(teacher), QUIET, progress=False)
    teacher_file(teacher, seed=5)  # the same path, other weights
    second = build_for_config(tiny(teacher), QUIET, progress=False)
    assert first.directory != second.directory and first.directory.exists() and second.directory.exists()
    assert not torch.equal(first.logits, second.logits)


def test_a_truncated_or_flipped_cache_is_refused_or_rebuilt(tmp_path: Path):
    cfg = tiny(teacher_file(tmp_path / "t.pth"))
    opened = build_for_config(cfg, QUIET, progress=False)
    reference = opened.logits.clone()
    fields, data = opened.manifest["fields"], opened.directory / "logits.bin"
    del opened
    with open(data, "r+b") as handle:
        handle.truncate(data.stat().st_size - 7)
    with pytest.raises(CacheDamagedError, match="truncated"):
        open_cache(data.parent, fields)
    placement, loader, teacher, _ = run_parts(cfg)
    with pytest.raises(CacheDamagedError, match=r"damaged.*sddkd cache-teacher") as refused:
        ensure_cache(fields, loader, teacher, placement, QUIET, build=True, rebuild_damaged=False)
    assert "\n" not in str(refused.value)
    rebuilt = ensure_cache(fields, loader, teacher, placement, QUIET, build=True, rebuild_damaged=True)
    assert rebuilt is not None and torch.equal(rebuilt.logits, reference)
    del rebuilt
    raw = bytearray(data.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    data.write_bytes(bytes(raw))
    with pytest.raises(CacheDamagedError, match="chunk 0 .* sha256"):
        open_cache(data.parent, fields)


def test_an_interrupted_build_resumes_to_the_same_bytes(tmp_path: Path):
    cfg = tiny(teacher_file(tmp_path / "t.pth"))
    placement, loader, teacher, info = run_parts(cfg)
    fields = run_cache_fields(cfg, loader, teacher, info, placement)
    whole = build_cache(tmp_path / "whole", fields, teacher, loader.images, placement, chunk_bytes=1)
    resumed = tmp_path / "resumed"
    build_cache(resumed, fields, teacher, loader.images, placement, chunk_bytes=1, stop_after_chunks=3)
    partial = resumed.with_name("resumed.partial")
    assert not resumed.exists() and len(json.loads((partial / "manifest.json").read_text())["chunks"]) == 3
    seen: list[int] = []
    build_cache(resumed, fields, teacher, loader.images, placement, chunk_bytes=1, progress=lambda d, t: seen.append(d))
    assert seen[0] == 3 and seen[-1] == loader.dataset_size, "the three committed images were not recomputed"
    assert (resumed / "logits.bin").read_bytes() == (whole / "logits.bin").read_bytes()
    assert not partial.exists()


def test_too_little_disk_is_one_line_before_any_work(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    cfg = tiny(teacher_file(tmp_path / "t.pth"))
    monkeypatch.setattr(shutil, "disk_usage", lambda path: shutil._ntuple_diskusage(10**9, 10**9, 1000))  # type: ignore[attr-defined]
    with pytest.raises(UserError, match=r"needs 0\.0 GB in .* but 0\.0 GB are free"):
        build_for_config(cfg, QUIET, progress=False)
    assert not any(p.name.endswith("logits.bin") for p in cache_root().rglob("*"))
    # Under `auto` a cache is optional: too little disk is one line and the teacher runs live.
    long = cfg.model_copy(update={"optim": cfg.optim.model_copy(update={"epochs": 162})})
    placement, loader, teacher, info = run_parts(long)
    assert serve_teacher_cache(long, loader, teacher, info, placement, DistContext(), QUIET) is loader
    on = long.model_copy(update={"teacher": long.teacher.model_copy(update={"cache": "on"})})  # type: ignore[union-attr]
    with pytest.raises(UserError, match="are free"):
        serve_teacher_cache(on, loader, teacher, info, placement, DistContext(), QUIET)


def test_continuous_augmentation_has_no_exact_cache(tmp_path: Path):
    teacher = teacher_file(tmp_path / "t.pth")
    big = tiny(teacher, "data.synthetic.image_size=224", "data.synthetic.train_per_class=1")
    _, loader, _ = build_data(big.data, 8, torch.device("cpu"), 0, DistContext())
    assert "2,178 views per image" in (no_exact_cache_reason(big, loader) or "")
    assert "continuous" in (no_exact_cache_reason(big, object()) or "")
    with pytest.raises(UserError, match="2,178 views"):
        build_for_config(big, QUIET)


def test_auto_builds_only_when_the_run_pays_for_it_and_uses_an_existing_cache(tmp_path: Path):
    cfg = tiny(teacher_file(tmp_path / "t.pth"))  # teacher.cache defaults to auto; 2 epochs < 162 views
    assert cfg.teacher is not None and cfg.teacher.cache == "auto"
    placement, loader, teacher, info = run_parts(cfg)
    assert serve_teacher_cache(cfg, loader, teacher, info, placement, DistContext(), QUIET) is loader
    assert not cache_root().exists()
    long = cfg.model_copy(update={"optim": cfg.optim.model_copy(update={"epochs": 162})})
    served = serve_teacher_cache(long, loader, teacher, info, placement, DistContext(), QUIET)
    assert isinstance(served, CachedTeacherLoader) and served.served.residency == "memory-mapped"
    assert isinstance(serve_teacher_cache(cfg, loader, teacher, info, placement, DistContext(), QUIET),
                      CachedTeacherLoader), "the short run now uses the cache that exists"  # fmt: skip


def test_cache_teacher_command(tmp_path: Path):
    teacher = teacher_file(tmp_path / "t.pth")
    args = ["cache-teacher", "synthetic/sdd_kd_lskd/res20_res8", "--M", "1,2,4", "--teacher", str(teacher),
            *[a for o in TINY for a in ("--set", o)]]  # fmt: skip
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "teacher cache ready" in result.output and "verified" in result.output
    bad = CliRunner().invoke(app, [*args, "--set", "data.synthetic.image_size=224"])
    assert bad.exit_code == 2 and "views per image" in bad.output


def test_views_follow_the_loader_geometry(tmp_path: Path):
    cfg = tiny(teacher_file(tmp_path / "t.pth"))
    _, loader, _, _ = run_parts(cfg)
    views = views_of(loader)
    assert (views.n_top, views.n_left, views.count) == (9, 9, 162)
    index, top, left, flip = loader.epoch_plan()
    number = views.index(top, left, flip)
    assert number.min() >= 0 and number.max() < 162


def test_served_regions_match_the_head_on_a_hand_made_grid():
    # A 2x2 grid of distinct values: the M=(1,2) regions are its mean and the cells themselves.
    store = torch.arange(2 * 3 * 1 * 4, dtype=torch.float32).view(2, 3, 1, 4)  # [N, V, K, R=4]

    class Opened:
        directory, logits = Path("x"), store
        manifest = {"fields": {"regions": {"layout": "finest_grid", "grid": 2}}}

    served = ServedCache(Opened(), (1, 2), torch.device("cpu"))  # type: ignore[arg-type]
    regions = served.regions(torch.tensor([1]), torch.tensor([2]))
    assert regions.tolist() == [[[store[1, 2, 0].mean().item(), *store[1, 2, 0].tolist()]]]


def test_the_suite_decides_which_caches_pay_without_reading_any_data(tmp_path: Path, monkeypatch):
    import sddkd.data
    from sddkd.suite.prebuild import prebuild_for_suite

    def no_reading(*args, **kwargs):
        raise AssertionError("the view count is a fact of the dataset's spec; no dataset is read to learn it")

    monkeypatch.setattr(sddkd.data, "build_loaders", no_reading)
    teacher = teacher_file(tmp_path / "t.pth")
    runs = [tiny(teacher, "optim.epochs=80", "seed=0"), tiny(teacher, "optim.epochs=81", "seed=1")]
    assert prebuild_for_suite(runs, QUIET, "cpu") == [], "161 epochs of teacher passes < 162 views"


def test_the_suite_builds_one_shared_cache_only_when_its_runs_pay_for_it(tmp_path: Path):
    from sddkd.suite.prebuild import prebuild_for_suite

    teacher = teacher_file(tmp_path / "t.pth")
    runs = [tiny(teacher, "optim.epochs=80", "seed=0"), tiny(teacher, "optim.epochs=82", "seed=1", scales="1,4")]
    assert prebuild_for_suite(runs[:1] * 2, QUIET, "cpu") == [], "160 epochs of teacher passes < 162 views"
    assert not cache_root().exists()
    big = tiny(teacher, "optim.epochs=5000", "data.synthetic.image_size=224", "data.synthetic.train_per_class=1")
    assert prebuild_for_suite([big], QUIET, "cpu") == [], "2,178 views per image: never worth a cache"
    assert not cache_root().exists()
    built = prebuild_for_suite(runs, QUIET, "cpu")  # 80 + 82 epochs; M=(1,2,4) and (1,4) share the 4x4 grid
    assert len(built) == 1 and (cache_root() / built[0] / "logits.bin").is_file()
    placement, loader, teacher_net, info = run_parts(runs[1])
    fields = run_cache_fields(runs[1], loader, teacher_net, info, placement)
    assert cache_name(fields) == built[0], "the run finds the cache the suite built"


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("budget", [None, 0], ids=["device-memory", "pinned-host"])
def test_cuda_serves_the_live_teacher_logits_from_either_residency(tmp_path: Path, budget: int | None):
    cfg = tiny(teacher_file(tmp_path / "t.pth"), "engine.device=cuda", "engine.amp=bf16", "teacher.cache=on")
    placement, loader, teacher, info = run_parts(cfg)
    fields = run_cache_fields(cfg, loader, teacher, info, placement)
    opened = ensure_cache(fields, loader, teacher, placement, QUIET, build=True, rebuild_damaged=True)
    assert opened is not None
    served = ServedCache(opened, cfg.scales, placement.device, budget=budget)
    assert served.residency.startswith("device memory" if budget is None else "host memory")
    cached_loader = CachedTeacherLoader(loader, served, views_of(loader))
    cached_loader.set_epoch(1)
    for images, _, cached in cached_loader:
        with placement.autocast():
            live = teacher_regions(teacher, placement.images(images), cfg.scales)
        assert cached.device == live.device and cached.dtype == live.dtype == torch.bfloat16
        torch.testing.assert_close(cached.float(), live.float(), rtol=0.02, atol=0.05)


# --- full disks, races on a damaged cache, and signals during a build ----------------------------------------------


def test_a_build_reserves_its_whole_file_before_computing(tmp_path: Path):
    """Allocated, not sparse: a second build (of another cache) then sees the space as taken."""
    cfg = tiny(teacher_file(tmp_path / "t.pth"))
    placement, loader, teacher, info = run_parts(cfg)
    fields = run_cache_fields(cfg, loader, teacher, info, placement)
    build_cache(tmp_path / "c", fields, teacher, loader.images, placement, chunk_bytes=1, stop_after_chunks=0)
    data = tmp_path / "c.partial" / "logits.bin"
    assert data.stat().st_blocks * 512 >= data.stat().st_size > 0


def test_a_disk_that_fills_up_is_one_line_and_auto_runs_live(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    import errno
    import os

    from sddkd.engine import teacher_cache_build
    from sddkd.engine.teacher_cache import NotEnoughDiskError
    from sddkd.files import DiskFullError

    cfg = tiny(teacher_file(tmp_path / "t.pth"))
    long = cfg.model_copy(update={"optim": cfg.optim.model_copy(update={"epochs": 162})})  # auto builds
    placement, loader, teacher, info = run_parts(long)

    def no_space(fd, offset, length):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "posix_fallocate", no_space)  # another build took the space since the check
    with pytest.raises(NotEnoughDiskError, match="more than is free"):
        build_for_config(cfg, QUIET, progress=False)
    assert all(p.stat().st_size == 0 for p in cache_root().rglob("logits.bin")), "the failed reservation is undone"
    assert serve_teacher_cache(long, loader, teacher, info, placement, DistContext(), QUIET) is loader
    monkeypatch.undo()
    monkeypatch.setenv("SDDKD_HOME", str(tmp_path / "home"))

    calls = []

    def full_after_one(path, payload, **kwargs):  # the manifest of the second chunk finds the disk full
        calls.append(path)
        if len(calls) > 1:
            raise DiskFullError(f"no space left on the device of {path}")
        return real_write(path, payload, **kwargs)

    real_write = teacher_cache_build.write_json_atomic
    monkeypatch.setattr(teacher_cache_build, "write_json_atomic", full_after_one)
    monkeypatch.setattr(teacher_cache_build, "CHUNK_BYTES", 1)
    with pytest.raises(NotEnoughDiskError, match="filled up while building") as error:
        build_for_config(cfg, QUIET, progress=False)
    assert "\n" not in str(error.value) and "resumes there" in str(error.value)
    calls.clear()
    assert serve_teacher_cache(long, loader, teacher, info, placement, DistContext(), QUIET) is loader


def test_runs_meeting_one_damaged_cache_rebuild_it_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    import threading
    import time

    from sddkd.engine import teacher_cache_serve

    cfg = tiny(teacher_file(tmp_path / "t.pth"))
    opened = build_for_config(cfg, QUIET, progress=False)
    reference, fields, data = opened.logits.clone(), opened.manifest["fields"], opened.directory / "logits.bin"
    del opened
    with open(data, "r+b") as handle:
        handle.truncate(data.stat().st_size - 7)
    real_rmtree = shutil.rmtree

    def slow_rmtree(path, *args, **kwargs):  # widen the window in which the others find the cache damaged too
        time.sleep(0.3)
        real_rmtree(path, *args, **kwargs)

    monkeypatch.setattr(teacher_cache_serve.shutil, "rmtree", slow_rmtree)
    placement, loader, teacher, _ = run_parts(cfg)
    results: list[object] = []

    def one_run() -> None:
        try:
            served = ensure_cache(fields, loader, teacher, placement, QUIET, build=True, rebuild_damaged=True)
            results.append(served.logits.clone() if served is not None else None)
        except Exception as exc:  # noqa: BLE001 - the test reports whatever a run met
            results.append(exc)

    runs = [threading.Thread(target=one_run) for _ in range(3)]
    for run in runs:
        run.start()
    for run in runs:
        run.join(timeout=120)
    assert len(results) == 3 and all(isinstance(r, torch.Tensor) and torch.equal(r, reference) for r in results), [
        type(r).__name__ + (f": {r}" if isinstance(r, Exception) else "") for r in results]  # fmt: skip


def test_sigterm_during_a_cache_build_stops_between_chunks_and_resume_continues(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    import os
    import signal

    from sddkd.engine import teacher_cache_build

    teacher = teacher_file(tmp_path / "t.pth")
    args = ["train", "-p", "synthetic/sdd_kd_lskd/res20_res8", "--M", "1,2,4", "--teacher", str(teacher),
            "--name", "cached", "--out", str(tmp_path / "logs"), "--set", "teacher.cache=on",
            *[a for o in TINY for a in ("--set", o)]]  # fmt: skip
    real_compute, chunks = teacher_cache_build._compute_chunk, []

    def compute_then_sigterm(*a, **k):
        chunks.append(1)
        if len(chunks) == 1:
            os.kill(os.getpid(), signal.SIGTERM)  # arrives during the first chunk
        return real_compute(*a, **k)

    monkeypatch.setattr(teacher_cache_build, "CHUNK_BYTES", 1)  # one image per chunk: 5 chunks
    monkeypatch.setattr(teacher_cache_build, "_compute_chunk", compute_then_sigterm)
    stopped = CliRunner().invoke(app, args)
    assert stopped.exit_code == 143, stopped.output
    assert len(chunks) == 1, "the build went on after the signal"
    record = json.loads((tmp_path / "logs" / "cached" / "result.json").read_text())
    assert record["status"] == "interrupted" and "while building the teacher-logit cache" in record["error"]
    (partial,) = cache_root().glob("*.partial")
    assert len(json.loads((partial / "manifest.json").read_text())["chunks"]) == 1

    resumed = CliRunner().invoke(app, [*args, "--resume"])
    assert resumed.exit_code == 0, resumed.output
    assert len(chunks) == 5, "the resumed build computed only the four chunks left"
    assert json.loads((tmp_path / "logs" / "cached" / "result.json").read_text())["status"] == "finished"


def test_a_cached_two_view_run_serves_the_weak_view_and_equals_the_live_run(tmp_path: Path):
    """MLKD: the cache appends the weak view's teacher logits to (weak, strong, labels); the strong view's teacher
    runs live in the step, so a cached run equals the live one."""
    teacher = teacher_file(tmp_path / "t.pth")
    cfg = tiny(teacher, "teacher.cache=on", "engine.amp=off", "method.name=sdd_mlkd_lskd")
    placement = resolve_placement(cfg.engine)
    spec, loader, _ = build_data(cfg.data, cfg.optim.batch_size, placement.device, cfg.seed, DistContext(),
                                 two_views=True)  # fmt: skip
    net, info = load_run_teacher(cfg, spec, placement)
    served = serve_teacher_cache(cfg, loader, net, info, placement, DistContext(), QUIET)
    assert isinstance(served, CachedTeacherLoader)
    served.set_epoch(2, start_step=1)
    loader.set_epoch(2, start_step=1)
    batches = list(served)
    assert len(batches) == len(loader) - 1
    for (weak, strong, labels, cached), plain in zip(batches, loader, strict=True):
        assert all(torch.equal(a, b) for a, b in zip((weak, strong, labels), plain, strict=True))
        live = teacher_regions(net, placement.images(weak), cfg.scales)
        torch.testing.assert_close(cached, live, rtol=1e-5, atol=1e-5)
        assert not torch.allclose(live, teacher_regions(net, placement.images(strong), cfg.scales))

    records, weights = {}, {}
    for mode in ("off", "on"):
        run = tiny(teacher, f"teacher.cache={mode}", "engine.amp=off", "method.name=sdd_mlkd_lskd")
        records[mode] = train(run, tmp_path / mode)
        assert records[mode]["status"] == "finished"
        weights[mode] = load_checkpoint(tmp_path / mode / records[mode]["run_name"] / "checkpoints" / "last.pt")
    for name, value in weights["on"]["model"].items():
        torch.testing.assert_close(value, weights["off"]["model"][name], rtol=1e-5, atol=1e-5, msg=name)


def test_a_gpu_built_cache_is_keyed_by_the_gpu_model_torch_and_cudnn(monkeypatch: pytest.MonkeyPatch):
    """cuDNN's kernels, and so the rounding of the teacher's logits, depend on the GPU model, torch and cuDNN.
    A CUDA placement is stood in for: cache_fields only reads the device's name and the versions."""
    from sddkd.engine.placement import Placement
    from sddkd.engine.teacher_cache import Views, cache_fields

    views = Views(32, 32, 32, 4, (0.5, 0.5, 0.5), (0.25, 0.25, 0.25))
    gpu = {"name": "NVIDIA H100 80GB HBM3", "cudnn": 91900}
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: gpu["name"])
    monkeypatch.setattr(torch.backends.cudnn, "version", lambda: gpu["cudnn"])

    def name(device: str = "cuda") -> str:
        placement = Placement(torch.device(device, 0) if device == "cuda" else torch.device(device), None, True)
        return cache_name(cache_fields(
            teacher_arch="resnet8", teacher_sha256="t" * 64, data_sha256="d" * 64, views=views,
            regions={"layout": "finest_grid", "grid": 4}, placement=placement, bn_folded=True, num_classes=5,
        ))  # fmt: skip

    h100, cpu = name(), name("cpu")
    gpu["name"] = "NVIDIA H200"
    h200 = name()
    gpu["cudnn"] = 91000
    other_cudnn = name()
    monkeypatch.setattr(torch, "__version__", torch.__version__ + ".other")
    other_torch = name()
    assert len({h100, h200, other_cudnn, other_torch, cpu}) == 5
    assert name("cpu") == cpu, "a CPU cache's key does not depend on them"


def test_a_cache_is_hashed_once_then_trusted_until_its_file_changes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """Every open hashed the whole file (30-45 s for 26 GB), and again right after a build."""
    import os

    from sddkd.engine import teacher_cache

    hashed: list[int] = []
    real = teacher_cache._chunk_sha256
    monkeypatch.setattr(teacher_cache, "_chunk_sha256", lambda *a: hashed.append(1) or real(*a))
    cfg = tiny(teacher_file(tmp_path / "t.pth"))
    opened = build_for_config(cfg, QUIET, progress=False)
    assert hashed == [], "the build hashed each chunk as it wrote it: no second pass"
    fields, data = opened.manifest["fields"], opened.directory / "logits.bin"
    del opened
    old = data.stat().st_mtime_ns - 10**10  # a file written 10 s before it is verified
    os.utime(data, ns=(old, old))
    open_cache(data.parent, fields)
    chunks = len(hashed)
    assert chunks >= 1, "the first open verifies every chunk"
    open_cache(data.parent, fields)
    open_cache(data.parent, fields)
    assert len(hashed) == chunks, "later opens trust the stamp"
    assert len(open_cache(data.parent, fields, verify="full").manifest["chunks"]) and len(hashed) == 2 * chunks
    raw = bytearray(data.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    data.write_bytes(bytes(raw))  # same size, rewritten: the stamp no longer matches
    with pytest.raises(CacheDamagedError, match="sha256"):
        open_cache(data.parent, fields)


def test_runs_sharing_a_gpu_copy_the_cache_to_it_one_at_a_time(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    """`--per-device K`: each process measured the free memory, saw the same, and copied: out-of-memory. One GPU is
    stood in for: its free memory drops by what each copy takes, a while after the copy starts."""
    import threading
    import time
    from types import SimpleNamespace

    from sddkd.engine import teacher_cache_serve
    from sddkd.engine.teacher_cache import OpenedCache

    gpu = {"free": 100_000}
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (gpu["free"], 200_000))
    monkeypatch.setattr(torch.cuda, "synchronize", lambda device=None: None)
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda device: SimpleNamespace(uuid="GPU-1", name="x"))

    def copy(store: torch.Tensor, device: torch.device) -> torch.Tensor:
        time.sleep(0.3)  # the copy takes a while; its memory counts once it is there
        gpu["free"] -= store.numel() * store.element_size()
        return store

    monkeypatch.setattr(teacher_cache_serve, "_to_device", copy)
    logits = torch.zeros(10_000, dtype=torch.float32)  # 40,000 bytes: fits half of 100,000, not half of 60,000
    opened = OpenedCache(tmp_path, {"fields": {"regions": {"layout": "finest_grid"}}}, logits)
    residencies: list[str] = []

    def process() -> None:
        residencies.append(ServedCache(opened, (1,), torch.device("cuda", 0)).residency)

    threads = [threading.Thread(target=process) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(residencies)[0] == "device memory" and residencies.count("device memory") == 1, residencies


def test_the_build_casts_the_teacher_once_and_writes_while_it_computes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """The build re-cast the fp32 teacher every batch under autocast, and wrote and hashed each chunk before
    computing the next. Now: one cast; chunk k is written (in a thread) while chunk k+1 is computed; same bytes."""
    import threading
    import time

    from sddkd.engine import step as step_module
    from sddkd.engine import teacher_cache, teacher_cache_build

    cfg = tiny(teacher_file(tmp_path / "t.pth"), "engine.amp=bf16")
    placement, loader, teacher, info = run_parts(cfg)
    fields = run_cache_fields(cfg, loader, teacher, info, placement)
    per_image = teacher_cache.cache_bytes(fields, 1)
    casts: list[int] = []
    real_cast = step_module.cast_for_autocast
    monkeypatch.setattr(step_module, "cast_for_autocast", lambda *a: casts.append(1) or real_cast(*a))
    events: list[tuple[str, int, float]] = []
    real_write, real_compute = teacher_cache_build._write_chunk, teacher_cache_build._compute_chunk

    def slow_write(handle, offset, chunk):
        events.append(("write-start", offset // per_image, time.monotonic()))
        time.sleep(0.5)
        digest = real_write(handle, offset, chunk)
        events.append(("write-end", offset // per_image, time.monotonic()))
        return digest

    def compute(*args):
        events.append(("compute-start", args[2], time.monotonic()))
        assert threading.current_thread() is threading.main_thread()
        return real_compute(*args)

    monkeypatch.setattr(teacher_cache_build, "_write_chunk", slow_write)
    monkeypatch.setattr(teacher_cache_build, "_compute_chunk", compute)
    built = build_cache(tmp_path / "a", fields, teacher, loader.images, placement, chunk_bytes=per_image)
    assert len(casts) == 1, "the teacher is cast to bf16 once per build"
    when = {(kind, image): t for kind, image, t in events}
    assert when[("compute-start", 1)] < when[("write-end", 0)], "chunk 1 is computed while chunk 0 is written"
    monkeypatch.setattr(teacher_cache_build, "_write_chunk", real_write)
    serial = build_cache(tmp_path / "b", fields, teacher, loader.images, placement, chunk_bytes=10 * per_image)
    assert (built / "logits.bin").read_bytes() == (serial / "logits.bin").read_bytes()


def test_a_disk_that_fills_during_the_build_is_one_sentence_and_the_build_resumes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    import errno

    from sddkd.engine import teacher_cache, teacher_cache_build
    from sddkd.engine.teacher_cache import NotEnoughDiskError

    cfg = tiny(teacher_file(tmp_path / "t.pth"))
    placement, loader, teacher, info = run_parts(cfg)
    fields = run_cache_fields(cfg, loader, teacher, info, placement)
    per_image = teacher_cache.cache_bytes(fields, 1)
    real_write, writes = teacher_cache_build._write_chunk, []

    def fill_on_third(handle, offset, chunk):
        writes.append(offset)
        if len(writes) == 3:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_write(handle, offset, chunk)

    monkeypatch.setattr(teacher_cache_build, "_write_chunk", fill_on_third)
    with pytest.raises(NotEnoughDiskError, match="filled up while building") as full:
        build_cache(tmp_path / "c", fields, teacher, loader.images, placement, chunk_bytes=per_image)
    assert "\n" not in str(full.value)
    partial = json.loads((tmp_path / "c.partial" / "manifest.json").read_text())
    assert sorted(partial["chunks"]) == ["0", "1"], "the chunks on disk before the failure are kept"
    monkeypatch.setattr(teacher_cache_build, "_write_chunk", real_write)
    resumed = build_cache(tmp_path / "c", fields, teacher, loader.images, placement, chunk_bytes=per_image)
    fresh = build_cache(tmp_path / "d", fields, teacher, loader.images, placement, chunk_bytes=per_image)
    assert (resumed / "logits.bin").read_bytes() == (fresh / "logits.bin").read_bytes()
