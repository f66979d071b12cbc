"""The `sddkd` command line: thin Typer commands, each resolving its input and making one call into the library.

Heavy modules (torch and everything that imports it) are imported inside the commands, so `sddkd --help` and
`sddkd report` start without torch.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Literal, NoReturn

import typer
from rich.console import Console

app = typer.Typer(
    name="sddkd",
    help="Scale Decoupled Distillation + Logit Standardization: fetch teachers, prepare data, train, evaluate, "
    "run suites and report.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
console = Console()
err_console = Console(stderr=True)


def fail(message: str, code: int = 2) -> NoReturn:
    """End the command with one clear sentence on stderr and a non-zero exit, never a traceback."""
    err_console.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


# --- fetch-teachers -------------------------------------------------------------------------------------------


@app.command("fetch-teachers")
def fetch_teachers_command() -> None:
    """Download, verify and register published teacher checkpoints."""
    fail("fetch-teachers is not wired yet")


# --- prepare-data ---------------------------------------------------------------------------------------------


@app.command("prepare-data")
def prepare_data_command() -> None:
    """Download (or take --from), verify, extract and cache a dataset under --data-root."""
    fail("prepare-data is not wired yet")


# --- train / eval ---------------------------------------------------------------------------------------------


@app.command("train")
def train_command() -> None:
    """Train a student (or a vanilla model) from a preset."""
    fail("train is not wired yet")


@app.command("eval")
def eval_command() -> None:
    """Evaluate a checkpoint: top-1 / top-5, and each region scale's accuracy for multi-scale models."""
    fail("eval is not wired yet")


# --- suite ----------------------------------------------------------------------------------------------------


@app.command("suite")
def suite_command() -> None:
    """Expand a named suite (or a suite YAML) into runs and execute them, each in its own process."""
    fail("suite is not wired yet")


# --- report ---------------------------------------------------------------------------------------------------


@app.command("report")
def report_command(
    runs_dir: Annotated[
        Path,
        typer.Argument(
            metavar="RUNS_DIR", help="Folder searched recursively for runs (folders with result.json)."
        ),
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
) -> None:
    """Summarise run directories into tables (terminal, Markdown, CSV, JSON) and optional plots."""
    from rich.markup import escape

    from sddkd.report import ReportError, generate_report, render, render_table

    try:
        report = generate_report(runs_dir, out_dir=out, plots=plots)
    except ReportError as error:
        fail(escape(str(error)))  # the message names "sddkd[plots]": not rich markup
    for warning in report.warnings:
        err_console.print(f"[yellow]warning:[/] {escape(warning)}", highlight=False, soft_wrap=True)
    if output_format == "table":
        console.print(render_table(report))
    else:
        sys.stdout.write(render(report, output_format))
    # keep stdout clean for piping the md/csv/json text
    notes = console if output_format == "table" else err_console
    notes.print(f"wrote {len(report.files)} files into {escape(str(out or runs_dir))}", highlight=False)


# --------------------------------------------------------------------------------------------------------------


def main() -> None:
    app(prog_name="sddkd")


if __name__ == "__main__":
    sys.exit(main())
