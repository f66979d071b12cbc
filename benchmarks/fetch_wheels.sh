#!/usr/bin/env bash
# Fill benchmarks/wheels/ (git-ignored; the device check's invocation carries it) with what the GPU machine lacks:
# pydantic, its compiled core and the two small packages it needs beyond typing-extensions, as binary wheels for
# that machine's Python (3.12, x86-64 manylinux). Needs a package index; the GPU machine itself has no network.
#
#   bash benchmarks/fetch_wheels.sh                    # CPython 3.12 (the GPU machine's), x86-64
#   PY=3.11 DEST=/tmp/w bash benchmarks/fetch_wheels.sh   # another Python (the CPU rehearsal uses this one's)
#
# The versions are pinned together (pydantic pins its core exactly); one version of each, so that
# `pip install --no-deps` of the folder's wheels cannot pick two.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PY:-3.12}"
DEST="${DEST:-benchmarks/wheels}"
PYTHON="${PYTHON:-python3}"
PACKAGES=(pydantic==2.13.4 pydantic-core==2.46.4 annotated-types==0.7.0 typing-inspection==0.4.2)
mkdir -p "$DEST"
rm -f "$DEST"/*.whl
"$PYTHON" -m pip download --quiet --no-deps --only-binary=:all: --dest "$DEST" \
  --python-version "$PY" --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
  --platform manylinux2014_x86_64 --platform manylinux1_x86_64 \
  "${PACKAGES[@]}"
ls -1 "$DEST"
