"""`sddkd report`: run directories -> a summary table (terminal, Markdown, CSV, JSON) and plots; no torch.

Each row is one recipe (everything but the seed), over its finished seeds; the recipe keys that differ between rows
of one dataset, method and pair (a sweep's swept keys) are columns of their own:
- best: top-1 at the best epoch, the convention of DKD, LSKD and SDD (and of the published numbers);
- last: top-1 at the last epoch, RepDistiller's convention;
both as mean ± sample std; Δ M=(1) = best mean minus the same pair, method and epochs at M=(1); published =
the paper's number (`sddkd.report.anchors`, "—" when none) and Δ published = best mean minus it. Runs not finished
(`running`, `failed`, `incomplete`: see `sddkd.report.records`) are counted in their row and listed apart.
Files are written atomically: report.md, report.csv, report.json and, with plots, plots/*.png.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

from rich import box
from rich.console import Group
from rich.table import Table
from rich.text import Text

from sddkd.files import write_bytes_atomic
from sddkd.report.anchors import scales_label
from sddkd.report.records import STATES, MeanStd, Report, ReportError, Row, Run, build_report
from sddkd.rundir.naming import short_keys
from sddkd.rundir.state import parse_time
from sddkd.scales import Scales, format_scales

FileFormat = Literal["md", "csv", "json"]
REPORT_FILES: dict[FileFormat, str] = {"md": "report.md", "csv": "report.csv", "json": "report.json"}
NONE = "—"
LEGEND = (
    "best = top-1 at the best epoch (DKD/LSKD/SDD convention, as published); last = top-1 at the last epoch "
    "(RepDistiller convention); mean ± sample std over finished seeds; Δ M=(1) = best mean minus the same "
    "pair and method at M=(1); Δ published = best mean minus the published number. Top-1 in %."
)


def generate_report(
    runs_dir: Path, out_dir: Path | None = None, plots: bool = False, now: datetime | None = None,
    analysis: bool = False,
    include_partial: bool = False,
) -> Report:  # fmt: skip
    """Summarise `runs_dir`; write report.{md,csv,json} (and plots/*.png) into `out_dir` (or runs_dir).

    `analysis` adds to report.md a section linking each run's `sddkd analyze` figures (`sddkd.report.analysis`).
    """
    if plots:
        from sddkd.report.plots import require_matplotlib

        require_matplotlib()  # before any work, so a missing extra costs nothing
    if runs_dir.exists() and not runs_dir.is_dir():
        raise ReportError(
            f"{runs_dir} is a file, not a folder of runs: pass the folder `sddkd train` or `sddkd suite` wrote into "
            "(their --out, logs/ by default)"
        )
    if out_dir is not None and out_dir.exists() and not out_dir.is_dir():
        raise ReportError(f"--out {out_dir} is a file: pass a folder")
    out_dir = out_dir or runs_dir
    report = build_report(runs_dir, now, include_partial=include_partial)
    if plots:
        from sddkd.report.plots import write_plots

        report.files.extend(write_plots(report, out_dir / "plots"))
    for fmt, name in REPORT_FILES.items():
        text = render(report, fmt)
        if fmt == "md" and analysis:
            from sddkd.report.analysis import analysis_markdown

            text += "\n" + analysis_markdown(report.runs, out_dir)
        report.files.append(write_bytes_atomic(out_dir / name, text.encode("utf-8")))
    return report


# --- rendering ----------------------------------------------------------------------------------------------


def _stat(value: MeanStd | None) -> str:
    if value is None:
        return NONE
    return f"{value.mean:.2f}" if value.std is None else f"{value.mean:.2f} ± {value.std:.2f}"


def _delta(value: float | None) -> str:
    return NONE if value is None else f"{value:+.2f}"


def _states(row: Row) -> str:
    text = "finished" if set(row.states) == {"finished"} else ", ".join(f"{n} {s}" for s, n in row.states.items())
    return text + (" (partial)" if row.partial else "")


def _m(scales: Scales | None) -> str:
    return NONE if scales is None else scales_label(scales)


HEADERS: tuple[str, ...] = ("dataset", "pair", "method", "M", "epochs", "seeds", "status", "best top-1")
HEADERS += ("last top-1", "Δ M=(1)", "published", "Δ published")
RUN_HEADERS = ("run", "state", "epochs done", "best so far", "updated", "host:pid", "error")


def _headers(report: Report) -> list[str]:
    """HEADERS with the setting keys (a sweep's swept keys) after `epochs`."""
    return [*HEADERS[:5], *report.setting_keys, *HEADERS[5:]]


def _setting(value: Any) -> str:
    if value is None:
        return NONE
    return json.dumps(value) if isinstance(value, list | dict | bool) else str(value)


def _cells(row: Row) -> list[str]:
    published = NONE if row.published is None else f"{row.published.top1:.2f}"
    settings = [_setting(value) for value in row.settings.values()]
    return [row.dataset, row.pair, row.method, _m(row.scales), str(row.epochs), *settings, str(len(row.seeds)),
            _states(row), _stat(row.best_top1), _stat(row.last_top1), _delta(row.delta_vs_m1), published,
            _delta(row.delta_vs_published)]  # fmt: skip


def _run_cells(run: Run) -> list[str]:
    where = f"{run.host or '?'}:{run.pid if run.pid is not None else '?'}"
    error = run.error.strip().splitlines()[0] if run.error and run.error.strip() else ""
    progress = f"{run.epochs_done}/{run.epochs}"
    best = NONE if run.best_top1 is None else f"{run.best_top1:.2f}"
    return [run.run_name, run.state, progress, best, _short_time(run.updated), where, error]


def _short_time(text: str | None) -> str:
    moment = parse_time(text)
    return moment.strftime("%Y-%m-%d %H:%M UTC") if moment else (text or NONE)


def _md_table(headers: Sequence[str], lines: list[list[str]]) -> str:
    def line(cells: Sequence[str]) -> str:
        return "| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |"

    return "\n".join([line(headers), line(["---"] * len(headers)), *(line(c) for c in lines)])


def render_markdown(report: Report) -> str:
    parts = [f"# sddkd report: {report.runs_dir}", "", f"Generated {report.generated}. {LEGEND}", ""]
    parts += [_md_table(_headers(report), [_cells(row) for row in report.rows]), ""]
    if report.unfinished:
        unfinished = _md_table(RUN_HEADERS, [_run_cells(run) for run in report.unfinished])
        parts += ["## Runs not finished", "", unfinished, ""]
    if report.warnings:
        parts += ["## Warnings", "", *(f"- {w}" for w in report.warnings), ""]
    return "\n".join(parts)


def _number(value: float | None) -> float | None:
    return None if value is None else round(value, 4)


def row_record(row: Row) -> dict[str, Any]:
    """A row as plain JSON-able values (also the CSV columns); `seeds` lists the finished seeds."""

    def stat(name: str, value: MeanStd | None) -> dict[str, float | None]:
        if value is None:
            return {f"{name}_mean": None, f"{name}_std": None}
        return {f"{name}_mean": _number(value.mean), f"{name}_std": _number(value.std)}

    anchor = row.published
    return {
        "dataset": row.dataset, "pair": row.pair, "teacher": row.teacher, "student": row.student,
        "method": row.method, "M": None if row.scales is None else format_scales(row.scales),
        "epochs": row.epochs, **row.settings, "partial": row.partial, "seeds": list(row.seeds),
        **{s: row.states.get(s, 0) for s in STATES},
        **stat("best_top1", row.best_top1), **stat("last_top1", row.last_top1),
        **stat("best_top5", row.best_top5),
        "delta_best_top1_vs_M1": _number(row.delta_vs_m1),
        "published_top1": anchor and anchor.top1, "published_top5": anchor and anchor.top5,
        "published_column": anchor and anchor.column, "published_source": anchor and anchor.source,
        "delta_best_top1_vs_published": _number(row.delta_vs_published),
    }  # fmt: skip


def render_csv(report: Report) -> str:
    records = [row_record(row) for row in report.rows]
    for record in records:
        record["seeds"] = " ".join(str(seed) for seed in record["seeds"])
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(records[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows(records)
    return buffer.getvalue()


def render_json(report: Report) -> str:
    runs = [
        {"run_name": r.run_name, "path": str(r.path.relative_to(report.runs_dir)), "state": r.state,
         "seed": r.seed, "epochs_done": r.epochs_done, "epochs": r.epochs, "best_top1": r.best_top1,
         "last_top1": r.last_top1, "updated": r.updated, "host": r.host, "pid": r.pid, "error": r.error}
        for r in report.runs
    ]  # fmt: skip
    rows = [row_record(row) for row in report.rows]
    document = {"generated": report.generated, "runs_dir": str(report.runs_dir), "legend": LEGEND,
                "rows": rows, "runs": runs, "warnings": report.warnings}  # fmt: skip
    return json.dumps(document, indent=2, ensure_ascii=False) + "\n"


# The terminal table keeps short headers and minimum widths so it stays legible down to 80 columns, where its
# cells wrap ("76.40" over "± 0.32"); TERMINAL_LEGEND names the columns.
TERMINAL_COLUMNS = {"pair": 10, "method": 7, "M": 5, "ep": 3, "n": 2, "status": 8, "best": 6, "last": 6}
TERMINAL_COLUMNS |= {"ΔM1": 5, "pub": 5, "Δpub": 5}
TERMINAL_LEGEND = (
    "best / last = top-1 at the best epoch (DKD/LSKD/SDD convention) / last epoch (RepDistiller), mean ± "
    "sample std over the n finished seeds; ep = epochs; ΔM1 = best minus the same pair and method at M=(1); "
    "pub = published (best epoch); Δpub = best minus pub. Top-1 in %."
)
EP_LEGEND = " ep = epochs;"  # only when a table shows the ep column (one length per dataset goes in its title)


# Short headers for the keys a sweep usually varies; others go by their last dotted part.
SHORT_NAMES = {
    "method.temperature": "T", "method.kd_weight": "kd w", "method.ce_weight": "ce w", "optim.lr": "lr",
    "optim.batch_size": "batch", "method.warmup": "warm", "method.complementary_weight": "βc",
    "optim.weight_decay": "wd", "method.alpha": "α", "method.beta": "β",
}  # fmt: skip


def terminal_names(keys: Sequence[str]) -> dict[str, str]:
    names = short_keys(list(keys))
    return {key: SHORT_NAMES.get(key, names[key]) for key in keys}


NUMBER_COLUMNS = ("n", "best", "last", "ΔM1", "pub", "Δpub")


def _terminal_table(dataset: str, rows: Sequence[Row], keys: Sequence[str], narrow: bool = False) -> Table:
    epochs = {row.epochs for row in rows}
    one_length = len(epochs) == 1  # then the epochs go into the title, saving a column
    all_finished = all(_states(row) == "finished" for row in rows)  # then the title says so, saving a column
    title = f"{dataset}, {epochs.pop()} epochs" if one_length else dataset
    title += ", all finished" if all_finished else ""
    table = Table(title=Text(title), title_justify="left", box=box.SIMPLE_HEAD, pad_edge=False, show_edge=False)
    names = terminal_names(keys)  # `T`, not `method.temperature`
    columns = list(TERMINAL_COLUMNS.items())
    columns[4:4] = [(names[key], 4) for key in keys]
    dropped = {index for index, (header, _) in enumerate(columns)
               if (header == "ep" and one_length) or (header == "status" and all_finished)}  # fmt: skip
    for index, (header, min_width) in enumerate(columns):
        if index in dropped:
            continue
        left = header in ("pair", "method", "M", "status")
        # fold: a long name or number wraps onto the next line instead of being cut to "resnet20→…". Narrow: every
        # column gets its fixed width ("76.40" over "± 0.32"), since rich would squeeze the last ones to nothing
        fixed = (max(min_width, 6) if header in NUMBER_COLUMNS and header != "n" else min_width) if narrow else None
        table.add_column(header, justify="left" if left else "right", min_width=min_width, width=fixed,
                         overflow="fold")  # fmt: skip
    for row in rows:
        cells = _cells(row)[1:]  # the dataset is in the title
        shown = [cell for index, cell in enumerate(cells) if index not in dropped]
        table.add_row(*(Text(cell) for cell in shown))  # Text: a "[...]" in a name is not rich markup
    return table


def render_table(report: Report, width: int | None = None) -> Group:
    """The rich renderable for the terminal: one table per dataset, the legend, then the unfinished runs.

    `width`: the terminal's columns; below 120 the number columns get fixed widths so the table fits.
    """
    narrow = width is not None and width < 120
    parts: list[Table | Text] = []
    for dataset in dict.fromkeys(row.dataset for row in report.rows):
        rows = [row for row in report.rows if row.dataset == dataset]
        parts.append(_terminal_table(dataset, rows, report.setting_keys, narrow))
    shows_ep = any(len({row.epochs for row in report.rows if row.dataset == dataset}) > 1
                   for dataset in {row.dataset for row in report.rows})  # fmt: skip
    legend = TERMINAL_LEGEND if shows_ep else TERMINAL_LEGEND.replace(EP_LEGEND, "")
    if report.setting_keys:
        named = ", ".join(f"{short} = {key}" for key, short in terminal_names(report.setting_keys).items())
        legend += f" Swept settings: {named}."
    parts.append(Text(legend, style="dim"))
    if report.unfinished:
        unfinished = Table(title="runs not finished", title_justify="left", box=box.SIMPLE_HEAD)
        for header in RUN_HEADERS:
            unfinished.add_column(header, min_width=5, overflow="fold")
        for run in report.unfinished:
            cells = (Text(cell) for cell in _run_cells(run))
            unfinished.add_row(*cells, style="yellow" if run.state == "running" else "red")
        parts.append(unfinished)
    return Group(*parts)


def render(report: Report, fmt: FileFormat) -> str:
    """The report as the text of one file format."""
    return {"md": render_markdown, "csv": render_csv, "json": render_json}[fmt](report)
