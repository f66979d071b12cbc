"""The analysis figures, sized for a paper: 3.5 in (one column) or 7 in (two columns) wide, 300 dpi, 8 pt text.

Drawn on matplotlib's Agg canvas without pyplot (no global backend, no window) and written atomically. Every
function takes the JSON-ready numbers of `sddkd.analysis.run` (plus embedding coordinates), never a model.
"""

from __future__ import annotations

import functools
import io
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from sddkd.errors import UserError
from sddkd.files import write_bytes_atomic

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

ONE_COLUMN, TWO_COLUMNS = 3.5, 7.0  # inches
DPI = 300
TEACHER, STUDENT, BASELINE = "#1f77b4", "#d62728", "#7f7f7f"
MATPLOTLIB_HINT = "sddkd analyze draws with matplotlib, which is not installed: pip install 'sddkd[analysis]'"
STYLE: Any = {  # Any: matplotlib types rc keys as a Literal of every name
    "font.size": 8, "axes.titlesize": 8, "axes.labelsize": 8, "legend.fontsize": 7, "xtick.labelsize": 7,
    "ytick.labelsize": 7, "axes.spines.top": False, "axes.spines.right": False,
}  # fmt: skip


def require_matplotlib() -> None:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise UserError(MATPLOTLIB_HINT) from None


F = TypeVar("F", bound=Callable[..., Path])


def styled(draw: F) -> F:
    """Draw under the paper style: rc values are read when each text and artist is made, so the whole function
    runs inside the context (not only the figure's creation)."""

    @functools.wraps(draw)
    def wrapper(*args: Any, **kwargs: Any) -> Path:
        import matplotlib

        with matplotlib.rc_context(STYLE):
            return draw(*args, **kwargs)

    return wrapper  # type: ignore[return-value]


def _figure(width: float, height: float, rows: int = 1, cols: int = 1) -> tuple[Figure, list[Axes]]:
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), dpi=DPI, layout="constrained")
    return figure, figure.subplots(rows, cols, squeeze=False).ravel().tolist()


def _save(figure: Figure, path: Path) -> Path:
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(figure)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=DPI)
    return write_bytes_atomic(path, buffer.getvalue())


def _scale_labels(scales: list[str]) -> list[str]:
    return [f"{m}×{m}" for m in scales]


@styled
def plot_agreement(per_scale: dict[str, dict[str, float]], temperature: float, path: Path) -> Path:
    scales = list(per_scale)
    x = list(range(len(scales)))
    figure, (left, right) = _figure(TWO_COLUMNS, 2.4, 1, 2)
    left.bar(x, [100 * per_scale[m]["agreement"] for m in scales], color=STUDENT, width=0.6)
    left.set(xticks=x, xticklabels=_scale_labels(scales), xlabel="region scale", ylabel="top-1 agreement (%)",
             ylim=(0, 100), title="(a) top-1 agreement with the teacher, per cell")  # fmt: skip
    width = 0.38
    right.bar([i - width / 2 for i in x], [per_scale[m]["kl"] for m in scales], width, color=STUDENT, label="raw")
    right.bar([i + width / 2 for i in x], [per_scale[m]["kl_standardized"] for m in scales], width,
              color="#ff9896", label="z-scored (LSKD)")  # fmt: skip
    highest = max([per_scale[m]["kl"] for m in scales] + [per_scale[m]["kl_standardized"] for m in scales])
    top = 1.3 * highest if highest > 0 else 1.0  # room for the legend above the bars
    right.set(xticks=x, xticklabels=_scale_labels(scales), xlabel="region scale", ylabel="KL(teacher ‖ student)",
              ylim=(0, top), title=f"(b) mean KL at T = {temperature:g}, per cell")  # fmt: skip
    right.legend(frameon=False, loc="upper left", ncols=2)
    return _save(figure, path)


@styled
def plot_correlation(matrix: list[list[float]], mean: float, path: Path) -> Path:
    figure, (ax,) = _figure(ONE_COLUMN, 3.1)
    image = ax.imshow(matrix, cmap="PuBuGn", vmin=0, interpolation="nearest")
    colorbar = figure.colorbar(image, ax=ax, shrink=0.85)
    colorbar.set_label("|student − teacher| class-mean logit")
    ax.set(xlabel="logit of class", ylabel="true class", title=f"correlation difference (mean {mean:.3f})")
    ax.spines[["top", "right"]].set_visible(True)
    return _save(figure, path)


def _step_histograms(ax: Axes, histogram: dict[str, Any], names: dict[str, tuple[str, str]]) -> None:
    edges = histogram["edges"]
    # The teacher wide and solid, the student thin and dashed: where they coincide (after the z-score) both show.
    for (key, (label, color)), (width, line) in zip(names.items(), ((1.8, "-"), (1.0, "--")), strict=False):
        counts = histogram["counts"][key]
        ax.stairs(counts, edges, label=label, color=color, linewidth=width, linestyle=line, fill=False)
    ax.ticklabel_format(axis="x", useOffset=False)


@styled
def plot_logit_moments(histograms: dict[str, dict[str, Any]], path: Path) -> Path:
    figure, axes = _figure(TWO_COLUMNS, 4.2, 2, 2)
    panels = [("mean", "(a) per-sample logit mean", "mean over classes"),
              ("std", "(b) per-sample logit std", "std over classes"),
              ("mean_standardized", "(c) mean after z-score (0 by construction)", "mean over classes"),
              ("std_standardized", "(d) std after z-score (1 by construction)", "std over classes")]  # fmt: skip
    for ax, (key, title, xlabel) in zip(axes, panels, strict=True):
        names = {"teacher": ("teacher", TEACHER), "student": ("student", STUDENT)}
        _step_histograms(ax, histograms[key], names)
        ax.set(title=title, xlabel=xlabel, ylabel="test samples")
    axes[0].legend(frameon=False)
    return _save(figure, path)


@styled
def plot_top1_vs_std(bins: dict[str, list[Any]], path: Path) -> Path:
    figure, (ax,) = _figure(ONE_COLUMN, 2.6)
    ax.plot(bins["std_mean"], bins["student_top1"], "o-", color=STUDENT, markersize=3, label="student")
    ax.plot(bins["std_mean"], bins["teacher_top1"], "s--", color=TEACHER, markersize=3, label="teacher")
    ax.set(xlabel="teacher logit std (bin mean)", ylabel="top-1 (%)", ylim=(-2, 102),
           title=f"top-1 in {len(bins['samples'])} equal-count bins of teacher std")  # fmt: skip
    ax.legend(frameon=False)
    return _save(figure, path)


@styled
def plot_sdd_regions(per_scale: dict[str, dict[str, float]], by_group: dict[str, Any], path: Path) -> Path:
    scales = list(per_scale)
    x = list(range(len(scales)))
    consistent = [100 * per_scale[m]["consistent"] for m in scales]
    lost = [100 * per_scale[m]["global_right_local_wrong"] for m in scales]
    found = [100 * per_scale[m]["global_wrong_local_right"] for m in scales]
    figure, (left, right) = _figure(TWO_COLUMNS, 2.5, 1, 2)
    left.bar(x, consistent, 0.6, color="#9ecae1", label="consistent")
    left.bar(x, lost, 0.6, bottom=consistent, color="#fd8d3c", label="complementary: global right, cell wrong")
    top = [c + w for c, w in zip(consistent, lost, strict=True)]
    left.bar(x, found, 0.6, bottom=top, color="#74c476", label="complementary: global wrong, cell right")
    left.set(xticks=x, xticklabels=_scale_labels(scales), xlabel="region scale", ylabel="regions (%)",
             ylim=(0, 100), title="(a) teacher's cells vs its global prediction")  # fmt: skip
    left.legend(frameon=True, loc="lower left", framealpha=0.9, fontsize=6)
    groups = [("with", by_group["with_complementary"]), ("without", by_group["without_complementary"])]
    values = [g["student_top1"] if g["student_top1"] is not None else 0.0 for _, g in groups]
    bars = right.bar([0, 1], values, 0.6, color=[STUDENT, "#ff9896"])
    for bar, (_, group) in zip(bars, groups, strict=True):
        text = "no samples" if group["student_top1"] is None else f"n = {group['samples']}"
        right.annotate(text, (bar.get_x() + bar.get_width() / 2, bar.get_height()), ha="center", va="bottom",
                       xytext=(0, 2), textcoords="offset points", fontsize=7)  # fmt: skip
    right.set(xticks=[0, 1], xticklabels=["with complementary\nregions", "no complementary\nregions"],
              ylabel="student top-1 (%)", ylim=(0, 105), title="(b) student top-1 by the teacher's cells")  # fmt: skip
    return _save(figure, path)


def _reliability_panel(ax: Axes, data: dict[str, Any], who: str, color: str) -> None:
    edges = data["edges"]
    width = edges[1] - edges[0]
    centers = [(a + b) / 2 for a, b in zip(edges[:-1], edges[1:], strict=True)]
    filled = [i for i, acc in enumerate(data["accuracy"]) if acc is not None]
    ax.bar([centers[i] for i in filled], [data["accuracy"][i] for i in filled], width, color=color,
           edgecolor="white", linewidth=0.5, label="accuracy")  # fmt: skip
    ax.bar([centers[i] for i in filled], [data["confidence"][i] - data["accuracy"][i] for i in filled], width,
           bottom=[data["accuracy"][i] for i in filled], color="none", edgecolor="black", hatch="////",
           linewidth=0.4, label="gap to confidence")  # fmt: skip
    ax.plot([0, 1], [0, 1], "--", color="black", linewidth=0.8, label="perfect calibration")
    ax.set(xlim=(0, 1), ylim=(0, 1), xlabel="confidence (max softmax)", ylabel="accuracy",
           title=f"{who}: ECE {100 * data['ece']:.2f}%, top-1 {data['top1']:.1f}%")  # fmt: skip


@styled
def plot_reliability(teacher: dict[str, Any], student: dict[str, Any], path: Path) -> Path:
    figure, (left, right) = _figure(TWO_COLUMNS, 3.0, 1, 2)
    _reliability_panel(left, teacher, "(a) teacher", TEACHER)
    _reliability_panel(right, student, "(b) student", STUDENT)
    left.legend(frameon=False, loc="upper left")
    return _save(figure, path)


@styled
def plot_per_class(per_class: dict[str, list[float | None]], path: Path) -> Path:
    teacher = per_class["teacher"]
    score = [value if value is not None else -1.0 for value in teacher]  # classes without samples go last
    order = sorted(range(len(teacher)), key=lambda k: (-score[k], k))
    figure, (ax,) = _figure(TWO_COLUMNS, 2.4)
    rank = list(range(1, len(order) + 1))
    styles = {"teacher": ("teacher", TEACHER, "-"), "student": ("student", STUDENT, "-"),
              "baseline": ("baseline (vanilla student)", BASELINE, ":")}  # fmt: skip
    for key, (label, color, line) in styles.items():
        if key in per_class:
            values = [per_class[key][k] for k in order]
            ax.plot(rank, [v if v is not None else float("nan") for v in values], line, color=color, label=label,
                    linewidth=1.0, marker="o" if len(order) <= 20 else None, markersize=2.5)  # fmt: skip
    ax.set(xlabel="class rank (sorted by teacher top-1)", ylabel="per-class top-1 (%)", ylim=(-2, 102),
           title="per-class accuracy")  # fmt: skip
    ax.legend(frameon=False)
    return _save(figure, path)


@styled
def plot_helped_hurt(changes: dict[str, list[dict[str, Any]]], path: Path) -> Path:
    rows = sorted(changes["helped"] + changes["hurt"], key=lambda r: r["delta"])  # hurt at the bottom
    figure, (ax,) = _figure(ONE_COLUMN, max(1.6, 0.45 + 0.16 * len(rows)))
    colors = ["#31a354" if r["delta"] > 0 else "#de2d26" for r in rows]
    ax.barh(range(len(rows)), [r["delta"] for r in rows], color=colors, height=0.7)
    ax.set_yticks(range(len(rows)), [f"class {r['class']}" for r in rows])
    ax.axvline(0, color="black", linewidth=0.6)
    ax.set(xlabel="Δ per-class top-1 vs baseline (points)", title="classes distillation helped / hurt most")
    if not rows:
        ax.text(0.5, 0.5, "no per-class change", ha="center", va="center", transform=ax.transAxes)
    return _save(figure, path)


@styled
def plot_embedding(student: Any, teacher: Any, labels: list[int], method: str, path: Path) -> Path:
    """`student`/`teacher`: [P, 2] coordinates; one colour per class (a legend when there are at most 10)."""
    from matplotlib import colormaps

    classes = sorted(set(labels))
    cmap = colormaps["tab10" if len(classes) <= 10 else "tab20" if len(classes) <= 20 else "nipy_spectral"]
    position = {c: i for i, c in enumerate(classes)}
    colors = [cmap(position[c] / max(len(classes) - 1, 1)) if len(classes) > 20 else cmap(position[c])
              for c in labels]  # fmt: skip
    figure, (left, right) = _figure(TWO_COLUMNS, 3.3, 1, 2)
    name = "t-SNE" if method == "tsne" else "PCA"
    for ax, points, title in ((left, teacher, "(a) teacher"), (right, student, "(b) student")):
        ax.scatter(points[:, 0], points[:, 1], c=colors, s=3, linewidths=0, rasterized=True)
        ax.set(xlabel=f"{name} 1", ylabel=f"{name} 2", title=f"{title} features ({len(labels)} test samples)")
        ax.set_xticks([])
        ax.set_yticks([])
    if len(classes) <= 10:
        from matplotlib.lines import Line2D

        handles = [Line2D([], [], marker="o", linestyle="", color=cmap(position[c]), markersize=4) for c in classes]
        right.legend(handles, [f"class {c}" for c in classes], frameon=False, loc="center left",
                     bbox_to_anchor=(1.0, 0.5), title="true class")  # fmt: skip
    return _save(figure, path)
