#!/usr/bin/env bash
# The GPU figures of benchmarks/README.md in one command, on a machine with no network (< 9 minutes on one H200):
#
#   bash benchmarks/gpu_check.sh OUTDIR              # one CUDA GPU; the repo checkout need not be installed
#   DEVICE=cpu bash benchmarks/gpu_check.sh OUTDIR   # the same steps with tiny sizes on a CPU (tests the script)
#
# Needs torch, torchvision, typer, rich, pyyaml, tqdm, numpy and pillow. What is missing of pydantic and pytest (and
# their dependencies) is installed with --no-index from WHEELS (default benchmarks/wheels, filled on a machine with
# a package index by benchmarks/fetch_gpu_wheels.sh) into OUTDIR/site, which goes on PYTHONPATH with the repo.
# Writes OUTDIR/summary.json (every number; benchmarks/README.md says what each means) and one log per step.
# Every step has its own time limit, so a hang or a failure costs that step only; its status is in the summary.
set -u
cd "$(dirname "$0")/.."
REPO="$PWD"
OUT="${1:?usage: bash benchmarks/gpu_check.sh OUTDIR}"
mkdir -p "$OUT" && OUT="$(cd "$OUT" && pwd)"
DEVICE="${DEVICE:-cuda}"
WHEELS="${WHEELS:-$REPO/benchmarks/wheels}"
PYTHON="${PYTHON:-python3}"
export SDDKD_HOME="$OUT/sddkd_home"  # never touch a real teacher store
export PYTHONPATH="$REPO:$OUT/site${PYTHONPATH:+:$PYTHONPATH}"
export TORCHINDUCTOR_CACHE_DIR="$OUT/inductor-cache"  # compile from scratch: the startup figure is honest
if [ "$DEVICE" = cpu ]; then  # tiny sizes: every step runs, the numbers mean nothing
  STEPS=2 WARMUP=1 ROUNDS=1 BATCH=16 PAIR=res20_res8 EPOCH_IMAGES=400 SUITE_DEVICES=cpu SUITE_ARGS=(--epochs 1 --only '*vanilla*')
  LIMIT_BENCH=600 LIMIT_EAGER=300 LIMIT_EPOCH=300 LIMIT_RESUME=300 LIMIT_TESTS=300 LIMIT_SUITE=300  # slow shared CPUs
else
  STEPS=100 WARMUP=10 ROUNDS=3 BATCH=64 PAIR=res32x4_res8x4 EPOCH_IMAGES=50000 SUITE_DEVICES=0 SUITE_ARGS=(--epochs 2)
  LIMIT_BENCH=90 LIMIT_EAGER=50 LIMIT_EPOCH=100 LIMIT_RESUME=60 LIMIT_TESTS=50 LIMIT_SUITE=55  # 505 s in all
fi
STATUS="$OUT/status.txt"; : > "$STATUS"
log() { echo "[$(date +%H:%M:%S)] $*" | tee -a "$OUT/log.txt"; }
step() {  # $1 name, $2 limit (s), $3 stdout file, rest: command; records ok / failed (rc) / timed out
  local name=$1 limit=$2 stdout=$3 start rc; shift 3
  log "$name: $*"; start=$(date +%s)
  timeout "$limit" "$@" > "$stdout" 2> "$OUT/$name.log"; rc=$?
  case $rc in 0) state=ok ;; 124|137) state="timed out after ${limit}s" ;; *) state="failed (exit $rc)" ;; esac
  echo "$name $state $(( $(date +%s) - start ))s" | tee -a "$STATUS" "$OUT/log.txt"
}

# 1. What this machine lacks, from the wheel folder (no network).
missing=$("$PYTHON" - <<'PY'
import importlib.util
print(" ".join(m for m in ("pydantic", "pytest") if importlib.util.find_spec(m) is None))
PY
)
if [ -n "$missing" ]; then
  step install 60 "$OUT/install.out" "$PYTHON" -m pip install --no-index --find-links "$WHEELS" --target "$OUT/site" $missing
fi
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null || echo "no nvidia-smi";
  echo "cpus $(nproc)"; "$PYTHON" -c "import torch, sys; print('python', sys.version.split()[0], 'torch', torch.__version__, 'cuda', torch.version.cuda)"
} > "$OUT/machine.txt" 2>&1
log "machine: $(tr '\n' ' ' < "$OUT/machine.txt")"

# 2. The engine's step against the reference loop, compiled and eager (resnet32x4 -> resnet8x4, M=1,2,4).
BENCH=(-m sddkd.bench --device "$DEVICE" --steps "$STEPS" --warmup "$WARMUP" --rounds "$ROUNDS" --batch-size "$BATCH"
       --pair "$PAIR" --M 1,2,4)
TORCH_LOGS=recompiles,graph_breaks,perf_hints step bench-compiled "$LIMIT_BENCH" "$OUT/bench-compiled.json" \
  "$PYTHON" "${BENCH[@]}" --compile
step bench-eager "$LIMIT_EAGER" "$OUT/bench-eager.json" "$PYTHON" "${BENCH[@]}" --no-compile --no-eval

# 3. One full epoch on CIFAR-100-sized generated data, evaluation and checkpoints included (engine.compile=auto).
TORCH_LOGS=recompiles,graph_breaks,perf_hints step epoch "$LIMIT_EPOCH" "$OUT/epoch.json" \
  "$PYTHON" benchmarks/gpu_check.py epoch "$DEVICE" "$OUT/epoch" "$EPOCH_IMAGES"
"$PYTHON" benchmarks/gpu_check.py torch-logs "$OUT/bench-compiled.log" "$OUT/epoch.log" > "$OUT/torch-logs.json"

# 4. A resume on the device: stop after epoch 1, resume from last.pt, finish.
step resume "$LIMIT_RESUME" "$OUT/resume.json" "$PYTHON" benchmarks/gpu_check.py resume "$DEVICE" "$OUT/resume"

# 5. The gpu-marked tests (skipped on a CPU).
step gpu-tests "$LIMIT_TESTS" "$OUT/gpu-tests.log" "$PYTHON" -m pytest -q -p no:cacheprovider -m gpu tests

# 6. Runs per hour of the smoke suite with 1 and 4 concurrent runs per device.
for k in 1 4; do
  start=$("$PYTHON" -c 'import time; print(time.time())')
  step "suite-k$k" "$LIMIT_SUITE" "$OUT/suite-k$k.out" "$PYTHON" -m sddkd suite smoke --per-device "$k" \
    --devices "$SUITE_DEVICES" --out "$OUT/suite-k$k" "${SUITE_ARGS[@]}"
  "$PYTHON" benchmarks/gpu_check.py suite-rate "$OUT/suite-k$k" "$k" "$start" \
    > "$OUT/suite-k$k.json"
done

"$PYTHON" - "$STATUS" "$OUT/steps.json" <<'PY'
import json, sys
lines = [line.split(" ", 1) for line in open(sys.argv[1]).read().splitlines() if line]
json.dump({"status": dict(lines), "suite_per_device": [1, 4]}, open(sys.argv[2], "w"))
PY
"$PYTHON" benchmarks/gpu_check.py summary "$OUT" > /dev/null && log "summary: $OUT/summary.json" && cat "$OUT/summary.json"
