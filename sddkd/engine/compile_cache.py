"""A persistent compile cache shared by the runs that compile the same step.

Without it each process compiles its step cold (25-60 s on a GPU, minutes on a CPU): most of a suite's overhead.
Inductor already keys its FX-graph and AOTAutograd caches by the graph, the inputs, torch and the device, so a cache
folder can be shared safely; one folder per (teacher, student, per-process batch, M, torch, device) keeps each
small and names what it holds. It lives under the sddkd home (`<home>/compile-cache/...`). Inductor reads its cache
folder from the environment when it first compiles, so this runs before the step is compiled; a folder the user chose
is kept.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import torch

from sddkd.locations import sddkd_home

CACHE_ENV = "TORCHINDUCTOR_CACHE_DIR"


def compile_cache_key(teacher: str | None, student: str, batch: int, scales: str, device: str) -> str:
    """A folder name: the pair, the per-process batch, M, torch's version and the device's name."""
    parts = [teacher or "none", student, f"b{batch}", f"M{scales}", f"torch{torch.__version__}", device]
    return re.sub(r"[^A-Za-z0-9._+-]+", "_", "-".join(parts))


def use_compile_cache(key: str) -> str:
    """Point inductor's caches (FX graphs, AOTAutograd, Triton kernels) at the shared folder of `key`; return the
    folder in use (the one already set, if any)."""
    chosen = os.environ.get(CACHE_ENV)
    if chosen and os.path.abspath(chosen) != _inductor_default():
        return chosen
    folder = sddkd_home() / "compile-cache" / key
    folder.mkdir(parents=True, exist_ok=True)
    os.environ[CACHE_ENV] = str(folder)
    # On by default in recent torch; turned on here where an older release leaves them off, unless the user chose.
    for name in ("TORCHINDUCTOR_FX_GRAPH_CACHE", "TORCHINDUCTOR_AUTOGRAD_CACHE"):
        os.environ.setdefault(name, "1")
    _enable_in_loaded_config()
    return str(Path(folder))


def _inductor_default() -> str:
    """The folder inductor picks (and writes into the environment) when none is chosen: importing parts of torch
    can do that before the step compiles, so that value does not count as a choice."""
    try:
        from torch._inductor.runtime.cache_dir_utils import default_cache_dir
    except ImportError:  # an older layout: only an unset variable counts as no choice
        return ""
    return os.path.abspath(default_cache_dir())


def _enable_in_loaded_config() -> None:
    """The cache switches are read from the environment when inductor's config is imported, maybe already done."""
    import sys

    inductor = sys.modules.get("torch._inductor.config")
    if inductor is not None and os.environ.get("TORCHINDUCTOR_FX_GRAPH_CACHE") == "1":
        inductor.fx_graph_cache = True
    functorch = sys.modules.get("torch._functorch.config")
    if (
        functorch is not None
        and os.environ.get("TORCHINDUCTOR_AUTOGRAD_CACHE") == "1"
        and hasattr(functorch, "enable_autograd_cache")
    ):
        functorch.enable_autograd_cache = True
