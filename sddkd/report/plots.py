"""`sddkd report --plots`: PNG figures on matplotlib's Agg canvas (the optional `plots` extra; no torch).

Per dataset and teacher -> student pair, into the plots folder:
- `<dataset>-<teacher>_<student>-by-epoch.png`: test top-1 (left) and training loss (right) against epoch, from
  metrics.jsonl. One colour per series (method, M and any swept setting), its seed mean as a line and ± one sample
  std as a band; the student trained alone (vanilla) in grey, the teacher's measured accuracy as a labelled line.
- `<dataset>-<teacher>_<student>-temperature.png`: for methods that learn their temperature (CTKD), T at the end
  of each epoch (`method_metrics` of metrics.jsonl), one colour per series; absent when no run of the pair learns one.
- `<dataset>-<teacher>_<student>-top1-by-M.png`: best-epoch top-1 against M (mean ± std over finished seeds),
  one line per method, published numbers as hollow diamonds, the vanilla student and the teacher as labelled lines.
Figures are built without pyplot, so no global backend is switched and nothing opens a window.
"""

from __future__ import annotations

import io
import json
import re
import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sddkd.files import write_bytes_atomic
from sddkd.methods import report_rank
from sddkd.report.anchors import scales_label
from sddkd.report.records import Report, ReportError, Row, Run
from sddkd.rundir.naming import short_keys

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

PLOTS_HINT = "--plots needs matplotlib, which is not installed: pip install 'sddkd[plots]'"
Point = tuple[int, float | None, float | None]  # epoch, test top-1 (None: not evaluated), training loss


def require_matplotlib() -> None:
    """Raise ReportError naming the extra to install when matplotlib is missing."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise ReportError(PLOTS_HINT) from None


def read_metrics(run: Run, warnings: list[str]) -> list[Point]:
    """(epoch, test top-1, summed training loss) of each line of a run's metrics.jsonl; bad lines are skipped."""
    path = run.path / "metrics.jsonl"
    if not path.is_file():
        return []
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as error:
        warnings.append(f"{path}: unreadable ({error}): no curve drawn")
        return []
    points: dict[int, Point] = {}
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
            top1 = record.get("test_top1")
            losses = record.get("losses") or {}
            loss = float(sum(losses.values())) if losses else None
            epoch = int(record["epoch"])
            points[epoch] = (epoch, None if top1 is None else float(top1), loss)  # a resumed epoch: the last one
        except (ValueError, KeyError, TypeError, AttributeError):
            warnings.append(f"{path}: line {number} is not an epoch record: skipped")
    return sorted(points.values())


def read_method_metric(run: Run, name: str) -> dict[int, float]:
    """epoch -> the method's per-epoch number `name` (`method_metrics` of metrics.jsonl, e.g. CTKD's learned
    temperature); empty when the run records none. Bad lines were already reported by `read_metrics`."""
    path = run.path / "metrics.jsonl"
    try:
        lines = path.read_text(encoding="utf-8").splitlines() if path.is_file() else []
    except (OSError, UnicodeDecodeError):
        return {}
    values: dict[int, float] = {}
    for line in lines:
        try:
            record = json.loads(line)
            value = (record.get("method_metrics") or {}).get(name)
            if value is not None:
                values[int(record["epoch"])] = float(value)
        except (ValueError, KeyError, TypeError, AttributeError):
            continue
    return values


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text)


def _method_rank(method: str) -> tuple[int, ...]:
    return report_rank(method)


def _settings_label(recipe: dict[str, Any], keys: Sequence[str]) -> str:
    names = short_keys(list(keys))
    return " ".join(f"{names[k]}={recipe.get(k)}" for k in keys if recipe)


def _series_label(run: Run, keys: Sequence[str]) -> str:
    settings = _settings_label(run.recipe, keys)
    if run.scales is None:
        base = f"{run.student} alone (vanilla)"
    else:
        base = f"{run.method} M={scales_label(run.scales)}"
    return f"{base} {settings}".strip() + (" [partial]" if run.partial else "")


def _save(figure: Figure, path: Path) -> Path:
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(figure)  # attach the Agg canvas: PNG rendering without pyplot's global state
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    return write_bytes_atomic(path, buffer.getvalue())


def _mean_band(curves: list[dict[int, float]]) -> tuple[list[int], list[float], list[float]]:
    """Per epoch: the mean over the seeds that reached it, and the sample std (0 with one seed)."""
    epochs = sorted(set().union(*curves))
    means, stds = [], []
    for epoch in epochs:
        values = [curve[epoch] for curve in curves if epoch in curve]
        means.append(statistics.fmean(values))
        stds.append(statistics.stdev(values) if len(values) > 1 else 0.0)
    return epochs, means, stds


def _draw(axes: Axes, curves: list[dict[int, float]], colour: str, label: str, seeds: int) -> None:
    epochs, means, stds = _mean_band(curves)
    shown = f"{label} (n={seeds})"
    axes.plot(epochs, means, "-o" if len(epochs) < 3 else "-", color=colour, linewidth=1.5, markersize=3, label=shown)
    if seeds > 1:
        low = [m - s for m, s in zip(means, stds)]
        high = [m + s for m, s in zip(means, stds)]
        axes.fill_between(epochs, low, high, color=colour, alpha=0.2, linewidth=0)


def _teacher_line(axes: Axes, runs: Sequence[Run], teacher: str) -> None:
    """The teacher's test top-1 as the distillation runs measured it (the same checkpoint: one value)."""
    measured = [r.teacher_top1 for r in runs if r.teacher_top1 is not None]
    if measured:
        value = statistics.fmean(measured)
        axes.axhline(value, color="black", linestyle=":", linewidth=1.2, label=f"teacher {teacher} ({value:.1f}%)")


def _epoch_figure(
    title: str, teacher: str, runs: Sequence[Run], keys: Sequence[str], warnings: list[str]
) -> Figure | None:
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    series: dict[str, list[list[Point]]] = {}
    for run in sorted(runs, key=lambda r: (r.teacher is not None, _method_rank(r.method), r.scales or (), r.seed)):
        points = read_metrics(run, warnings)
        if points:
            series.setdefault(_series_label(run, keys), []).append(points)
    if not series:
        return None
    figure = Figure(figsize=(12, 4.5))
    accuracy, loss = figure.subplots(1, 2)
    for index, (label, members) in enumerate(series.items()):
        vanilla = label.endswith("(vanilla)") or "(vanilla)" in label
        colour = "grey" if vanilla else f"C{index % 10}"
        top1 = [{e: t for e, t, _ in points if t is not None} for points in members]
        losses = [{e: v for e, _, v in points if v is not None} for points in members]
        if any(top1):
            _draw(accuracy, [c for c in top1 if c], colour, label, len(members))
        if any(losses):
            _draw(loss, [c for c in losses if c], colour, label, len(members))
    _teacher_line(accuracy, runs, teacher)
    accuracy.set(xlabel="epoch", ylabel="test top-1 (%)", title=f"{title}: test top-1")
    loss.set(xlabel="epoch", ylabel="training loss (weighted sum of terms)", title=f"{title}: training loss")
    for axes in (accuracy, loss):
        axes.xaxis.set_major_locator(MaxNLocator(integer=True))  # epochs are whole numbers
        axes.grid(alpha=0.3)
    accuracy.legend(fontsize="small")
    figure.text(0.5, -0.02, "line: mean over seeds; band: ± 1 sample std; n: seeds", ha="center", fontsize="small")
    return figure


def _temperature_figure(title: str, runs: Sequence[Run], keys: Sequence[str]) -> Figure | None:
    """The learned temperature against epoch, one colour per series (CTKD runs; other methods record none)."""
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    series: dict[str, list[dict[int, float]]] = {}
    for run in sorted(runs, key=lambda r: (_method_rank(r.method), r.scales or (), r.seed)):
        curve = read_method_metric(run, "temperature")
        if curve:
            series.setdefault(_series_label(run, keys), []).append(curve)
    if not series:
        return None
    figure = Figure(figsize=(6.5, 4.5))
    axes = figure.subplots()
    for index, (label, curves) in enumerate(series.items()):
        _draw(axes, curves, f"C{index % 10}", label, len(curves))
    axes.set(xlabel="epoch", ylabel="temperature T (end of epoch)", title=f"{title}: learned temperature")
    axes.xaxis.set_major_locator(MaxNLocator(integer=True))
    axes.grid(alpha=0.3)
    axes.legend(fontsize="small")
    return figure


def _scales_figure(
    title: str, teacher: str, rows: Sequence[Row], students: Sequence[Row], runs: Sequence[Run], keys: Sequence[str]
) -> Figure | None:  # fmt: skip
    from matplotlib.figure import Figure

    if not any(row.best_top1 for row in rows):
        return None
    all_scales = sorted({row.scales or (1,) for row in rows}, key=lambda s: (len(s), s))

    def x(row: Row) -> int:
        return all_scales.index(row.scales or (1,))

    figure = Figure(figsize=(6.5, 4.5))
    axes = figure.add_subplot()

    def series_of(row: Row) -> tuple[str, int, str]:
        return (row.method, row.epochs, _settings_label(row.recipe, keys))

    series = sorted({series_of(row) for row in rows}, key=lambda k: (_method_rank(k[0]), k))
    several_lengths = len({epochs for _, epochs, _ in series}) > 1
    for index, key in enumerate(series):
        method, epochs, settings = key
        colour = f"C{index % 10}"
        members = sorted((r for r in rows if series_of(r) == key), key=x)
        label = " ".join(p for p in (method, f"({epochs} epochs)" if several_lengths else "", settings) if p)
        measured = [(x(r), r.best_top1) for r in members if r.best_top1]
        if measured:
            xs, stats = [m[0] for m in measured], [m[1] for m in measured]
            means, stds = [s.mean for s in stats], [s.std or 0.0 for s in stats]
            axes.errorbar(xs, means, yerr=stds, color=colour, marker="o", capsize=3, label=label)
        published = [(x(r), r.published.top1) for r in members if r.published]
        if published:
            xs, values = [p[0] for p in published], [p[1] for p in published]
            axes.scatter(xs, values, marker="D", facecolors="none", edgecolors=colour, label=f"{method} published")
    for row, style in zip(students, ("--", "-.", "--"), strict=False):
        if row.best_top1:
            label = f"{row.student} alone (vanilla, {row.best_top1.mean:.1f}%)"
            axes.axhline(row.best_top1.mean, color="grey", linestyle=style, linewidth=1, label=label)
    _teacher_line(axes, runs, teacher)
    axes.set_xticks(range(len(all_scales)), [scales_label(s) for s in all_scales])
    axes.set(xlabel="scales M", ylabel="best-epoch top-1 (%)", title=title)
    axes.grid(alpha=0.3)
    axes.legend(fontsize="small")
    return figure


def _of_pair(item: Run | Row, dataset: str, teacher: str, student: str) -> bool:
    return (item.dataset, item.teacher, item.student) == (dataset, teacher, student)


def _vanilla_of(item: Run | Row, dataset: str, arch: str) -> bool:
    return item.dataset == dataset and item.teacher is None and item.student == arch


def write_plots(report: Report, out_dir: Path) -> list[Path]:
    """Draw both figures for every (dataset, teacher -> student) pair; returns the PNG files written."""
    written = []
    keys = report.setting_keys
    pairs = sorted({(r.dataset, r.teacher, r.student) for r in report.runs if r.teacher is not None})
    for dataset, teacher, student in pairs:
        stem = _slug(f"{dataset}-{teacher}_{student}")
        title = f"{dataset}: {teacher}→{student}"
        distilled = [r for r in report.runs if _of_pair(r, dataset, teacher, student)]
        alone = [r for r in report.runs if _vanilla_of(r, dataset, student)]
        curves = _epoch_figure(title, teacher, distilled + alone, keys, report.warnings)
        if curves is not None:
            written.append(_save(curves, out_dir / f"{stem}-by-epoch.png"))
        temperatures = _temperature_figure(title, distilled, keys)
        if temperatures is not None:
            written.append(_save(temperatures, out_dir / f"{stem}-temperature.png"))
        rows = [r for r in report.rows if _of_pair(r, dataset, teacher, student)]
        students = [r for r in report.rows if _vanilla_of(r, dataset, student)]
        by_scales = _scales_figure(title, teacher, rows, students, distilled, keys)
        if by_scales is not None:
            written.append(_save(by_scales, out_dir / f"{stem}-top1-by-M.png"))
    return written
