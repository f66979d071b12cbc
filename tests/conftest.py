"""Shared test settings: small thread counts and deterministic torch on the 2-core CI machine."""

import os

os.environ.setdefault("OMP_NUM_THREADS", "2")
