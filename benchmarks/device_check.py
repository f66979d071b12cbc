"""Every GPU check in one command, from a bare GPU machine, within 8 minutes: the driver that
`benchmarks/device_check.sh` runs. Standard library only at the top: it runs before pydantic is installed.

    python3 benchmarks/device_check.py run DEVICE OUTDIR WORK   # every step; OUTDIR gets summary.json + logs.tar.gz

Each step is a child process under `timeout -k` (killed 5 s after its TERM, its whole process group with it) and
under what is left of the call's budget, so one hang costs that step only and the call ends in time. After every
step OUTDIR/summary.json and OUTDIR/logs.tar.gz are rewritten: a call killed at any point still returns every
figure measured so far. Everything bulky (installed wheels, the sddkd home with its compile cache, runs,
checkpoints) stays in WORK, which is not returned.

The step commands (also run alone, from the repo root with the repo on PYTHONPATH; each prints one JSON object):

    python benchmarks/device_check.py epoch  DEVICE OUTDIR IMAGES   # one full epoch of res32x4 -> res8x4, M=1,2,4
    python benchmarks/device_check.py resume DEVICE OUTDIR          # interrupt after epoch 1, resume, compare
    python benchmarks/device_check.py suite-rate SUITE_OUT K SECONDS # runs per hour of a finished suite step

Nothing here is part of the package.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import time
from pathlib import Path
from typing import Any

BUDGET_SECONDS = {"cuda": 470, "cpu": 1200}  # the whole call, install included; cuda: 8 minutes less a margin
KILL_AFTER = 5  # seconds between a step's TERM and its KILL
MAX_FILES, MAX_FILE_BYTES = 8, 16 * 2**20  # what a device call returns

# Sizes: the GPU figures of benchmarks/README.md; on a CPU the same steps at tiny sizes (the numbers mean nothing).
SIZES = {
    "cuda": {"steps": 100, "warmup": 10, "rounds": 3, "batch": 64, "pair": "res32x4_res8x4", "epoch_images": 50000,
             "second_steps": 20, "cache_images": 2000, "cache_build_images": 2048, "suite_devices": "0",
             "suite_warm": ["--epochs", "1"], "suite": ["--epochs", "2"]},
    "cpu": {"steps": 2, "warmup": 1, "rounds": 1, "batch": 16, "pair": "res20_res8", "epoch_images": 400,
            "second_steps": 1, "cache_images": 64, "cache_build_images": 4, "suite_devices": "cpu",
            "suite_warm": ["--epochs", "1", "--only", "*vanilla*"], "suite": ["--epochs", "1", "--only", "*vanilla*"]},
}  # fmt: skip
# Per-step limits in seconds (cuda, cpu); what is left of the budget caps them further.
LIMITS = {
    "install": (20, 120), "gpu-tests": (35, 300), "bench-compiled": (90, 420), "bench-second": (40, 300),
    "bench-eager": (30, 300), "epoch": (40, 300), "resume": (30, 300), "cache": (75, 420),
    "suite-warm": (35, 300), "suite-k1": (35, 300), "suite-k4": (35, 300),
}  # fmt: skip
TORCH_LOGS = "recompiles,graph_breaks,perf_hints"


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
    """Stop after epoch 1 as an interruption would, resume from last.pt on the same device, finish epoch 2; then
    compare with the same run uninterrupted (CUDA kernels are not bit-deterministic: a tolerance, not equality)."""
    import torch

    from sddkd.config import load_config
    from sddkd.engine.checkpoint import load_checkpoint
    from sddkd.engine.loop import train

    tiny = ["data.synthetic.train_per_class=16", "data.synthetic.test_per_class=4"] if device == "cpu" else []
    cfg = load_config(
        "synthetic/vanilla/resnet8",
        overrides=[f"engine.device={device}", "engine.progress=false", "optim.epochs=2", *tiny],
    )
    first = train(cfg, out / "stopped", stop_after_epoch=1)
    result: dict[str, Any] = {"after_interrupt": first["status"], "epochs_done": first.get("epochs_done")}
    try:
        resumed = train(cfg, out / "stopped", resume=True)
    except Exception as exc:  # the check reports it rather than stopping the script
        return {**result, "status": "failed", "error": f"{type(exc).__name__}: {exc}"[:500]}
    straight = train(cfg, out / "straight")
    a, b = (load_checkpoint(out / d / r["run_name"] / "checkpoints" / "last.pt", verify=True)
            for d, r in (("stopped", resumed), ("straight", straight)))  # fmt: skip
    worst = max((a["model"][k].float() - b["model"][k].float()).abs().max().item() for k in a["model"])
    cpu_bytes = all(t.device.type == "cpu" and t.dtype == torch.uint8 for t in [a["rng"]["torch"], a["rng"].get(
        "cuda", torch.zeros(1, dtype=torch.uint8))])  # fmt: skip
    return {**result, "status": resumed["status"], "epochs_done_after_resume": resumed.get("epochs_done"),
            "resumed_best_top1": resumed.get("best_top1"), "straight_best_top1": straight.get("best_top1"),
            "largest_weight_difference": worst, "rng_states_cpu_bytes": cpu_bytes}  # fmt: skip


def suite_rate(out: Path, per_device: int, seconds: float) -> dict[str, Any]:
    """Finished runs per hour of the suite step's wall time; unfinished runs count nothing."""
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


# ---------------------------------------------------------------------------------------------------------------
# The driver


class Check:
    """The steps of one call: each runs, is recorded, and the returned folder is rewritten."""

    def __init__(self, device: str, out: Path, work: Path, python: str):
        self.device, self.out, self.work, self.python = device, out, work, python
        self.kind = "cpu" if device == "cpu" else "cuda"
        self.size = SIZES[self.kind]
        self.logs = work / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)
        self.start = time.monotonic()
        self.deadline = self.start + BUDGET_SECONDS[self.kind]
        self.steps: dict[str, dict[str, Any]] = {}
        self.env = {**os.environ, "SDDKD_HOME": str(work / "home"), "PYTHONUNBUFFERED": "1"}
        self.env.pop("TORCHINDUCTOR_CACHE_DIR", None)  # the engine's shared compile cache, under WORK's sddkd home

    def step(self, name: str, argv: list[str], stdout: str | None = None, env: dict[str, str] | None = None,
             sample_gpu: bool = False) -> bool:  # fmt: skip
        """Run `argv` under `timeout -k`; its stdout to WORK/logs/STDOUT (else its log), stderr to WORK/logs/NAME.log
        (one writer per file). Record ok / failed (exit N) / timed out / skipped (no time left)."""
        limit = min(LIMITS[name][0 if self.kind == "cuda" else 1], int(self.deadline - time.monotonic()) - KILL_AFTER)
        if limit < 5:
            self.steps[name] = {"state": "skipped: no time left in the call's budget", "seconds": 0}
            self.write()
            return False
        log = self.logs / f"{name}.log"
        started = time.monotonic()
        sampler = self._sample_gpu(name) if sample_gpu else None
        with open(log, "w") as err, open(self.logs / stdout if stdout else os.devnull, "w") as out:
            proc = subprocess.run(
                ["timeout", "-k", str(KILL_AFTER), str(limit), *argv], stdout=out if stdout else err,
                stderr=subprocess.STDOUT if not stdout else err, stdin=subprocess.DEVNULL,
                env={**self.env, **(env or {})}, cwd=REPO, check=False,
            )  # fmt: skip
        if sampler is not None:
            sampler.terminate()
            sampler.wait()
        seconds = round(time.monotonic() - started, 1)
        rc = proc.returncode
        state = "ok" if rc == 0 else f"timed out after {limit}s" if rc in (124, 137) else f"failed (exit {rc})"
        self.steps[name] = {"state": state, "seconds": seconds, "limit": limit}
        self.write()
        return rc == 0

    def _sample_gpu(self, name: str) -> subprocess.Popen[bytes] | None:
        if self.kind != "cuda" or shutil.which("nvidia-smi") is None:
            return None
        with open(self.logs / f"{name}.nvidia-smi.csv", "w") as csv:
            return subprocess.Popen(
                ["nvidia-smi", "--query-gpu=utilization.gpu,memory.used", "--format=csv,noheader,nounits",
                 "-lms", "500"], stdout=csv, stderr=subprocess.DEVNULL,
            )  # fmt: skip

    def py(self, *args: str) -> list[str]:
        return [self.python, *args]

    def write(self) -> None:
        """summary.json and logs.tar.gz, each replaced atomically; nothing else goes to OUTDIR."""
        summary = build_summary(self)
        tmp = self.out / ".summary.json.tmp"
        tmp.write_text(json.dumps(summary, indent=1) + "\n")
        os.replace(tmp, self.out / "summary.json")
        tmp = self.out / ".logs.tar.gz.tmp"
        with tarfile.open(tmp, "w:gz") as tar:
            for path in sorted(self.logs.iterdir()):
                if path.is_file() and path.stat().st_size <= 4 * 2**20:  # a runaway log is cut rather than returned
                    tar.add(path, arcname=f"logs/{path.name}")
        os.replace(tmp, self.out / "logs.tar.gz")

    def run(self) -> int:
        size, d = self.size, self.device
        self._install()
        self._machine()
        self.step("gpu-tests", self.py("-m", "pytest", "-q", "-p", "no:cacheprovider", "-m", "gpu", "tests"),
                  "gpu-tests.out")  # fmt: skip
        bench = ["-m", "sddkd.bench", "--device", d, "--batch-size", str(size["batch"]), "--pair", size["pair"],
                 "--M", "1,2,4"]  # fmt: skip
        timed = ["--steps", str(size["steps"]), "--warmup", str(size["warmup"]), "--rounds", str(size["rounds"])]
        logs = {"TORCH_LOGS": TORCH_LOGS}
        # The first compiled process compiles cold (the shared compile cache in WORK starts empty): its start-up is
        # the compile time; the second process finds the cache warm.
        self.step("bench-compiled", self.py(*bench, *timed, "--compile"), "bench-compiled.json", logs)
        self.step("bench-second", self.py(*bench, "--steps", str(size["second_steps"]), "--warmup",
                  str(size["warmup"]), "--rounds", "1", "--compile", "--no-baseline", "--no-eval"),
                  "bench-second.json", logs)  # fmt: skip
        self.step("bench-eager", self.py(*bench, *timed, "--no-compile", "--no-eval"), "bench-eager.json")
        self.step("epoch", self.py("benchmarks/device_check.py", "epoch", d, str(self.work / "epoch"),
                                   str(size["epoch_images"])), "epoch.json", logs)  # fmt: skip
        self.step("resume", self.py("benchmarks/device_check.py", "resume", d, str(self.work / "resume")),
                  "resume.json")  # fmt: skip
        # The cached step against the live one, both compiled; the build with the real teacher timed apart.
        self.step("cache", self.py(*bench, *timed, "--compile", "--no-baseline", "--no-eval", "--cache",
                  "--cache-images", str(size["cache_images"]), "--cache-build-images",
                  str(size["cache_build_images"])), "cache.json", logs)  # fmt: skip
        # Suite throughput after compile: one pass warms the shared compile cache for every run of the suite.
        suite = ["-m", "sddkd", "suite", "smoke", "--devices", size["suite_devices"]]
        self.step("suite-warm", self.py(*suite, "--per-device", "1", "--out", str(self.work / "suite-warm"),
                  *size["suite_warm"]), "suite-warm.out")  # fmt: skip
        for k in (1, 4):
            self.step(f"suite-k{k}", self.py(*suite, "--per-device", str(k), "--out", str(self.work / f"suite-k{k}"),
                      *size["suite"]), f"suite-k{k}.out", sample_gpu=True)  # fmt: skip
            rate = suite_rate(self.work / f"suite-k{k}", k, self.steps[f"suite-k{k}"]["seconds"])
            (self.logs / f"suite-k{k}.json").write_text(json.dumps(rate))
        self.steps["total"] = {"state": "ok", "seconds": round(time.monotonic() - self.start, 1)}
        self.write()
        return 0 if all(s["state"] == "ok" for s in self.steps.values()) else 1

    def _install(self) -> None:
        """pydantic and its compiled core from the carried wheels, when the machine lacks them (no network)."""
        try:
            probe = subprocess.run(self.py("-c", "import pydantic"), capture_output=True, env=self.env, check=False,
                                   timeout=60).returncode  # fmt: skip
        except subprocess.TimeoutExpired:
            probe = 1
        if probe == 0:
            self.steps["install"] = {"state": "ok", "seconds": 0, "note": "pydantic already importable"}
            self.write()
            return
        wheels = sorted(str(p) for p in Path(os.environ.get("WHEELS", REPO / "benchmarks" / "wheels")).glob("*.whl"))
        site = self.work / "site"
        self.step("install", self.py("-m", "pip", "install", "-q", "--no-index", "--no-deps", "--no-compile",
                  "--no-cache-dir", "--target", str(site), *wheels))  # fmt: skip
        self.env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), str(site), self.env.get("PYTHONPATH")]))

    def _machine(self) -> None:
        def output(argv: list[str]) -> str:
            try:
                done = subprocess.run(argv, capture_output=True, text=True, env=self.env, check=False, timeout=60)
            except subprocess.TimeoutExpired:
                return f"{argv[0]} timed out"
            return done.stdout.strip() or done.stderr.strip()[-300:]

        lines = []
        if shutil.which("nvidia-smi"):
            lines.append(
                output(["nvidia-smi", "--query-gpu=name,memory.total,driver_version", "--format=csv,noheader"])
            )
        lines += [output(self.py("-c", MACHINE_PROBE)), f"cpus {os.cpu_count()}"]
        (self.logs / "machine.txt").write_text("\n".join(lines) + "\n")


MACHINE_PROBE = """
import sys, torch
cudnn = torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None
print('python', sys.version.split()[0], 'torch', torch.__version__, 'cuda', torch.version.cuda, 'cudnn', cudnn)
"""


def _gpu_utilisation(path: Path) -> dict[str, Any] | None:
    """Mean and peak of nvidia-smi's utilization.gpu samples (every 0.5 s) over a step."""
    if not path.is_file():
        return None
    util, memory = [], []
    for line in path.read_text().splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) == 2 and parts[0].isdigit() and parts[1].isdigit():
            util.append(int(parts[0]))
            memory.append(int(parts[1]))
    if not util:
        return None
    return {"samples": len(util), "mean_util_percent": round(sum(util) / len(util), 1),
            "max_util_percent": max(util), "max_memory_used_mb": max(memory)}  # fmt: skip


def build_summary(check: Check) -> dict[str, Any]:
    """Every figure so far, from the step outputs in WORK/logs; a step that did not finish gives null."""
    logs = check.logs
    result: dict[str, Any] = {
        "invocation": INVOCATION, "device": check.device,
        "machine": (logs / "machine.txt").read_text().strip().splitlines() if (logs / "machine.txt").is_file()
        else None,
    }  # fmt: skip
    for name in ("compiled", "eager", "second"):
        bench = _load(logs / f"bench-{name}.json")
        result[f"bench_{name}"] = bench and {
            "engine_images_per_s": round(bench["engine"]["images_per_s"], 1),
            "engine_ms_per_step": round(bench["engine"]["ms_per_step"], 3),
            "engine_peak_memory_mb": round(bench["engine"]["peak_memory_mb"], 1),
            "reference_images_per_s": bench.get("baseline") and round(bench["baseline"]["images_per_s"], 1),
            "reference_peak_memory_mb": bench.get("baseline") and round(bench["baseline"]["peak_memory_mb"], 1),
            "ratio": bench.get("ratio") and round(bench["ratio"], 3),
            "engine_startup_seconds": round(bench["engine_startup_seconds"], 1),
            "evaluation_images_per_s": bench.get("evaluation_images_per_s") and round(
                bench["evaluation_images_per_s"], 1),
            "estimated_240_epoch_minutes": round(bench["estimated_240_epoch_minutes"], 1),
            "execution": bench.get("execution"),
        }  # fmt: skip
    compiled, second = result["bench_compiled"], result["bench_second"]
    result["compile_seconds"] = {
        "first_process": compiled and compiled["engine_startup_seconds"],
        "second_process_shared_cache": second and second["engine_startup_seconds"],
    }
    cache = _load(logs / "cache.json")
    result["cache"] = cache and {
        "live_images_per_s": round(cache["engine"]["images_per_s"], 1),
        "cached_images_per_s": round(cache["cached"]["images_per_s"], 1),
        "cached_vs_live": round(cache["cached_vs_engine"], 3),
        "cached_peak_memory_mb": round(cache["cached"]["peak_memory_mb"], 1),
        "build_seconds_per_1000_images": round(cache["cache"]["build_seconds_per_1000_images"], 3),
        "residency": cache["cache"]["residency"], "cache_gb": round(cache["cache"]["cache_gb"], 3),
        "execution": cache.get("execution"),
    }  # fmt: skip
    result["torch_logs"] = torch_logs(*(logs / f"{n}.log" for n in ("bench-compiled", "bench-second", "epoch",
                                                                     "cache")))  # fmt: skip
    result["epoch"] = _load(logs / "epoch.json")
    result["resume"] = _load(logs / "resume.json")
    tests = (logs / "gpu-tests.out").read_text().strip().splitlines()[-1:] if (logs / "gpu-tests.out").is_file() else []
    result["gpu_tests"] = tests[0] if tests else None
    result["suite"] = [
        {**rate, "gpu": _gpu_utilisation(logs / f"suite-k{k}.nvidia-smi.csv")}
        for k in (1, 4) if (rate := _load(logs / f"suite-k{k}.json")) is not None
    ]  # fmt: skip
    epoch = result["epoch"]
    if epoch and epoch.get("wall_seconds") and compiled:
        # One 240-epoch run: the compiled step's epoch time at full speed plus the measured epoch's evaluation and
        # checkpoint share, without the one-off compile (the epoch's wall time less its training loop).
        per_epoch = epoch["train_seconds"] + max(epoch["wall_seconds"] - epoch["train_seconds"]
                                                 - compiled["engine_startup_seconds"], 0)  # fmt: skip
        result["projection_240_epochs_minutes"] = round(240 * per_epoch / 60, 1)
    result["steps"] = check.steps
    return result


INVOCATION = (
    "bash benchmarks/fetch_wheels.sh (here, once: pydantic wheels for the GPU machine's Python 3.12 into the "
    "git-ignored benchmarks/wheels); then on the GPU machine, with benchmarks/wheels carried along with the "
    "working tree: bash benchmarks/device_check.sh OUTDIR (OUTDIR: the folder that comes back)"
)


def main(argv: list[str]) -> int:
    command, args = argv[0], argv[1:]
    if command == "run":
        out, work = Path(args[1]), Path(args[2])
        out.mkdir(parents=True, exist_ok=True)
        return Check(args[0], out, work, sys.executable).run()
    if command == "epoch":
        value: Any = epoch(args[0], Path(args[1]), int(args[2]))
    elif command == "resume":
        value = resume(args[0], Path(args[1]))
    elif command == "suite-rate":
        value = suite_rate(Path(args[0]), int(args[1]), float(args[2]))
    elif command == "check-returned":
        problems = check_returned(Path(args[0]))
        print("\n".join(problems) or "ok")
        return 1 if problems else 0
    else:
        raise SystemExit(f"unknown command {command!r}; see the module docstring")
    print(json.dumps(value))
    return 0


def check_returned(out: Path) -> list[str]:
    """What a device call could not bring back of OUTDIR: more than 8 files, a file over 16 MiB, a folder over 2
    deep, a name outside letters, digits, '.', '_' and '-'."""
    files = [p for p in out.rglob("*") if p.is_file()]
    problems = [f"{len(files)} files (at most {MAX_FILES})"] if len(files) > MAX_FILES else []
    for path in files:
        rel = path.relative_to(out)
        if path.stat().st_size > MAX_FILE_BYTES:
            problems.append(f"{rel}: {path.stat().st_size} bytes (at most {MAX_FILE_BYTES})")
        if len(rel.parts) > 3 or not all(re.fullmatch(r"[A-Za-z0-9._-]+", part) for part in rel.parts):
            problems.append(f"{rel}: too deep or an odd name")
    return problems


REPO = Path(__file__).resolve().parent.parent

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
