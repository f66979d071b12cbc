"""`sddkd config show|cp|validate`: look at, copy and check recipes before training (thin Typer commands)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape

from sddkd.cli.common import (
    NameOption,
    RunsRootOption,
    ScalesOption,
    SetOption,
    SyntheticOption,
    resolve_config,
    user_errors,
)

config_app = typer.Typer(
    name="config",
    help="Show the resolved config of a preset or file, copy a preset to edit, validate config files.",
    no_args_is_help=True,
)
out_console = Console(soft_wrap=True, highlight=False)
err_console = Console(stderr=True, soft_wrap=True, highlight=False)


@config_app.command("show")
def show_command(
    preset: Annotated[str, typer.Argument(metavar="PRESET|FILE", help="Preset name or YAML path.")],
    scales: ScalesOption = None,
    dataset: SyntheticOption = None,
    overrides: SetOption = None,
    name: NameOption = None,
    out: RunsRootOption = Path("logs"),
) -> None:
    """Print the resolved YAML, its config hash and run name, and where its teacher and data would come from.

    The output is itself a config file: `sddkd config show X --set ... > mine.yaml` then `sddkd train -p mine.yaml`.
    """
    from sddkd.config_tools import show_text

    cfg = resolve_config(preset, scales=scales, dataset=dataset, overrides=overrides, name=name)
    with user_errors():  # a bad config, or an SDDKD_HOME that is a file
        text = show_text(cfg, out)
    typer.echo(text, nl=False)


@config_app.command("cp")
def cp_command(
    preset: Annotated[str, typer.Argument(metavar="PRESET", help="Preset name (see `sddkd train --list`).")],
    dest: Annotated[Path, typer.Argument(metavar="FILE", help="The YAML file to write.")],
    force: Annotated[bool, typer.Option("--force", help="Overwrite FILE if it exists.")] = False,
) -> None:
    """Copy a preset to FILE to edit, header kept; `sddkd train --preset FILE` trains it."""
    from sddkd.config_tools import copy_preset

    with user_errors():  # an unknown preset, an existing FILE, a folder that refuses writes
        written = copy_preset(preset, dest, force=force)
    out_console.print(f"wrote {escape(str(written))}")


@config_app.command("validate")
def validate_command(
    files: Annotated[list[str], typer.Argument(metavar="FILE...", help="Config files (or preset names).")],
) -> None:
    """Check config files: every problem of every file, one line each; exit 1 if there is any."""
    from sddkd.config_tools import file_problems

    failed = 0
    for target in files:
        problems = file_problems(target)
        failed += bool(problems)
        if not problems:
            out_console.print(f"{escape(target)}: ok")
        for problem in problems:
            out_console.print(f"{escape(target)}: [red]{escape(problem)}[/]")
    if failed:
        err_console.print(f"{failed} of {len(files)} file(s) have problems")
        raise typer.Exit(1)
