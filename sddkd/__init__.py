"""sddkd: Scale Decoupled Distillation fused with Logit Standardization, on top of KD/DKD.

Importing the package is cheap: it imports neither torch nor the CLI. The Python API is loaded on first use:

    from sddkd import load_config, train, list_presets
    cfg = load_config("synthetic/kd/res20_res8", overrides=["method.temperature=8"])
    record = train(cfg, out="logs")  # the run's result.json as a dict
"""

from __future__ import annotations

import re
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any


def _version() -> str:
    """The installed distribution's version; in a checkout that was never installed (PYTHONPATH=repo), the one
    pyproject.toml declares, so run records still say which code ran."""
    try:
        return version("sddkd")
    except PackageNotFoundError:
        pyproject = Path(__file__).resolve().parent.parent / "pyproject.toml"
        found = re.search(r'^version = "([^"]+)"', pyproject.read_text(), re.M) if pyproject.is_file() else None
        return found.group(1) if found else "0+unknown"


__version__ = _version()

__all__ = ["load_config", "train", "list_presets", "__version__"]


def __getattr__(name: str) -> Any:
    # PEP 562 lazy attributes: `import sddkd` stays torch-free, `sddkd.train` imports the engine when first used.
    if name in ("load_config", "list_presets"):
        from sddkd import config

        return getattr(config, name)
    if name == "train":
        from sddkd.api import train

        return train
    raise AttributeError(f"module 'sddkd' has no attribute {name!r}")
