"""`sddkd suite`: expand a named suite (or a suite YAML) into runs and execute them, each in its own process."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

import typer

from sddkd.cli.common import console, user_errors


def suite_command(
    target: Annotated[
        str,
        typer.Argument(
            metavar="NAME|FILE.yaml",
            help=(
                "A shipped suite (cifar100, cub200, baselines, cub200-baselines, lskd-table, sdd-table, "
                "cifar100-mlkd, imagenet, smoke) or a YAML file."
            ),
        ),
    ],
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Print the expanded runs and start nothing.")] = False,
    status: Annotated[bool, typer.Option("--status", help="Print each run's state from its result.json.")] = False,
    output_format: Annotated[
        Literal["table", "json"], typer.Option("--format", help="table or json (with --dry-run / --status).")
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
        from sddkd.suite.plan import suite_command as run_suite_command
        from sddkd.suite.slurm import SlurmOptions

        given = {key: value for key, value in slurm_given.items() if value is not None}
        slurm = SlurmOptions(**given) if given else None
        code = run_suite_command(
            target, console=console, dry_run=dry_run, status=status, output_format=output_format, seeds=seeds,
            only=only, out=out, devices=devices, per_device=per_device, train_teachers=train_teachers,
            dataset=dataset, epochs=epochs, backend=backend, slurm=slurm,
        )  # fmt: skip
    if code:
        raise typer.Exit(code)
