"""The scales M of SDD: parsing and validation (no torch import, so config and CLI stay light).

M is an ordered tuple of distinct positive ints that starts with 1: (1,), (1, 2), (1, 4), (1, 2, 4).
Region 0 is the global 1x1 cell; N = sum(m*m for m in M) regions in all.
"""

from __future__ import annotations

import re
import reprlib
from collections.abc import Iterable

Scales = tuple[int, ...]

SCALES_RULE = (
    "M must be distinct positive integers in increasing order starting with 1, "
    "e.g. 1 or 1,2 or 1,2,4 (brackets and spaces are allowed)"
)

_TOKEN = re.compile(r"^\s*\d+\s*$")


def _shown(value: object) -> str:
    """The value as the message shows it: a short repr (a long or deeply nested one is cut, never expanded)."""
    short = reprlib.Repr()  # attributes, not constructor arguments: those need Python 3.12
    short.maxlist, short.maxtuple, short.maxstring, short.maxother, short.maxlevel = 6, 6, 40, 40, 1
    return short.repr(value)


def parse_scales(value: str | int | Iterable[int]) -> Scales:
    """Parse "1,2,4", "[1, 2, 4]", "1 2 4", 1 or a sequence of ints into a validated tuple.

    Raises ValueError stating the rule for anything else ("2,4", "1,1", "0", "x", "").
    """
    if isinstance(value, bool):
        raise ValueError(f"invalid scales {_shown(value)}: {SCALES_RULE}")
    if isinstance(value, int):
        items: list[int] = [value]
    elif isinstance(value, str):
        text = value.strip()
        if text.startswith(("[", "(")) and text.endswith(("]", ")")):
            text = text[1:-1]
        tokens = [t for t in re.split(r"[,\s]+", text) if t]
        if not tokens or not all(_TOKEN.match(t) for t in tokens):
            raise ValueError(f"invalid scales {_shown(value)}: {SCALES_RULE}")
        items = [int(t) for t in tokens]
    else:
        try:
            items = list(value)
        except TypeError:
            raise ValueError(f"invalid scales {_shown(value)}: {SCALES_RULE}") from None
        if not all(isinstance(m, int) and not isinstance(m, bool) for m in items):
            raise ValueError(f"invalid scales {_shown(value)}: {SCALES_RULE}")
    if not items or items[0] != 1 or any(b <= a for a, b in zip(items, items[1:])):
        raise ValueError(f"invalid scales {_shown(value)}: {SCALES_RULE}")
    return tuple(items)


def num_regions(scales: Scales) -> int:
    """N = sum of m^2: 1, 5, 17, 21 for (1,), (1,2), (1,4), (1,2,4)."""
    return sum(m * m for m in scales)


def format_scales(scales: Scales) -> str:
    """The compact spelling used in run names and tables: (1, 2, 4) -> "1-2-4"."""
    return "-".join(str(m) for m in scales)
