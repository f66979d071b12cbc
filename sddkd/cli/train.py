"""`sddkd train`: resolve a preset into a run config, train it, and say how it ended (exit codes for the suite)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
from rich.markup import escape

from sddkd.cli.common import (
    DataRootOption,
    DeviceOption,
    NameOption,
    RunsRootOption,
    ScalesOption,
    SetOption,
    SyntheticOption,
    TeacherOption,
    console,
    err_console,
    fail,
    is_worker_rank,
    resolve_config,
    user_errors,
)  # fmt: skip


def train_command(
    preset: Annotated[
        str | None, typer.Option("--preset", "-p", help="Preset name (e.g. res32x4_res8x4) or YAML path.")
    ] = None,
    scales: ScalesOption = None,
    dataset: SyntheticOption = None,
    data_root: DataRootOption = None,
    epochs: Annotated[int | None, typer.Option(min=1)] = None,
    max_steps: Annotated[int | None, typer.Option(min=1, help="Stop after N optimizer steps (smoke tests).")] = None,
    batch_size: Annotated[int | None, typer.Option(min=1, help="Global batch size.")] = None,
    lr: Annotated[float | None, typer.Option(min=0.0)] = None,
    seed: Annotated[int | None, typer.Option()] = None,
    device: DeviceOption = None,
    teacher: TeacherOption = None,
    out: RunsRootOption = Path("logs"),
    resume: Annotated[
        bool, typer.Option("--resume", help="Continue an unfinished run from its last checkpoint.")
    ] = False,
    restart: Annotated[
        bool, typer.Option("--restart", help="Discard an unfinished (or damaged) run of this recipe and start over.")
    ] = False,
    overrides: SetOption = None,
    list_presets: Annotated[
        bool, typer.Option("--list", help="List the shipped presets (those matching PATTERN) and exit.")
    ] = False,
    pattern: Annotated[
        str | None, typer.Argument(metavar="[PATTERN]", help="With --list: a glob or text the names must match.")
    ] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Print the resolved config, run name and sources; train nothing.")
    ] = False,
    name: NameOption = None,
) -> None:
    """Train a student against a frozen teacher (or a vanilla model) from a preset.

    The run directory is named after dataset, method, pair, M and seed, plus what the overrides change
    (`+temperature=8`) and `-partial-...` for runs cut short (--max-steps, fewer epochs than the preset).
    """
    if pattern is not None and not list_presets:
        fail(f"unexpected argument {pattern!r}: give the preset with --preset (a PATTERN goes with --list)")
    if list_presets:
        _list_presets(pattern)
        return
    if preset is None:
        fail("give a preset with --preset NAME (see `sddkd train --list`)")
    cfg = resolve_config(
        preset, scales=scales, dataset=dataset, overrides=overrides, name=name, data_root=data_root, epochs=epochs,
        max_steps=max_steps, batch_size=batch_size, lr=lr, seed=seed, device=device, teacher=teacher,
    )  # fmt: skip
    if dry_run:
        from sddkd.config_tools import show_text

        with user_errors():  # ConfigError is a UserError
            sys.stdout.write(show_text(cfg, out))
        return
    if resume and restart:
        fail("--resume continues a run and --restart discards it: give one of them")
    record = _train(cfg, out, resume=resume, restart=restart)
    if record.get("status") == "interrupted":
        interrupted_exit(record)
    if record.get("status") != "finished":
        fail(f"run {record.get('run_name')} stopped with status {record.get('status')}", code=1)
    if is_worker_rank():
        return
    console.print(
        f"[bold]{record['run_name']}[/]: best top-1 {record['best_top1']:.2f}% (epoch {record['best_epoch']}), "
        f"last top-1 {record['last_top1']:.2f}%  -> {out / record['run_name']}"
        + (f" (partial run: {record['partial_reason']})" if record.get("partial") else ""),
        highlight=False,
        soft_wrap=True,
    )


def _list_presets(pattern: str | None) -> None:
    from sddkd.config_tools import matching_presets

    with user_errors():
        listed = matching_presets(pattern)
    width = max(len(n) for n, _ in listed)
    for preset_name, description in listed:
        console.print(escape(f"{preset_name:<{width}}  {description}"), highlight=False, soft_wrap=True)


def _train(cfg: Any, out: Path, *, resume: bool, restart: bool) -> dict[str, Any]:
    from sddkd.errors import UserError
    from sddkd.rundir.lock import LOCKED_EXIT, RunLockedError

    try:
        from sddkd.engine.loop import train

        return train(cfg, out, resume=resume, restart=restart, console=err_console)
    except RunLockedError as exc:  # a code of its own: the suite then shows the run as running elsewhere
        fail(str(exc), code=LOCKED_EXIT)
    except UserError as exc:
        fail(str(exc))
    except PermissionError as exc:
        fail(f"no permission to use {exc.filename}: fix its permissions or choose another --out")


def resume_command() -> str:
    """The command line of this process with --resume: what continues an interrupted run."""
    import shlex

    args = [a for a in sys.argv[1:] if a not in ("--resume", "--restart")]
    return shlex.join(["sddkd", *args, "--resume"])


def interrupted_exit(record: dict[str, Any]) -> NoReturn:
    signal_name = (record.get("error") or "").removeprefix("stopped by ").split(" ")[0]
    code = {"SIGINT": 130, "SIGTERM": 143}.get(signal_name, 1)
    if not is_worker_rank():
        err_console.print(
            f"[yellow]{escape(record.get('run_name') or 'run')} interrupted[/] with a checkpoint of this step; "
            f"resume it with: {escape(resume_command())}",
            highlight=False, soft_wrap=True,
        )  # fmt: skip
    raise typer.Exit(code)
