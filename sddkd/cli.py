"""The `sddkd` command line: thin Typer commands, each resolving its input and making one call into the library.

Heavy modules (torch and everything that imports it) are imported inside the commands, so `sddkd --help` and
`sddkd report` start without torch.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, NoReturn

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
def suite_command(
    target: Annotated[
        str,
        typer.Argument(
            metavar="NAME|FILE.yaml",
            help="A shipped suite (cifar100, cub200, baselines, cub200-baselines, imagenet, smoke) or a YAML file.",
        ),
    ],
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Print the expanded runs and start nothing.")] = False,
    status: Annotated[bool, typer.Option("--status", help="Print each run's state from its result.json.")] = False,
    output_format: Annotated[
        str, typer.Option("--format", help="table or json (with --dry-run / --status).")
    ] = "table",
    seeds: Annotated[int | None, typer.Option("--seeds", min=1, help="Run seeds 0..N-1 of every run.")] = None,
    only: Annotated[
        list[str] | None, typer.Option("--only", help="Keep runs whose name or preset matches this glob (repeatable).")
    ] = None,
    out: Annotated[Path, typer.Option("--out", help="Output root; one directory per run.")] = Path("logs"),
    devices: Annotated[
        str | None, typer.Option("--devices", help="CUDA device ids (0,1) or cpu; default: every GPU, else cpu.")
    ] = None,
    per_device: Annotated[int, typer.Option("--per-device", min=1, help="Concurrent runs per device.")] = 1,
    train_teachers: Annotated[
        bool, typer.Option("--train-teachers", help="First train (and register) the teachers the store lacks.")
    ] = False,
    dataset: Annotated[
        str | None, typer.Option("--dataset", help="`synthetic`: generated data of the same shape for every run.")
    ] = None,
    epochs: Annotated[int | None, typer.Option("--epochs", min=1, help="Train every run for N epochs.")] = None,
) -> None:
    """Expand a named suite (or a suite YAML) into runs and execute them, each in its own process."""
    from sddkd.config import ConfigError
    from sddkd.suite import SuiteError
    from sddkd.suite import suite_command as run_suite_command

    try:
        code = run_suite_command(
            target, console=console, dry_run=dry_run, status=status, output_format=output_format, seeds=seeds,
            only=only, out=out, devices=devices, per_device=per_device, train_teachers=train_teachers,
            dataset=dataset, epochs=epochs,
        )  # fmt: skip
    except (SuiteError, ConfigError) as exc:
        fail(str(exc))
    if code:
        raise typer.Exit(code)


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
