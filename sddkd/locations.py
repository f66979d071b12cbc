"""Where sddkd keeps things by default, from the environment; no torch import (the CLI shows these before work).

- `SDDKD_DATA`: the default data root (the config's `data.root` and `--data-root`), else `data` in the working folder.
- The teacher store: `$SDDKD_HOME`, else `$XDG_CACHE_HOME/sddkd`, else `~/.cache/sddkd`.
"""

from __future__ import annotations

import os
from pathlib import Path

from sddkd.errors import UserError


def default_data_root() -> str:
    """$SDDKD_DATA, else `data` (relative to the working folder, as before)."""
    return os.environ.get("SDDKD_DATA") or "data"


def sddkd_home() -> Path:
    """$SDDKD_HOME, else $XDG_CACHE_HOME/sddkd, else ~/.cache/sddkd; a folder, or a path where one can be made.

    Raises UserError when the path (or a part of it) is a file: every later mkdir under it would fail."""
    home = os.environ.get("SDDKD_HOME")
    if home:
        return _a_folder(Path(home).expanduser(), "SDDKD_HOME")
    cache = os.environ.get("XDG_CACHE_HOME")
    # The XDG spec says a relative XDG_CACHE_HOME is invalid and must be ignored.
    base = Path(cache).expanduser() if cache and Path(cache).expanduser().is_absolute() else Path.home() / ".cache"
    return _a_folder(base / "sddkd", "XDG_CACHE_HOME" if cache else "HOME")


def _a_folder(path: Path, variable: str) -> Path:
    for part in (path, *path.parents):
        if part.exists():
            if not part.is_dir():
                shown = "it" if part == path else f"its part {part}"
                raise UserError(
                    f"the sddkd home {path} (from ${variable}) cannot be a folder because {shown} is a file; "
                    "point SDDKD_HOME at a folder"
                )
            break
    return path


def teacher_store_path(dataset: str, arch: str) -> Path:
    """Where `sddkd fetch-teachers` keeps a teacher (the layout `sddkd.teachers` documents)."""
    return sddkd_home() / "teachers" / dataset / f"{arch}.pth"
