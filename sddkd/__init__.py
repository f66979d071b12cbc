"""sddkd: Scale Decoupled Distillation fused with Logit Standardization, on top of KD/DKD.

Importing the package is cheap: it imports neither torch nor the CLI.
"""

import re
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path


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
