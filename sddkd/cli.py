"""The `sddkd` command line: thin Typer commands, each resolving its input and making one call into the library.

Heavy modules (torch and everything that imports it) are imported inside the commands, so `sddkd --help` and
`sddkd report` start without torch.
"""

from __future__ import annotations

import sys
from typing import NoReturn

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
def report_command() -> None:
    """Summarise run directories into tables (terminal, Markdown, CSV, JSON) and optional plots."""
    fail("report is not wired yet")


# --------------------------------------------------------------------------------------------------------------


def main() -> None:
    app(prog_name="sddkd")


if __name__ == "__main__":
    sys.exit(main())
