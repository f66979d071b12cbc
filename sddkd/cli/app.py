"""The `sddkd` Typer app: the root options and one registration per command (each command is a module of its own).

Heavy modules (torch and everything that imports it) are imported inside the commands, so `sddkd --help` and
`sddkd report` start without torch.
"""

from __future__ import annotations

from typing import Annotated

import typer

from sddkd.cli import analyze, cache, evaluate, prepare, report, suite, teachers, train
from sddkd.cli.common import console
from sddkd.cli.configs import config_app

app = typer.Typer(
    name="sddkd",
    help="Scale Decoupled Distillation + Logit Standardization: fetch teachers, prepare data, train, evaluate, "
    "run suites and report.",
    no_args_is_help=True,
    add_completion=True,  # --install-completion / --show-completion for bash, zsh, fish and PowerShell
    pretty_exceptions_enable=False,
)


def _print_version(value: bool) -> None:
    if value:
        from sddkd import __version__  # the installed distribution's metadata (sddkd/__init__.py)

        console.print(f"sddkd {__version__}", highlight=False)
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option("--version", callback=_print_version, is_eager=True, help="Print the installed version and exit."),
    ] = False,
) -> None:
    """Options that come before any command (the app's help text is given to typer.Typer above)."""


# In the order `sddkd --help` lists them.
app.command("fetch-teachers")(teachers.fetch_teachers_command)
app.command("prepare-data")(prepare.prepare_data_command)
app.command("train")(train.train_command)
app.command("eval")(evaluate.eval_command)
app.command("analyze")(analyze.analyze_command)
app.command("suite")(suite.suite_command)
app.command("cache-teacher")(cache.cache_teacher_command)
app.command("report")(report.report_command)
app.add_typer(config_app)


def main() -> None:
    app(prog_name="sddkd")


if __name__ == "__main__":
    main()
