#!/usr/bin/env bash
# Resume on a GPU (not yet run on one): a SIGTERM mid-epoch, then --resume, must give a finished run whose
# checkpoint loads (RNG states stay CPU ByteTensors) and whose metrics lines have every epoch once. CUDA kernels
# are not bit-deterministic, so the weights are compared within a tolerance, not bit for bit as on the CPU.
# Usage: bash benchmarks/gpu_resume_check.sh   (about 1 minute on one GPU)
set -euo pipefail
OUT=$(mktemp -d)
ARGS=(-p synthetic/vanilla/resnet8 --set data.synthetic.num_classes=2 --set data.synthetic.train_per_class=64
      --set data.synthetic.test_per_class=8 --batch-size 16 --epochs 3 --set engine.progress=false --device cuda)
python -m sddkd train "${ARGS[@]}" --out "$OUT/straight"
set +e
SDDKD_FAULT=sigterm:10 python -m sddkd train "${ARGS[@]}" --out "$OUT/stopped"
code=$?
set -e
test "$code" -eq 143 || { echo "expected exit 143 after SIGTERM, got $code"; exit 1; }
python -m sddkd train "${ARGS[@]}" --out "$OUT/stopped" --resume
python - "$OUT" <<'PY'
import json, sys
from pathlib import Path
import torch
from sddkd.engine.checkpoint import load_checkpoint
out, run = Path(sys.argv[1]), "synthetic-vanilla-resnet8-s0"
a, b = (load_checkpoint(out / d / run / "checkpoints" / "last.pt", verify=True) for d in ("straight", "stopped"))
assert all(t.device.type == "cpu" and t.dtype == torch.uint8 for t in [b["rng"]["torch"], *b["rng"].get("cuda", [])])
epochs = [json.loads(l)["epoch"] for l in (out / "stopped" / run / "metrics.jsonl").read_text().splitlines()]
assert epochs == [1, 2, 3], epochs
worst = max((a["model"][k].float() - b["model"][k].float()).abs().max().item() for k in a["model"])
print(f"resume on cuda: finished, epochs {epochs}, largest weight difference to the uninterrupted run {worst:.2e}")
PY
