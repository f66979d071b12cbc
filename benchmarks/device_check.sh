#!/usr/bin/env bash
# Every GPU check in one command, from a bare GPU machine (its python3 with torch; no network), within 8 minutes.
#
#   bash benchmarks/fetch_wheels.sh               # once, where a package index is reachable: benchmarks/wheels/
#   bash benchmarks/device_check.sh OUTDIR        # on the GPU machine, from a copy of the working tree that
#                                                 # carries benchmarks/wheels/ (git-ignored) along with it
#   DEVICE=cpu bash benchmarks/device_check.sh OUTDIR   # the same steps at tiny sizes on a CPU (`nox -s gpu_rehearsal`)
#
# OUTDIR receives two files only, rewritten after every step: summary.json (every figure; benchmarks/README.md says
# what each means) and logs.tar.gz (each step's log). Everything else (the installed wheels, the sddkd home and its
# shared compile cache, runs and checkpoints) stays in WORK (default: a fresh folder under /tmp).
# PYTHON (default python3) and WHEELS (default benchmarks/wheels) may point elsewhere.
set -u
cd "$(dirname "$0")/.."
OUTDIR="${1:?usage: bash benchmarks/device_check.sh OUTDIR}"
mkdir -p "$OUTDIR" || exit 2
WORK="${WORK:-$(mktemp -d "${TMPDIR:-/tmp}/sddkd-device-check.XXXXXX")}"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
# The driver's own limit: its steps end inside it; the summary is already written after each of them.
[ "${DEVICE:-cuda}" = cpu ] && LIMIT=1300 || LIMIT=500  # 8 minutes 20 s on a GPU, at most
exec timeout -k 10 "${CHECK_LIMIT:-$LIMIT}" "${PYTHON:-python3}" benchmarks/device_check.py run "${DEVICE:-cuda}" "$OUTDIR" "$WORK"
