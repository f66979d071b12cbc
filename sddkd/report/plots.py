"""`sddkd report --plots`: PNG figures on matplotlib's Agg canvas (the optional `plots` extra; no torch).

Per dataset and teacher -> student pair, into the plots folder:
- `<dataset>-<teacher>_<student>-top1-by-epoch.png`: test top-1 against epoch (from metrics.jsonl) for every
  run of the pair, one colour per (method, M), dashed while not finished, plus the student's vanilla runs;
- `<dataset>-<teacher>_<student>-top1-by-M.png`: best-epoch top-1 against M (mean ± std over finished seeds),
  one line per method, published numbers as hollow diamonds, vanilla student and teacher as horizontal lines.
Figures are built without pyplot, so no global backend is switched and nothing opens a window.
"""

from __future__ import annotations

import io
import json
import re
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from sddkd.files import write_bytes_atomic
from sddkd.report.anchors import scales_label
from sddkd.report.records import METHOD_ORDER, Report, ReportError, Row, Run

if TYPE_CHECKING:
    from matplotlib.figure import Figure

PLOTS_HINT = "--plots needs matplotlib, which is not installed: pip install 'sddkd[plots]'"


def require_matplotlib() -> None:
    """Raise ReportError naming the extra to install when matplotlib is missing."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise ReportError(PLOTS_HINT) from None


def read_metrics(run: Run, warnings: list[str]) -> list[tuple[int, float]]:
    """(epoch, test top-1) points of a run's metrics.jsonl; unreadable lines (a killed writer) are skipped."""
    path = run.path / "metrics.jsonl"
    if not path.is_file():
        return []
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as error:
        warnings.append(f"{path}: unreadable ({error}): no curve drawn")
        return []
    points = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
            points.append((int(record["epoch"]), float(record["test_top1"])))
        except (ValueError, KeyError, TypeError):
            warnings.append(f"{path}: line {number} is not an epoch record with test_top1: skipped")
    return sorted(points)


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text)


def _method_rank(method: str) -> int:
    return METHOD_ORDER.index(method) if method in METHOD_ORDER else len(METHOD_ORDER)


def _series_label(run: Run) -> str:
    if run.scales is None:
        return f"vanilla {run.student}"
    return f"{run.method} M={scales_label(run.scales)}"


def _save(figure: Figure, path: Path) -> Path:
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(figure)  # attach the Agg canvas: PNG rendering without pyplot's global state
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    return write_bytes_atomic(path, buffer.getvalue())


def _epoch_figure(title: str, runs: Sequence[Run], warnings: list[str]) -> Figure | None:
    from matplotlib.figure import Figure

    figure = Figure(figsize=(7.5, 4.5))
    axes = figure.add_subplot()
    colours: dict[str, int] = {}
    for run in runs:
        points = read_metrics(run, warnings)
        if not points:
            continue
        label = _series_label(run)
        first = label not in colours
        colour = colours.setdefault(label, len(colours))
        epochs, top1 = [p[0] for p in points], [p[1] for p in points]
        style = "-" if run.state == "finished" else "--"
        axes.plot(epochs, top1, style, color=f"C{colour % 10}", linewidth=1.2, label=label if first else None)
    if not colours:
        return None
    axes.set(xlabel="epoch", ylabel="test top-1 (%)", title=title)
    axes.grid(alpha=0.3)
    axes.legend(fontsize="small")
    return figure


def _scales_figure(title: str, rows: Sequence[Row], baselines: Sequence[Row]) -> Figure | None:
    from matplotlib.figure import Figure

    if not any(row.best_top1 for row in rows):
        return None
    all_scales = sorted({row.scales or (1,) for row in rows}, key=lambda s: (len(s), s))

    def x(row: Row) -> int:
        return all_scales.index(row.scales or (1,))

    figure = Figure(figsize=(6.5, 4.5))
    axes = figure.add_subplot()
    series = sorted({(row.method, row.epochs) for row in rows}, key=lambda k: (_method_rank(k[0]), k))
    several_lengths = len({epochs for _, epochs in series}) > 1
    for index, (method, epochs) in enumerate(series):
        colour = f"C{index % 10}"
        members = sorted((r for r in rows if (r.method, r.epochs) == (method, epochs)), key=x)
        label = f"{method} ({epochs} epochs)" if several_lengths else method
        measured = [(x(r), r.best_top1) for r in members if r.best_top1]
        if measured:
            xs, stats = [m[0] for m in measured], [m[1] for m in measured]
            means, stds = [s.mean for s in stats], [s.std or 0.0 for s in stats]
            axes.errorbar(xs, means, yerr=stds, color=colour, marker="o", capsize=3, label=label)
        published = [(x(r), r.published.top1) for r in members if r.published]
        if published:
            xs, values = [p[0] for p in published], [p[1] for p in published]
            label = f"{method} published"
            axes.scatter(xs, values, marker="D", facecolors="none", edgecolors=colour, label=label)
    for row, style in zip(baselines, ("--", ":", "-.", "--"), strict=False):
        if row.best_top1:
            label = f"vanilla {row.student}"
            axes.axhline(row.best_top1.mean, color="grey", linestyle=style, linewidth=1, label=label)
    axes.set_xticks(range(len(all_scales)), [scales_label(s) for s in all_scales])
    axes.set(xlabel="scales M", ylabel="best-epoch top-1 (%)", title=title)
    axes.grid(alpha=0.3)
    axes.legend(fontsize="small")
    return figure


def _of_pair(item: Run | Row, dataset: str, teacher: str, student: str) -> bool:
    return (item.dataset, item.teacher, item.student) == (dataset, teacher, student)


def _vanilla_of(item: Run | Row, dataset: str, archs: tuple[str, ...]) -> bool:
    return item.dataset == dataset and item.teacher is None and item.student in archs


def write_plots(report: Report, out_dir: Path) -> list[Path]:
    """Draw both figures for every (dataset, teacher -> student) pair; returns the PNG files written."""
    written = []
    pairs = sorted({(r.dataset, r.teacher, r.student) for r in report.runs if r.teacher is not None})
    for dataset, teacher, student in pairs:
        stem = _slug(f"{dataset}-{teacher}_{student}")
        title = f"{dataset}: {teacher}→{student}"
        runs = [r for r in report.runs if _of_pair(r, dataset, teacher, student)]
        runs += [r for r in report.runs if _vanilla_of(r, dataset, (student,))]
        curves = _epoch_figure(title, runs, report.warnings)
        if curves is not None:
            written.append(_save(curves, out_dir / f"{stem}-top1-by-epoch.png"))
        rows = [r for r in report.rows if _of_pair(r, dataset, teacher, student)]
        baselines = [r for r in report.rows if _vanilla_of(r, dataset, (student, teacher))]
        by_scales = _scales_figure(title, rows, baselines)
        if by_scales is not None:
            written.append(_save(by_scales, out_dir / f"{stem}-top1-by-M.png"))
    return written
