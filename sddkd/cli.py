"""The `sddkd` command line: thin Typer commands, each resolving its input and making one call into the library.

Heavy modules (torch and everything that imports it) are imported inside the commands, so `sddkd --help` and
`sddkd report` start without torch.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any, Literal, NoReturn

import typer
from rich.console import Console
from rich.markup import escape

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
    from sddkd.teacher_sources import fetch_teachers, status_report

    with user_errors():
        statuses = fetch_teachers(dataset, arch or (), source=source, sha256=sha256, force=force)
    console.print(status_report(statuses))
    missing = [s.arch for s in statuses if s.state == "missing"]
    if missing:
        fail(
            f"{len(missing)} teacher(s) not available: {', '.join(missing)}; the lines above say where each comes from"
        )


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

    with user_errors():
        prepared = prepare_dataset(dataset, data_root, url=url, md5=md5, source=source)
    state = "already prepared" if prepared.reused else "prepared"
    checks = ", ".join(
        part for part in (prepared.archive_md5 and f"md5 {prepared.archive_md5}", prepared.spot_check) if part
    )
    console.print(f"{dataset} {state} at {prepared.path}" + (f" ({checks})" if checks else ""), soft_wrap=True)


# --- train / eval ---------------------------------------------------------------------------------------------


@app.command("train")
def train_command(
    preset: Annotated[
        str | None, typer.Option("--preset", "-p", help="Preset name (e.g. res32x4_res8x4) or YAML path.")
    ] = None,
    scales: Annotated[
        str | None, typer.Option("--M", help="SDD scales, e.g. 1,2,4 (starts with 1, increasing).")
    ] = None,
    dataset: Annotated[str | None, typer.Option(help="`synthetic` swaps in generated data of the same shape.")] = None,
    data_root: Annotated[
        Path | None, typer.Option(help="Where `sddkd prepare-data` put the data \\[default: data].")
    ] = None,
    epochs: Annotated[int | None, typer.Option(min=1)] = None,
    max_steps: Annotated[int | None, typer.Option(min=1, help="Stop after N optimizer steps (smoke tests).")] = None,
    batch_size: Annotated[int | None, typer.Option(min=1, help="Global batch size.")] = None,
    lr: Annotated[float | None, typer.Option(min=0.0)] = None,
    seed: Annotated[int | None, typer.Option()] = None,
    device: Annotated[str | None, typer.Option(help="cpu, cuda or cuda:N \\[default: cuda if available].")] = None,
    teacher: Annotated[Path | None, typer.Option(help="Teacher checkpoint file; overrides the teacher store.")] = None,
    out: Annotated[Path, typer.Option(help="Root of the run directories.")] = Path("logs"),
    resume: Annotated[
        bool, typer.Option("--resume", help="Continue an unfinished run from its last checkpoint.")
    ] = False,
    overrides: Annotated[
        list[str] | None, typer.Option("--set", help="Override a config key: section.key=value.")
    ] = None,
    list_presets: Annotated[bool, typer.Option("--list", help="List the shipped presets and exit.")] = False,
) -> None:
    """Train a student against a frozen teacher (or a vanilla model) from a preset."""
    from sddkd import config

    if list_presets:
        for name in config.list_presets():
            console.print(name, highlight=False)
        return
    if preset is None:
        fail("give a preset with --preset NAME (see `sddkd train --list`)")
    shortcuts = {
        "data.root": data_root, "optim.epochs": epochs, "optim.max_steps": max_steps,
        "optim.batch_size": batch_size, "optim.lr": lr, "seed": seed, "engine.device": device,
        "teacher.checkpoint": teacher,
    }  # fmt: skip
    assignments = [f"{key}={value}" for key, value in shortcuts.items() if value is not None]
    try:
        cfg = config.load_config(preset, scales=scales, dataset=dataset, overrides=assignments + (overrides or []))
    except config.ConfigError as exc:
        fail(str(exc))
    with user_errors():
        from sddkd.engine import train

        record = train(cfg, out, resume=resume, console=err_console)
    if record.get("status") != "finished":
        fail(f"run {record.get('run_name')} stopped with status {record.get('status')}", code=1)
    if is_worker_rank():
        return
    console.print(
        f"[bold]{record['run_name']}[/]: best top-1 {record['best_top1']:.2f}% (epoch {record['best_epoch']}), "
        f"last top-1 {record['last_top1']:.2f}%  -> {out / record['run_name']}",
        highlight=False,
    )


@app.command("eval")
def eval_command(
    checkpoint: Annotated[
        Path, typer.Option(help="A checkpoint written by `sddkd train`, or a published teacher file.")
    ],
    dataset: Annotated[str | None, typer.Option(help="Dataset to evaluate on \\[default: the checkpoint's].")] = None,
    data_root: Annotated[Path | None, typer.Option(help="Data root \\[default: the checkpoint's, else data].")] = None,
    arch: Annotated[str | None, typer.Option(help="Architecture, for a published file that carries no config.")] = None,
    scales: Annotated[str | None, typer.Option("--M", help="Region scales to report \\[default: the run's M].")] = None,
    device: Annotated[str, typer.Option(help="cpu, cuda or cuda:N.")] = "auto",
    batch_size: Annotated[int, typer.Option(min=1)] = 256,
) -> None:
    """Evaluate a checkpoint: top-1 / top-5, and each region scale's accuracy for multi-scale models."""
    with user_errors():
        from sddkd.evaluation import evaluate_checkpoint

        result = evaluate_checkpoint(
            checkpoint, dataset=dataset, data_root=data_root, arch=arch, scales=scales, device=device,
            batch_size=batch_size,
        )  # fmt: skip
    console.print(f"{result['arch']} on {result['dataset']}: top-1 {result['top1']:.2f}%  top-5 {result['top5']:.2f}%")
    for m, top1 in result.get("scales", {}).items():
        console.print(f"  scale {m}x{m}: mean per-cell top-1 {top1:.2f}%", highlight=False)


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
    backend: Annotated[
        Literal["local", "slurm"],
        typer.Option(
            "--backend",
            help="local: child processes on this machine; slurm: SLURM job arrays via submitit (pip install 'sddkd\\[slurm]').",
        ),
    ] = "local",
    slurm_partition: Annotated[str | None, typer.Option("--slurm-partition", help="SLURM partition.")] = None,
    slurm_gpus_per_run: Annotated[
        int | None,
        typer.Option(
            "--slurm-gpus-per-run", min=0, help="GPUs of each run (>1: DDP under torchrun; 0: CPU) (default 1)."
        ),
    ] = None,
    slurm_time: Annotated[
        str | None,
        typer.Option(
            "--slurm-time",
            help="Time limit per job, e.g. 12:00:00; longer runs continue in their requeued job (default 24:00:00).",
        ),
    ] = None,
    slurm_cpus_per_gpu: Annotated[
        int | None, typer.Option("--slurm-cpus-per-gpu", min=1, help="CPUs per GPU (default 8).")
    ] = None,
    slurm_mem_gb: Annotated[int | None, typer.Option("--slurm-mem-gb", min=1, help="Memory per run in GB.")] = None,
    slurm_account: Annotated[str | None, typer.Option("--slurm-account", help="SLURM account to charge.")] = None,
    slurm_max_parallel: Annotated[
        int | None, typer.Option("--slurm-max-parallel", min=1, help="Array tasks running at once.")
    ] = None,
    slurm_requeues: Annotated[
        int | None,
        typer.Option(
            "--slurm-requeues", min=0, help="Requeues after a time limit (default 10); preemptions always requeue."
        ),
    ] = None,
    slurm_option: Annotated[
        list[str] | None,
        typer.Option("--slurm-option", help="Any other sbatch option as key=value, e.g. qos=high (repeatable)."),
    ] = None,
) -> None:
    """Expand a named suite (or a suite YAML) into runs and execute them, each in its own process.

    With --backend slurm each run becomes a SLURM array task; students wait for the teacher runs they distil from.
    --status reads the run directories, whatever backend ran them.
    """
    slurm_given: dict[str, Any] = {
        "partition": slurm_partition, "gpus_per_run": slurm_gpus_per_run, "time": slurm_time,
        "cpus_per_gpu": slurm_cpus_per_gpu, "mem_gb": slurm_mem_gb, "account": slurm_account,
        "max_parallel": slurm_max_parallel, "requeues": slurm_requeues,
        "extra": tuple(slurm_option) if slurm_option else None,
    }  # fmt: skip
    with user_errors():
        from sddkd.suite import suite_command as run_suite_command
        from sddkd.suite_slurm import SlurmOptions

        given = {key: value for key, value in slurm_given.items() if value is not None}
        slurm = SlurmOptions(**given) if given else None
        code = run_suite_command(
            target, console=console, dry_run=dry_run, status=status, output_format=output_format, seeds=seeds,
            only=only, out=out, devices=devices, per_device=per_device, train_teachers=train_teachers,
            dataset=dataset, epochs=epochs, backend=backend, slurm=slurm,
        )  # fmt: skip
    if code:
        raise typer.Exit(code)


# --- cache-teacher --------------------------------------------------------------------------------------------


@app.command("cache-teacher")
def cache_teacher_command(
    preset: Annotated[str, typer.Argument(help="Preset name (e.g. res32x4_res8x4) or YAML path.")],
    scales: Annotated[str | None, typer.Option("--M", help="SDD scales, e.g. 1,2,4.")] = None,
    dataset: Annotated[str | None, typer.Option(help="`synthetic` swaps in generated data of the same shape.")] = None,
    data_root: Annotated[Path | None, typer.Option(help="Where `sddkd prepare-data` put the data.")] = None,
    device: Annotated[str | None, typer.Option(help="cpu, cuda or cuda:N: where the runs will train.")] = None,
    teacher: Annotated[Path | None, typer.Option(help="Teacher checkpoint file; overrides the teacher store.")] = None,
    overrides: Annotated[
        list[str] | None, typer.Option("--set", help="Override a config key: section.key=value.")
    ] = None,
    rebuild: Annotated[bool, typer.Option("--rebuild", help="Discard an existing cache and build it again.")] = False,
) -> None:
    """Build the exact teacher-logit cache runs of PRESET use (teacher.cache: auto|on): every training image under
    every augmentation view, once. Stored under $SDDKD_HOME/teacher_cache/; an existing cache is verified."""
    from sddkd import config

    shortcuts = {"data.root": data_root, "engine.device": device, "teacher.checkpoint": teacher}
    assignments = [f"{key}={value}" for key, value in shortcuts.items() if value is not None]
    try:
        cfg = config.load_config(preset, scales=scales, dataset=dataset, overrides=assignments + (overrides or []))
    except config.ConfigError as exc:
        fail(str(exc))
    with user_errors():
        from sddkd.teacher_cache_serve import build_for_config

        opened = build_for_config(cfg, err_console, rebuild=rebuild, progress=cfg.engine.progress)
    size = opened.logits.numel() * opened.logits.element_size()
    console.print(f"teacher cache ready: {opened.directory} ({size / 1e9:.2f} GB, verified)", highlight=False)


# --- report ---------------------------------------------------------------------------------------------------


@app.command("report")
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
) -> None:
    """Summarise run directories into tables (terminal, Markdown, CSV, JSON) and optional plots."""
    from sddkd.report import ReportError, generate_report, render, render_table

    try:
        report = generate_report(runs_dir, out_dir=out, plots=plots)
    except ReportError as error:
        fail(str(error))
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
    main()
