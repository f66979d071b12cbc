#!/usr/bin/env bash
# Fill benchmarks/wheels/ (git-ignored) with what benchmarks/gpu_check.sh installs on a GPU machine that has no
# network: pydantic and pytest with all their dependencies, as binary wheels for that machine's Python.
# Run on any machine with a package index (its own Python and platform do not matter):
#
#   bash benchmarks/fetch_gpu_wheels.sh                          # CPython 3.12, manylinux x86_64
#   PY=3.11 PLATFORM=manylinux_2_28_aarch64 bash benchmarks/fetch_gpu_wheels.sh
#
# Then copy the repo checkout, wheels included, to the GPU machine and run `bash benchmarks/gpu_check.sh OUTDIR`.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PY:-3.12}"
PLATFORM="${PLATFORM:-manylinux2014_x86_64}"
DEST="${DEST:-benchmarks/wheels}"
mkdir -p "$DEST"
# pydantic's compiled core needs the target's exact Python and platform; the rest are pure-Python wheels.
python3 -m pip download --dest "$DEST" --only-binary=:all: --python-version "$PY" --implementation cp \
  --platform "$PLATFORM" \
  "pydantic>=2" "pytest>=7"
ls -1 "$DEST"
