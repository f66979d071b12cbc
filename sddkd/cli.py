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
def fetch_teachers_command(
    dataset: Annotated[Literal["cifar100", "cub200", "imagenet"], typer.Option(help="Which teachers.")],
    arch: Annotated[
        list[str] | None, typer.Option(help="Architecture (repeatable); default: every published teacher.")
    ] = None,
    source: Annotated[
        str | None,
        typer.Option(help="URL, archive, folder or single checkpoint to take them from (offline machines, mirrors)."),
    ] = None,
    sha256: Annotated[str | None, typer.Option(help="Expected sha256 of the --source file.")] = None,
    force: Annotated[bool, typer.Option(help="Fetch again even when a verified copy is in the store.")] = False,
) -> None:
    """Download, verify and register published teacher checkpoints.

    Store: $SDDKD_HOME/teachers/<dataset>/<arch>.pth plus index.json (SDDKD_HOME defaults to ~/.cache/sddkd).

    Each checkpoint is loaded strictly into its architecture (weights only, no code) before it is accepted.

    CUB-200 teachers are only on a Baidu Pan share: pass what you downloaded with --source, or train them.
    """
    from sddkd.errors import UserError
    from sddkd.teacher_sources import fetch_teachers, status_table

    try:
        statuses = fetch_teachers(dataset, arch or (), source=source, sha256=sha256, force=force)
    except UserError as exc:
        fail(str(exc))
    console.print(status_table(statuses))
    missing = [s.arch for s in statuses if s.state == "missing"]
    if missing:
        fail(f"{len(missing)} teacher(s) not available: {', '.join(missing)}; the table says where each comes from")


# --- prepare-data ---------------------------------------------------------------------------------------------


@app.command("prepare-data")
def prepare_data_command(
    dataset: Annotated[Literal["cifar100", "cub200", "imagenet"], typer.Argument(help="Which dataset.")],
    data_root: Annotated[Path, typer.Option(help="Where datasets live (the config's data.root).")] = Path("data"),
    url: Annotated[str | None, typer.Option(help="Download from this mirror instead of the official URL.")] = None,
    md5: Annotated[str | None, typer.Option(help="Expected md5 of the archive (a mirror's own file).")] = None,
    source: Annotated[
        Path | None, typer.Option("--from", help="A local archive or extracted folder (offline machines).")
    ] = None,
) -> None:
    """Download (or take --from), verify, extract and cache a dataset under --data-root.

    A dataset already prepared is not fetched again.

    ImageNet cannot be downloaded (licence): pass --from with its train/ and val/ class folders.
    """
    from sddkd.data.prepare import prepare_dataset
    from sddkd.errors import UserError

    try:
        prepared = prepare_dataset(dataset, data_root, url=url, md5=md5, source=source)
    except UserError as exc:
        fail(str(exc))
    state = "already prepared" if prepared.reused else "prepared"
    checks = ", ".join(
        part for part in (prepared.archive_md5 and f"md5 {prepared.archive_md5}", prepared.spot_check) if part
    )
    console.print(f"{dataset} {state} at {prepared.path}" + (f" ({checks})" if checks else ""), highlight=False)


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
