"""`sddkd report --analysis`: a report.md section that links each run's `sddkd analyze` figures (no torch).

It only looks for `<run_dir>/analysis/analysis.json` and the PNGs next to it; runs never analysed are listed
with the command that analyses them.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from sddkd.files import read_json
from sddkd.report.analysis_files import ANALYSIS_JSON, FIGURES, analysis_dir
from sddkd.report.records import Run


def _link(target: Path, start: Path) -> str:
    """A Markdown link target relative to the report's folder, with forward slashes, spaces escaped."""
    return os.path.relpath(target.resolve(), start.resolve()).replace(os.sep, "/").replace(" ", "%20")


def _headline(numbers: dict[str, Any]) -> str:
    """The few numbers a reader wants before the pictures (missing keys are skipped, not fatal)."""
    parts = []
    top1 = numbers.get("top1") or {}
    if "teacher" in top1 and "student" in top1:
        parts.append(f"top-1 teacher {top1['teacher']:.2f}%, student {top1['student']:.2f}%")
    agreement = (numbers.get("agreement") or {}).get("top1")
    if isinstance(agreement, int | float):
        parts.append(f"agreement {100 * agreement:.2f}%")
    kl = ((numbers.get("agreement") or {}).get("per_scale") or {}).get("1", {}).get("kl")
    temperature = (numbers.get("inputs") or {}).get("temperature")
    if isinstance(kl, int | float):
        parts.append(f"KL(t‖s) {kl:.4f}" + (f" at T={temperature:g}" if isinstance(temperature, int | float) else ""))
    correlation = (numbers.get("correlation_difference") or {}).get("mean")
    if isinstance(correlation, int | float):
        parts.append(f"correlation difference {correlation:.4f}")
    calibration = numbers.get("calibration") or {}
    ece = [calibration.get(who, {}).get("ece") for who in ("teacher", "student")]
    if all(isinstance(value, int | float) for value in ece):
        parts.append(f"ECE teacher {100 * ece[0]:.2f}%, student {100 * ece[1]:.2f}%")
    return "; ".join(parts)


def analysis_markdown(runs: Sequence[Run], out_dir: Path) -> str:
    """The `## Analysis` section: per analysed run its headline numbers and its figures, linked from `out_dir`."""
    lines = ["## Analysis", ""]
    missing = []
    for run in sorted(runs, key=lambda r: r.run_name):
        folder = analysis_dir(run.path)
        numbers = read_json(folder / ANALYSIS_JSON)
        if not isinstance(numbers, dict):
            if run.method != "vanilla":
                missing.append(run)
            continue
        lines += [f"### {run.run_name}", ""]
        headline = _headline(numbers)
        if headline:
            lines += [headline + f" ([numbers]({_link(folder / ANALYSIS_JSON, out_dir)}))", ""]
        for key, name in FIGURES.items():
            if (folder / name).is_file():
                lines.append(f"![{key.replace('_', ' ')}]({_link(folder / name, out_dir)})")
        lines.append("")
    if missing:
        lines += ["Not analysed yet (`sddkd analyze --checkpoint RUN_DIR` writes RUN_DIR/analysis/):", ""]
        lines += [f"- {run.run_name}" for run in missing]
        lines.append("")
    return "\n".join(lines)
