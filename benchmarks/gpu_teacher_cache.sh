#!/usr/bin/env bash
# The teacher-logit cache on one CUDA GPU, in one go (about 5 minutes on an H100/H200-class GPU):
#   bash benchmarks/gpu_teacher_cache.sh [RESULTS_DIR]     (default: $OUT if set, else benchmarks/results/gpu-cache)
# Writes RESULTS_DIR/
#   gpu-tests.log      pytest -m gpu tests/engine/test_teacher_cache.py: cached = live bf16 teacher logits on CUDA, from
#                      device memory and from pinned host memory
#   bench-cache.json   python -m sddkd.bench --device cuda --cache: the cached step against the live engine step and
#                      the reference loop, plus the build time per 1,000 images with the real teacher
#   log.txt            what ran and how it ended
set -u
cd "$(dirname "$0")/.."
RESULTS="${1:-${OUT:-benchmarks/results/gpu-cache}}"
mkdir -p "$RESULTS"
RESULTS="$(cd "$RESULTS" && pwd)"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
export SDDKD_HOME="$RESULTS/sddkd_home"  # never touch a real teacher store or cache
log() { echo "[$(date +%H:%M:%S)] $*" | tee -a "$RESULTS/log.txt"; }

log "machine: $(nvidia-smi --query-gpu=name,memory.total --format=csv,noheader 2>&1 | head -1)"
log "gpu tests: python -m pytest -q -m gpu tests/engine/test_teacher_cache.py"
timeout 120 python -m pytest -q -m gpu tests/engine/test_teacher_cache.py > "$RESULTS/gpu-tests.log" 2>&1 \
  || log "gpu tests FAILED or timed out (see gpu-tests.log)"
tail -n 1 "$RESULTS/gpu-tests.log" | tee -a "$RESULTS/log.txt"

# 10,000 cached images (5.2 GB in bf16) fit in device memory; 2,048 images built with the real teacher.
ARGS="--device cuda --steps 100 --rounds 3 --no-compile --cache --cache-images 10000 --cache-build-images 2048"
log "bench: python -m sddkd.bench $ARGS"
timeout 420 python -m sddkd.bench $ARGS > "$RESULTS/bench-cache.json" 2> "$RESULTS/bench-cache.err" \
  || log "bench FAILED (see bench-cache.err)"
python - "$RESULTS/bench-cache.json" <<'PY' | tee -a "$RESULTS/log.txt"
import json, sys
try:
    r = json.load(open(sys.argv[1]))
except Exception as exc:  # the bench failed: its .err says why
    sys.exit(f"no result: {exc}")
print(f"engine {r['engine']['images_per_s']:.0f} img/s, cached {r['cached']['images_per_s']:.0f} img/s "
      f"({r['cached_vs_engine']:.2f}x), baseline {r['baseline']['images_per_s']:.0f} img/s; "
      f"build {r['cache']['build_seconds_per_1000_images']:.1f} s per 1,000 images; {r['cache']['residency']}")
PY
