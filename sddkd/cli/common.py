"""What every `sddkd` command shares: the consoles, the one `fail`, the option aliases each declared once, the
shortcut -> `--set` mapping, and the edge where `--M` becomes a typed `Scales`.

No torch here: `sddkd --help` and `sddkd report` must start without it.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, NoReturn

import typer
from rich.console import Console
from rich.markup import escape

if TYPE_CHECKING:
    from sddkd.config import RunConfig
    from sddkd.scales import Scales

console = Console()
err_console = Console(stderr=True)


def is_worker_rank() -> bool:
    """A rank other than 0 of a torchrun launch: it exits with the same code but leaves the talking to rank 0."""
    return os.environ.get("RANK", "0") != "0"


def fail(message: str, code: int = 2) -> NoReturn:
    """End the command with one clear sentence on stderr and a non-zero exit, never a traceback."""
    if is_worker_rank():  # under torchrun every rank meets the same error: say it once
        raise typer.Exit(code)
    # The message is plain text (it may name `sddkd[plots]`), never rich markup.
    err_console.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


@contextmanager
def user_errors() -> Iterator[None]:
    """Turn the library's UserError (bad input, missing data or teacher, bad checksum...) into one clear line."""
    from sddkd.errors import UserError

    try:
        yield
    except UserError as exc:
        fail(str(exc))


# --- options shared by several commands, each declared once -------------------------------------------------------

ScalesOption = Annotated[
    str | None,
    typer.Option("--M", help="SDD scales, e.g. 1,2,4 (starts with 1, increasing) \\[default: the preset's or run's]."),
]
SyntheticOption = Annotated[
    str | None, typer.Option("--dataset", help="`synthetic` swaps in generated data of the same shape.")
]
DataRootOption = Annotated[
    Path | None,
    typer.Option("--data-root", help="Where `sddkd prepare-data` put the data \\[default: $SDDKD_DATA, else data]."),
]
DeviceOption = Annotated[
    str | None, typer.Option("--device", help="cpu, cuda or cuda:N \\[default: cuda if available].")
]
TeacherOption = Annotated[
    Path | None, typer.Option("--teacher", help="Teacher checkpoint file; overrides the teacher store.")
]
SetOption = Annotated[list[str] | None, typer.Option("--set", help="Override a config key: section.key=value.")]
NameOption = Annotated[str | None, typer.Option("--name", help="Run directory name instead of the derived one.")]
RunsRootOption = Annotated[Path, typer.Option("--out", help="Root of the run directories.")]
BatchSizeOption = Annotated[int, typer.Option("--batch-size", min=1)]

# The command-line shortcuts and the config key each one sets (`--epochs 3` is `--set optim.epochs=3`).
SHORTCUT_KEYS = {
    "data_root": "data.root", "epochs": "optim.epochs", "max_steps": "optim.max_steps",
    "batch_size": "optim.batch_size", "lr": "optim.lr", "seed": "seed", "device": "engine.device",
    "teacher": "teacher.checkpoint",
}  # fmt: skip


def scales_of(text: str | None) -> Scales | None:
    """`--M` parsed once, here at the edge; everything below takes the typed tuple."""
    if text is None:
        return None
    from sddkd.scales import parse_scales

    try:
        return parse_scales(text)
    except ValueError as exc:
        fail(f"--M: {exc}")


def resolve_config(
    preset: str,
    *,
    scales: str | None,
    dataset: str | None,
    overrides: list[str] | None,
    name: str | None = None,
    **shortcuts: object,
) -> RunConfig:
    """The run config of a command: preset, `--M`, `--dataset`, the shortcuts (as `--set` before the explicit
    ones), `--name`; a bad value ends the command with one line."""
    from sddkd.config import ConfigError, load_config

    assignments = [f"{SHORTCUT_KEYS[key]}={value}" for key, value in shortcuts.items() if value is not None]
    parsed = scales_of(scales)
    try:
        return load_config(preset, scales=parsed, dataset=dataset, overrides=assignments + (overrides or []), name=name)
    except ConfigError as exc:
        fail(str(exc))
