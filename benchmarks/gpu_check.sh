#!/usr/bin/env bash
# The GPU figures of benchmarks/README.md, recorded in one go (< 8 minutes on one H100/H200-class GPU).
# Run from the repository root on a machine with one CUDA GPU:   bash benchmarks/gpu_check.sh [RESULTS_DIR]
# Writes RESULTS_DIR (default: $OUT if set, else benchmarks/results/gpu) and prints a summary at the end:
#   bench-eager.json    python -m sddkd.bench --no-compile   (engine: bf16, channels_last, fused SGD, folded teacher)
#   bench-compile.json  python -m sddkd.bench --compile      (the same plus torch.compile with CUDA graphs)
#   suite-k1.json, suite-k5.json   `sddkd suite smoke` (6 small runs) with --per-device 1 and 5: runs per hour
#   gpu-tests.log       pytest -m gpu tests/engine/test_step.py: the CUDA-graph step against the eager step, on CUDA
#   compile-train.log   a short `sddkd train` with engine.compile=true (partial last batch, evaluation, checkpoints)
# Every step has its own time limit (they add up to 7.5 minutes), so a hang costs that step only.
set -u
cd "$(dirname "$0")/.."
RESULTS="${1:-${OUT:-benchmarks/results/gpu}}"
mkdir -p "$RESULTS"
RESULTS="$(cd "$RESULTS" && pwd)"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
export SDDKD_HOME="$RESULTS/sddkd_home"  # never touch a real teacher store
STEPS="${STEPS:-100}"
DEVICE="${DEVICE:-cuda}"  # DEVICE=cpu STEPS=2 only checks the script itself
SUITE_DEVICES=$([ "$DEVICE" = cpu ] && echo cpu || echo 0)

log() { echo "[$(date +%H:%M:%S)] $*" | tee -a "$RESULTS/log.txt"; }

{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader; echo "cpus $(nproc)";
  python -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda)"; } > "$RESULTS/machine.txt" 2>&1
log "machine: $(tr '\n' ' ' < "$RESULTS/machine.txt")"

bench() {  # $1: name, $2: time limit (s), rest: bench options
  local name=$1 limit=$2; shift 2
  log "bench $name: python -m sddkd.bench --device $DEVICE --steps $STEPS --rounds 3 $*"
  timeout "$limit" python -m sddkd.bench --device "$DEVICE" --steps "$STEPS" --rounds 3 "$@" \
    > "$RESULTS/bench-$name.json" 2> "$RESULTS/bench-$name.err" || log "bench $name FAILED (see bench-$name.err)"
}
bench eager 80 --no-compile
bench compile 150 --compile --warmup 10

log "gpu tests: python -m pytest -q -m gpu tests/engine/test_step.py tests/test_losses.py"
timeout 60 python -m pytest -q -m gpu tests/engine/test_step.py tests/test_losses.py > "$RESULTS/gpu-tests.log" 2>&1 \
  || log "gpu tests FAILED or timed out (see gpu-tests.log)"
tail -n 1 "$RESULTS/gpu-tests.log" | tee -a "$RESULTS/log.txt"

suite() {  # $1: concurrent runs per GPU, $2: time limit (s)
  local k=$1 limit=$2 out="$RESULTS/suite-k$1" start
  log "suite: python -m sddkd suite smoke --per-device $k --devices $SUITE_DEVICES (a resnet20 teacher, then 5 students)"
  start=$(date +%s.%N)
  timeout "$limit" python -m sddkd suite smoke --per-device "$k" --devices "$SUITE_DEVICES" --out "$out" > "$out.log" 2>&1 \
    || log "suite k=$k did not finish in $limit s (see suite-k$k.log); only finished runs count"
  python -c '
import json, pathlib, sys
out, k, start, end = pathlib.Path(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4])
finished = sum(json.loads(p.read_text()).get("status") == "finished" for p in out.glob("*/result.json"))
print(json.dumps({"per_device": k, "finished_runs": finished, "seconds": round(end - start, 1),
                  "runs_per_hour": round(3600 * finished / (end - start), 1)}))
' "$out" "$k" "$start" "$(date +%s.%N)" > "$out.json"
  log "suite k=$k: $(cat "$out.json")"
}
suite 1 70
suite 5 45

log "train with engine.compile=true (teacher from the k=1 suite)"
teacher="$RESULTS/suite-k1/synthetic-vanilla-resnet20-s0/checkpoints/best.pt"
if [ -f "$teacher" ]; then
  timeout 45 python -m sddkd train --preset synthetic/sdd_kd_lskd/res20_res8 --M 1,2,4 --device "$DEVICE" --epochs 3 \
    --teacher "$teacher" --out "$RESULTS/compile-train" --set engine.compile=true --set engine.progress=false \
    > "$RESULTS/compile-train.log" 2>&1 || log "compiled train FAILED or timed out (see compile-train.log)"
  tail -n 4 "$RESULTS/compile-train.log" | tee -a "$RESULTS/log.txt"
else
  log "no teacher from the suite: compiled train skipped"
fi

log "summary"
for name in eager compile; do
  python -c '
import json, sys
r = json.load(open(sys.argv[1]))
e, b = r["engine"], r["baseline"]
row = "{:8s} engine {:7.0f} img/s {:6.2f} ms/step {:5.0f} MB | baseline {:6.0f} img/s {:6.2f} ms/step {:5.0f} MB"
print(row.format(sys.argv[2], e["images_per_s"], e["ms_per_step"], e["peak_memory_mb"], b["images_per_s"],
                 b["ms_per_step"], b["peak_memory_mb"]), "| ratio {:.2f} | 240 epochs ~{:.0f} min".format(
                 r["ratio"], r["estimated_240_epoch_minutes"]))
' "$RESULTS/bench-$name.json" "$name" 2>/dev/null | tee -a "$RESULTS/log.txt" || log "$name: no result"
done
cat "$RESULTS"/suite-k*.json 2>/dev/null | tee -a "$RESULTS/log.txt"
