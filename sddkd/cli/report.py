"""`sddkd report`: run directories -> tables (terminal, Markdown, CSV, JSON) and optional plots; no torch."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Literal

import typer
from rich.console import Console
from rich.markup import escape

from sddkd.cli.common import console, err_console, user_errors


def report_command(
    runs_dir: Annotated[
        Path,
        typer.Argument(metavar="RUNS_DIR", help="Folder searched recursively for runs (folders with result.json)."),
    ],
    out: Annotated[
        Path | None,
        typer.Option("--out", help="Folder for report.md/.csv/.json and plots/ (default: RUNS_DIR)."),
    ] = None,
    output_format: Annotated[
        Literal["table", "md", "csv", "json"],
        typer.Option("--format", help="What to print: a rich table, or the Markdown, CSV or JSON text."),
    ] = "table",
    plots: Annotated[
        bool, typer.Option("--plots", help="Also draw PNG figures (needs matplotlib: the `plots` extra).")
    ] = False,
    analysis: Annotated[
        bool, typer.Option("--analysis", help="Link each run's `sddkd analyze` figures from report.md.")
    ] = False,
    include_partial: Annotated[
        bool,
        typer.Option("--include-partial", help="Also report partial runs (--max-steps, fewer epochs than the preset)."),
    ] = False,
) -> None:
    """Summarise run directories into tables (terminal, Markdown, CSV, JSON) and optional plots."""
    from sddkd.report.render import generate_report, render, render_table

    with user_errors():  # no runs, a bad folder, an --out that refuses writes or fills the disk
        report = generate_report(runs_dir, out_dir=out, plots=plots, analysis=analysis, include_partial=include_partial)
    for warning in report.warnings:
        err_console.print(f"[yellow]warning:[/] {escape(warning)}", highlight=False, soft_wrap=True)
    if output_format == "table":
        # a terminal wraps cells at its width; a file or pipe gets every row at its natural width, one line each
        shown = console if console.is_terminal else Console(width=10_000, soft_wrap=True)
        shown.print(render_table(report, width=console.width if console.is_terminal else None))
    else:
        sys.stdout.write(render(report, output_format))
    # keep stdout clean for piping the md/csv/json text
    notes = console if output_format == "table" else err_console
    notes.print(f"wrote {len(report.files)} files into {escape(str(out or runs_dir))}", highlight=False)
