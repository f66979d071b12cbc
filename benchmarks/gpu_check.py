"""The Python steps of benchmarks/gpu_check.sh; run from the repo root with the repo on PYTHONPATH.

    python benchmarks/gpu_check.py epoch  DEVICE OUTDIR IMAGES   # one full epoch of res32x4 -> res8x4, M=1,2,4
    python benchmarks/gpu_check.py resume DEVICE OUTDIR          # interrupt after epoch 1, resume, finish
    python benchmarks/gpu_check.py suite-rate SUITE_OUT K START  # runs per hour of a suite started at START (epoch s)
    python benchmarks/gpu_check.py torch-logs LOG...            # recompiles, graph breaks, skipped CUDA graphs
    python benchmarks/gpu_check.py summary OUTDIR                # OUTDIR/summary.json from the step outputs

Each command prints one JSON object (the summary also writes it). Nothing here is part of the package.
"""

from __future__ import annotations

import json
import re
import sys
import time
from pathlib import Path
from typing import Any


def _teacher_file(arch: str, num_classes: int, path: Path) -> Path:
    """An untrained teacher in the published layout ({"model": state_dict}): speed does not depend on weights."""
    import torch

    from sddkd.models import create_model

    torch.manual_seed(0)
    torch.save({"model": create_model(arch, num_classes=num_classes).state_dict()}, path)
    return path


def _peak_mb(device: str) -> float | None:
    import torch

    return torch.cuda.max_memory_allocated() / 2**20 if device.startswith("cuda") else None


def epoch(device: str, out: Path, images: int) -> dict[str, Any]:
    """`sddkd train` of the bench pair for one epoch on CIFAR-100-sized generated data, evaluation (10,000 test
    images at full size) and checkpoint writes included; the step compiles as `engine.compile=auto` decides."""
    from sddkd.config import load_config
    from sddkd.engine.loop import train

    out.mkdir(parents=True, exist_ok=True)
    per_class = max(images // 100, 1)
    test_per_class = max(per_class // 5, 1)  # CIFAR-100: 500 train and 100 test images per class
    teacher = _teacher_file("resnet32x4", 100, out / "teacher-resnet32x4.pth")
    cfg = load_config(
        "res32x4_res8x4", scales="1,2,4", dataset="synthetic",
        overrides=[f"engine.device={device}", "engine.progress=false", "optim.epochs=1",
                   f"data.synthetic.train_per_class={per_class}", f"data.synthetic.test_per_class={test_per_class}",
                   f"teacher.checkpoint={teacher}"],
    )  # fmt: skip
    start = time.perf_counter()
    record = train(cfg, out / "runs")
    wall = time.perf_counter() - start
    run_dir = out / "runs" / record["run_name"]
    (row,) = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return {
        "status": record["status"], "train_images": per_class * 100, "steps": row["steps"],
        "wall_seconds": round(wall, 2), "train_seconds": round(row["seconds"], 2),
        "train_images_per_s": round(row["images_per_s"], 1), "test_top1": row.get("test_top1"),
        "execution": record.get("execution"), "peak_memory_mb": _peak_mb(device),
        "checkpoints": sorted(p.name for p in (run_dir / "checkpoints").glob("*.pt")),
    }  # fmt: skip


def resume(device: str, out: Path) -> dict[str, Any]:
    """Stop after epoch 1 as an interruption would, resume from last.pt on the same device, finish epoch 2."""
    from sddkd.config import load_config
    from sddkd.engine.loop import train

    tiny = ["data.synthetic.train_per_class=16", "data.synthetic.test_per_class=4"] if device == "cpu" else []
    cfg = load_config(
        "synthetic/vanilla/resnet8",
        overrides=[f"engine.device={device}", "engine.progress=false", "optim.epochs=2", *tiny],
    )
    first = train(cfg, out / "runs", stop_after_epoch=1)
    result: dict[str, Any] = {"after_interrupt": first["status"], "epochs_done": first.get("epochs_done")}
    try:
        second = train(cfg, out / "runs", resume=True)
    except Exception as exc:  # the check reports it rather than stopping the script
        return {**result, "status": "failed", "error": f"{type(exc).__name__}: {exc}"[:500]}
    return {**result, "status": second["status"], "epochs_done_after_resume": second.get("epochs_done")}


def suite_rate(out: Path, per_device: int, started: float) -> dict[str, Any]:
    """Finished runs per hour of wall time, from `started` (time.time()) to now; unfinished runs count nothing."""
    seconds = time.time() - started
    finished = sum(json.loads(p.read_text()).get("status") == "finished" for p in out.glob("*/result.json"))
    return {"per_device": per_device, "finished_runs": finished, "seconds": round(seconds, 1),
            "runs_per_hour": round(3600 * finished / max(seconds, 1e-9), 1)}  # fmt: skip


TORCH_LOG_PATTERNS = {
    # TORCH_LOGS=recompiles,graph_breaks,perf_hints; the phrases torch's dynamo and inductor log.
    "recompiles": re.compile(r"Recompiling function"),
    "graph_breaks": re.compile(r"Graph break"),
    "skipped_cudagraphs": re.compile(r"skipping cudagraphs", re.I),
}


def torch_logs(*logs: Path) -> dict[str, int]:
    text = "\n".join(p.read_text(errors="replace") for p in logs if p.is_file())
    return {name: len(pattern.findall(text)) for name, pattern in TORCH_LOG_PATTERNS.items()}


def _load(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def summary(out: Path) -> dict[str, Any]:
    """One JSON object from the step outputs; a step that failed or timed out is null (its log says why)."""
    steps = _load(out / "steps.json") or {}
    result: dict[str, Any] = {"machine": (out / "machine.txt").read_text().strip().splitlines()
                              if (out / "machine.txt").is_file() else None}  # fmt: skip
    for name in ("compiled", "eager"):
        bench = _load(out / f"bench-{name}.json")
        result[f"bench_{name}"] = bench and {
            "engine_images_per_s": round(bench["engine"]["images_per_s"], 1),
            "engine_ms_per_step": round(bench["engine"]["ms_per_step"], 3),
            "engine_peak_memory_mb": round(bench["engine"]["peak_memory_mb"], 1),
            "reference_images_per_s": round(bench["baseline"]["images_per_s"], 1),
            "reference_peak_memory_mb": round(bench["baseline"]["peak_memory_mb"], 1),
            "ratio": round(bench["ratio"], 3),
            "engine_startup_seconds": round(bench["engine_startup_seconds"], 1),
            "evaluation_images_per_s": round(bench.get("evaluation_images_per_s", 0.0), 1),
            "estimated_240_epoch_minutes": round(bench["estimated_240_epoch_minutes"], 1),
        }
    result["torch_logs"] = _load(out / "torch-logs.json")
    result["epoch"] = _load(out / "epoch.json")
    result["resume"] = _load(out / "resume.json")
    tests = (out / "gpu-tests.log").read_text().strip().splitlines()[-1:] if (out / "gpu-tests.log").is_file() else []
    result["gpu_tests"] = tests[0] if tests else None
    result["suite"] = [_load(out / f"suite-k{k}.json") for k in steps.get("suite_per_device", [])]
    result["steps"] = steps.get("status", {})
    (out / "summary.json").write_text(json.dumps(result, indent=1) + "\n")
    return result


def main(argv: list[str]) -> int:
    command, args = argv[0], argv[1:]
    if command == "epoch":
        value: Any = epoch(args[0], Path(args[1]), int(args[2]))
    elif command == "resume":
        value = resume(args[0], Path(args[1]))
    elif command == "suite-rate":
        value = suite_rate(Path(args[0]), int(args[1]), float(args[2]))
    elif command == "torch-logs":
        value = torch_logs(*map(Path, args))
    elif command == "summary":
        value = summary(Path(args[0]))
    else:
        raise SystemExit(f"unknown command {command!r}; see the module docstring")
    print(json.dumps(value))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
