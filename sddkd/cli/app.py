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
    add_completion=True,  # --install-completion / --show-completion for bash, zsh, fish and PowerShell
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

    Store: $SDDKD_HOME/teachers/<dataset>/<arch>.pth plus index.json (SDDKD_HOME defaults to
    $XDG_CACHE_HOME/sddkd, else ~/.cache/sddkd).

    Each checkpoint is loaded strictly into its architecture (weights only, no code) before it is accepted.

    CUB-200 teachers are only on a Baidu Pan share: pass what you downloaded with --source, or train them.
    """
    from sddkd.teachers.sources import fetch_teachers, status_report

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
    data_root: Annotated[
        Path | None,
        typer.Option(help="Where datasets live (the config's data.root) \\[default: $SDDKD_DATA, else data]."),
    ] = None,
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
    from sddkd.locations import default_data_root

    with user_errors():
        prepared = prepare_dataset(dataset, data_root or Path(default_data_root()), url=url, md5=md5, source=source)
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
        Path | None, typer.Option(help="Where `sddkd prepare-data` put the data \\[default: $SDDKD_DATA, else data].")
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
    restart: Annotated[
        bool, typer.Option("--restart", help="Discard an unfinished (or damaged) run of this recipe and start over.")
    ] = False,
    overrides: Annotated[
        list[str] | None, typer.Option("--set", help="Override a config key: section.key=value.")
    ] = None,
    list_presets: Annotated[
        bool, typer.Option("--list", help="List the shipped presets (those matching PATTERN) and exit.")
    ] = False,
    pattern: Annotated[
        str | None, typer.Argument(metavar="[PATTERN]", help="With --list: a glob or text the names must match.")
    ] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Print the resolved config, run name and sources; train nothing.")
    ] = False,
    name: Annotated[str | None, typer.Option("--name", help="Run directory name instead of the derived one.")] = None,
) -> None:
    """Train a student against a frozen teacher (or a vanilla model) from a preset.

    The run directory is named after dataset, method, pair, M and seed, plus what the overrides change
    (`+temperature=8`) and `-partial-...` for runs cut short (--max-steps, fewer epochs than the preset).
    """
    from sddkd import config

    if pattern is not None and not list_presets:
        fail(f"unexpected argument {pattern!r}: give the preset with --preset (a PATTERN goes with --list)")
    if list_presets:
        from sddkd.config_tools import matching_presets

        with user_errors():
            listed = matching_presets(pattern)
        width = max(len(n) for n, _ in listed)
        for preset_name, description in listed:
            console.print(escape(f"{preset_name:<{width}}  {description}"), highlight=False, soft_wrap=True)
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
        cfg = config.load_config(
            preset, scales=scales, dataset=dataset, overrides=assignments + (overrides or []), name=name
        )
        if dry_run:
            from sddkd.config_tools import show_text

            sys.stdout.write(show_text(cfg, out))
            return
    except config.ConfigError as exc:
        fail(str(exc))
    if resume and restart:
        fail("--resume continues a run and --restart discards it: give one of them")
    from sddkd.errors import UserError
    from sddkd.run_lock import LOCKED_EXIT, RunLockedError

    try:
        from sddkd.engine.loop import train

        record = train(cfg, out, resume=resume, restart=restart, console=err_console)
    except RunLockedError as exc:  # a code of its own: the suite then shows the run as running elsewhere
        fail(str(exc), code=LOCKED_EXIT)
    except UserError as exc:
        fail(str(exc))
    except PermissionError as exc:
        fail(f"no permission to use {exc.filename}: fix its permissions or choose another --out")
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
        from sddkd.engine.evaluation import evaluate_checkpoint

        result = evaluate_checkpoint(
            checkpoint, dataset=dataset, data_root=data_root, arch=arch, scales=scales, device=device,
            batch_size=batch_size,
        )  # fmt: skip
    console.print(f"{result['arch']} on {result['dataset']}: top-1 {result['top1']:.2f}%  top-5 {result['top5']:.2f}%")
    for m, top1 in result.get("scales", {}).items():
        console.print(f"  scale {m}x{m}: mean per-cell top-1 {top1:.2f}%", highlight=False)


# --- analyze --------------------------------------------------------------------------------------------------


@app.command("analyze")
def analyze_command(
    checkpoint: Annotated[
        Path,
        typer.Option(metavar="RUN_DIR|FILE", help="A run directory (its best.pt) or a checkpoint of `sddkd train`."),
    ],
    teacher: Annotated[
        Path | None, typer.Option(help="Teacher checkpoint \\[default: the one the run recorded, else the store's].")
    ] = None,
    teacher_arch: Annotated[
        str | None, typer.Option(help="Teacher architecture \\[default: the run's]; needed for a vanilla run.")
    ] = None,
    dataset: Annotated[
        str | None, typer.Option(help="Expected dataset; another than the checkpoint's is an error.")
    ] = None,
    data_root: Annotated[Path | None, typer.Option(help="Data root \\[default: the checkpoint's].")] = None,
    baseline: Annotated[
        Path | None,
        typer.Option(metavar="RUN_DIR|FILE", help="A vanilla student: which classes distillation helped or hurt."),
    ] = None,
    out: Annotated[Path | None, typer.Option(help="Output folder \\[default: RUN_DIR/analysis].")] = None,
    scales: Annotated[
        str | None, typer.Option("--M", help="Region scales \\[default: the run's M, else 1,2,4].")
    ] = None,
    temperature: Annotated[float | None, typer.Option(help="KL temperature \\[default: the run's].")] = None,
    embedding: Annotated[
        Literal["auto", "tsne", "pca"], typer.Option(help="auto: t-SNE with the `analysis` extra, else PCA.")
    ] = "auto",
    device: Annotated[str, typer.Option(help="cpu, cuda or cuda:N.")] = "auto",
    batch_size: Annotated[int, typer.Option(min=1)] = 256,
) -> None:
    """Compare a student with its teacher on the test set: agreement, KL, correlation difference, logit
    statistics, SDD regions, calibration, per-class accuracy, embeddings. Writes PNGs and analysis.json."""
    with user_errors():
        from sddkd.analysis.run import analyze

        result = analyze(
            checkpoint, teacher=teacher, teacher_arch=teacher_arch, dataset=dataset, data_root=data_root,
            baseline=baseline, out=out, scales=scales, temperature=temperature, embedding=embedding, device=device,
            batch_size=batch_size,
        )  # fmt: skip
    print_analysis(console, result)


def print_analysis(out: Console, result: Any) -> None:
    """The summary line and where the files went; soft-wrapped, so a long path stays one piece to copy."""
    s = result.summary
    out.print(
        f"top-1 teacher {s['top1']['teacher']:.2f}%, student {s['top1']['student']:.2f}%; agreement "
        f"{100 * s['agreement']['top1']:.2f}%; correlation difference {s['correlation_difference']['mean']:.4f}; "
        f"ECE teacher {100 * s['calibration']['teacher']['ece']:.2f}%, student {100 * s['calibration']['student']['ece']:.2f}%",
        highlight=False, soft_wrap=True,
    )  # fmt: skip
    out.print(f"wrote {len(result.files)} files into {escape(str(result.out_dir))}", highlight=False, soft_wrap=True)


# --- suite ----------------------------------------------------------------------------------------------------


@app.command("suite")
def suite_command(
    target: Annotated[
        str,
        typer.Argument(
            metavar="NAME|FILE.yaml",
            help=(
                "A shipped suite (cifar100, cub200, baselines, cub200-baselines, lskd-table, sdd-table, imagenet, "
                "smoke) or a YAML file."
            ),
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
        from sddkd.engine.teacher_cache_serve import build_for_config

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
    analysis: Annotated[
        bool, typer.Option("--analysis", help="Link each run's `sddkd analyze` figures from report.md.")
    ] = False,
    include_partial: Annotated[
        bool,
        typer.Option("--include-partial", help="Also report partial runs (--max-steps, fewer epochs than the preset)."),
    ] = False,
) -> None:
    """Summarise run directories into tables (terminal, Markdown, CSV, JSON) and optional plots."""
    from sddkd.report.render import ReportError, generate_report, render, render_table

    try:
        report = generate_report(runs_dir, out_dir=out, plots=plots, analysis=analysis, include_partial=include_partial)
    except ReportError as error:
        fail(str(error))
    for warning in report.warnings:
        err_console.print(f"[yellow]warning:[/] {escape(warning)}", highlight=False, soft_wrap=True)
    if output_format == "table":
        # a terminal wraps cells at its width; a file or pipe gets every row at its natural width, one line each
        shown = console if console.is_terminal else Console(width=10_000, soft_wrap=True)
        shown.print(render_table(report, width=console.width if console.is_terminal else None))
    else:
        sys.stdout.write(render(report, output_format))
    # keep stdout clean for piping the md/csv/json text
    notes = console if output_format == "table" else err_console
    notes.print(f"wrote {len(report.files)} files into {escape(str(out or runs_dir))}", highlight=False)


from sddkd.cli.configs import config_app  # noqa: E402  (the `config` commands; defined apart to keep this file short)

app.add_typer(config_app)

# --------------------------------------------------------------------------------------------------------------


def main() -> None:
    app(prog_name="sddkd")


if __name__ == "__main__":
    main()
