"""Suites: a named list of runs (data, not code), expanded into a plan of fully resolved runs, then executed.

A suite is a YAML file: the shipped ones live in `sddkd/suite/definitions/<name>.yaml`; any other file with the
same schema works too. Schema (every key but `runs` optional; unknown keys are errors):

    description: what the suite reproduces
    teachers: store          # store: distil from the teacher store (default); train: train every teacher first
    seeds: [0]               # seeds of every entry (`--seeds N` replaces them with 0..N-1)
    set: [optim.epochs=2]    # overrides (`key=value`, as `--set`) for every run, teacher runs included
    runs:                    # entries; each expands to presets x M x seeds runs
      - presets: [cifar100/sdd_kd_lskd/res32x4_res8x4, my_preset.yaml]  # names, or files (relative to the suite
                                                                        # file); one string is a list of one
        M: ["1", "1,2", "1,2,4"]  # optional, one run per setting; [1, 2, 4] alone is the one setting (1,2,4)
        seeds: [0, 1]        # optional, replaces the suite's seeds
        set: [optim.lr=0.02] # optional, applied after the suite's `set` (seeds go in `seeds`, not here)

Planning resolves each run with `config.load_config`, names it with `run_name` and fingerprints it with
`config_hash`. Teacher runs (`teachers: train`, or `--train-teachers` for teachers the store lacks) come first; their
students get `teacher.checkpoint` = the teacher run's `checkpoints/best.pt` and wait for it.

Runs execute on this machine (`suite_runner`, the default) or as SLURM job arrays (`suite_slurm`, `--backend slurm`);
either way a run directory says what state its run is in, and `--status` reads only those.

No torch import here: dry runs, status and planning stay fast.
"""

from __future__ import annotations

import difflib
import fnmatch
import json
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from rich.console import Console

from sddkd.config import ConfigError, RunConfig, config_hash, load_config, load_yaml, resolve_preset
from sddkd.rundir.naming import run_name
from sddkd.rundir.record import RunPaths
from sddkd.scales import Scales, format_scales, parse_scales
from sddkd.suite.runner import (
    PlannedRun,
    SuiteError,
    SuiteOutcome,
    SuitePlan,
    TeacherStore,
    default_store,
    run_suite,
)
from sddkd.suite.slurm import SlurmOptions, require_submitit, submit_suite
from sddkd.suite.view import (
    LiveStatus,
    plan_rows,
    plan_table,
    print_submission,
    print_summary,
    status_rows,
    status_table,
)  # fmt: skip

__all__ = [
    "PlannedRun", "SuiteEntry", "SuiteError", "SuiteOutcome", "SuitePlan", "SuiteSource", "SuiteSpec",
    "list_suites", "load_suite", "plan_rows", "plan_suite", "run_suite", "status_rows", "suite_command",
]  # fmt: skip


# --- the suite file schema -------------------------------------------------------------------------------------


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


def _one_or_many(value: Any) -> Any:
    """A single string where a list is expected is a list of one."""
    return [value] if isinstance(value, str) else value


def _no_seed_override(overrides: list[str]) -> list[str]:
    if any(o.replace(" ", "").startswith("seed=") for o in overrides):
        raise ValueError("seeds are listed with `seeds: [0, 1]`, not set via `set`")
    return overrides


class SuiteEntry(_Strict):
    presets: list[str] = Field(min_length=1)
    scales: list[Scales] | None = Field(None, alias="M", min_length=1)  # None: each preset's own M
    seeds: list[int] | None = Field(None, min_length=1)
    overrides: list[str] = Field([], alias="set")

    _lists = field_validator("presets", "overrides", mode="before")(_one_or_many)
    _seeds_apart = field_validator("overrides")(_no_seed_override)

    @field_validator("scales", mode="before")
    @classmethod
    def _parse_each_m(cls, value: Any) -> Any:
        """Several settings are strings or lists (`["1", "1,2"]`, `[[1], [1, 2]]`); `[1, 2, 4]` is one setting."""
        if value is None:
            return None
        one_setting = not isinstance(value, list) or all(isinstance(m, int) for m in value)
        return [parse_scales(m) for m in ([value] if one_setting else value)]


class SuiteSpec(_Strict):
    description: str = ""
    teachers: Literal["store", "train"] = "store"
    seeds: list[int] = Field([0], min_length=1)
    overrides: list[str] = Field([], alias="set")
    runs: list[SuiteEntry] = Field(min_length=1)

    _lists = field_validator("overrides", mode="before")(_one_or_many)
    _seeds_apart = field_validator("overrides")(_no_seed_override)


@dataclass(frozen=True)
class SuiteSource:
    name: str  # the shipped suite's name, or the file's stem
    path: Path
    spec: SuiteSpec


def suites_root() -> Path:
    return Path(str(resources.files("sddkd.suite") / "definitions"))


def list_suites() -> list[str]:
    return sorted(p.stem for p in suites_root().glob("*.yaml"))


def load_suite(name_or_file: str) -> SuiteSource:
    """A shipped suite by name, or a suite YAML file; one clear SuiteError for an unknown name or a bad file."""
    path = Path(name_or_file).expanduser()
    if path.suffix in (".yaml", ".yml"):
        if not path.is_file():
            raise SuiteError(f"suite file {name_or_file} does not exist")
    elif name_or_file in list_suites():
        path = suites_root() / f"{name_or_file}.yaml"
    else:
        close = difflib.get_close_matches(name_or_file, list_suites(), n=3, cutoff=0.5)
        hint = f"did you mean {' or '.join(close)}? " if close else ""
        raise SuiteError(
            f"unknown suite {name_or_file!r}; {hint}choose one of {', '.join(list_suites())} or pass a suite YAML file"
        )
    try:
        raw = load_yaml(path)
        spec = SuiteSpec.model_validate(raw)
    except ConfigError as exc:
        raise SuiteError(str(exc)) from None
    except ValidationError as exc:
        raise SuiteError(f"suite file {path}: {_describe(exc)}") from None
    return SuiteSource(path.stem, path, spec)


def _describe(exc: ValidationError) -> str:
    """The first error as one sentence; a misspelled key (reported first: it explains a missing one) gets the allowed
    keys and the closest of them."""
    errors = exc.errors()
    error = next((e for e in errors if e["type"] == "extra_forbidden"), errors[0])
    loc = [str(p) for p in error["loc"]]
    where = ".".join(loc) or "suite"
    if error["type"] == "extra_forbidden":
        model = SuiteEntry if loc[:1] == ["runs"] and len(loc) > 2 else SuiteSpec
        allowed = sorted(f.alias or name for name, f in model.model_fields.items())
        close = difflib.get_close_matches(loc[-1], allowed, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        return f"unknown key {where!r} (allowed: {', '.join(allowed)}){hint}"
    if error["type"] == "missing":
        return f"missing key {where!r}"
    return f"{where}: {error['msg'].removeprefix('Value error, ')}"


# --- planning --------------------------------------------------------------------------------------------------


def plan_suite(
    source: SuiteSource,
    *,
    out: Path | str = "logs",
    seeds: int | None = None,
    only: list[str] | None = None,
    dataset: str | None = None,
    epochs: int | None = None,
    train_teachers: bool = False,
    store: TeacherStore | None = None,
) -> SuitePlan:
    """Expand a suite into fully resolved runs: entries x presets x M x seeds, plus the teacher runs they wait for."""
    spec, out = source.spec, Path(out).expanduser().resolve()
    common = [*spec.overrides, *([f"optim.epochs={epochs}"] if epochs is not None else [])]
    runs: dict[str, PlannedRun] = {}
    for entry in spec.runs:
        entry_seeds = list(range(seeds)) if seeds is not None else (entry.seeds or spec.seeds)
        for preset in entry.presets:
            preset_ref = _preset_ref(source, preset)
            scale_options: list[Scales | None] = list(entry.scales) if entry.scales else [None]  # None: the preset's
            for scales in scale_options:
                for seed in entry_seeds:
                    overrides = [*common, *entry.overrides, f"seed={seed}"]
                    cfg = _load(source, preset_ref, scales, dataset, overrides)
                    _add(source, runs, PlannedRun(run_name(cfg), preset, cfg, config_hash(cfg)))
    if spec.teachers == "train" or train_teachers:
        # a suite that trains its own teachers distils from them, and registers each only where the store has none
        register = spec.teachers != "train"
        runs = _with_teacher_runs(source, runs, out, dataset, common, register=register, store=store)
    if only:
        runs = _select(source, runs, only)
    ordered = sorted(runs.values(), key=lambda r: not r.trains_teacher)  # stable: teachers first, else suite order
    return SuitePlan(source.name, out, tuple(ordered))


def _preset_ref(source: SuiteSource, preset: str) -> str:
    """Preset files named relative to a suite file are found next to it."""
    path = Path(preset).expanduser()
    if path.suffix in (".yaml", ".yml") and not path.is_absolute() and (source.path.parent / path).is_file():
        return str(source.path.parent / path)
    return preset


def _load(
    source: SuiteSource, preset: str, scales: Scales | None, dataset: str | None, overrides: list[str]
) -> RunConfig:
    try:
        cfg = load_config(preset, dataset=dataset, overrides=overrides)
    except ConfigError as exc:
        raise SuiteError(f"suite {source.name}, preset {preset}: {exc}") from None
    if scales is None:
        return cfg
    if cfg.method.name == "vanilla":
        raise SuiteError(
            f"suite {source.name}: preset {preset} trains a vanilla model, which has no M; "
            "list it in an entry without M"
        )
    try:
        return load_config(preset, dataset=dataset, overrides=overrides, scales=scales)
    except ConfigError as exc:
        raise SuiteError(f"suite {source.name}, preset {preset} at M {format_scales(scales)}: {exc}") from None


def _add(source: SuiteSource, runs: dict[str, PlannedRun], run: PlannedRun) -> None:
    """Add a run; the same run listed twice counts once, two recipes under one run name are an error."""
    earlier = runs.get(run.name)
    if earlier is not None and earlier.config_hash != run.config_hash:
        raise SuiteError(
            f"suite {source.name}: {earlier.preset} and {run.preset} both expand to run {run.name} with different "
            "settings, so one would overwrite the other; change the seed or a setting that names the run"
        )
    if earlier is None or run.trains_teacher:
        runs[run.name] = run


def _with_teacher_runs(
    source: SuiteSource,
    runs: dict[str, PlannedRun],
    out: Path,
    dataset: str | None,
    overrides: list[str],
    *,
    register: bool,
    store: TeacherStore | None,
) -> dict[str, PlannedRun]:
    """Plan a vanilla run per teacher the students need (store mode: only those the store lacks) and point the
    students at its best checkpoint."""
    if register:
        store = store if store is not None else default_store()
        if store is None:
            raise SuiteError("--train-teachers needs the teacher store (sddkd.teachers), which this installation lacks")
    teachers: dict[tuple[str, str], PlannedRun | None] = {}
    planned: dict[str, PlannedRun] = {}
    students: dict[str, PlannedRun] = {}
    for run in runs.values():
        cfg = run.config
        if cfg.teacher is None or cfg.teacher.checkpoint is not None:
            students[run.name] = run
            continue
        key = (cfg.data.name, cfg.teacher.arch)
        if key not in teachers:
            in_store = register and store is not None and store.find_teacher(*key) is not None
            teachers[key] = None if in_store else _teacher_run(source, run, dataset, overrides, register)
        teacher = teachers[key]
        if teacher is None:
            students[run.name] = run
            continue
        _add(source, planned, teacher)
        students[run.name] = _distil_from(run, teacher, RunPaths(out / teacher.name).best)
    for run in students.values():
        _add(source, planned, run)
    return planned


def _teacher_run(
    source: SuiteSource, student: PlannedRun, dataset: str | None, overrides: list[str], register: bool
) -> PlannedRun:
    assert student.config.teacher is not None
    arch = student.config.teacher.arch
    home = load_yaml(resolve_preset(_preset_ref(source, student.preset))).get("data", {}).get("name", "cifar100")
    preset = f"{home}/vanilla/{arch}"
    try:
        resolve_preset(preset)
    except ConfigError:
        raise SuiteError(
            f"suite {source.name}: teacher {arch} cannot be trained here because there is no preset {preset}; "
            "fetch the teacher with `sddkd fetch-teachers` instead"
        ) from None
    cfg = _load(source, preset, None, dataset, [*overrides, "seed=0"])
    if (cfg.data.name, cfg.data.num_classes) != (student.config.data.name, student.config.data.num_classes):
        raise SuiteError(f"suite {source.name}: teacher preset {preset} trains on other data than {student.preset}")
    return PlannedRun(run_name(cfg), preset, cfg, config_hash(cfg), trains_teacher=True, register_teacher=register,
                      register_if_missing=not register)  # fmt: skip


def _distil_from(student: PlannedRun, teacher: PlannedRun, checkpoint: Path) -> PlannedRun:
    """The student reading the teacher run's best checkpoint, after that run (the hash ignores checkpoint paths)."""
    assert student.config.teacher is not None
    teacher_cfg = student.config.teacher.model_copy(update={"checkpoint": str(checkpoint)})
    cfg = student.config.model_copy(update={"teacher": teacher_cfg})
    return PlannedRun(student.name, student.preset, cfg, student.config_hash, depends_on=(teacher.name,))


def _select(source: SuiteSource, runs: dict[str, PlannedRun], patterns: list[str]) -> dict[str, PlannedRun]:
    """Runs whose name or preset matches any glob, plus the teacher runs they wait for."""
    keep = {
        name
        for name, run in runs.items()
        if any(fnmatch.fnmatchcase(t, p) for t in (name, run.preset) for p in patterns)
    }
    keep |= {dep for name in keep for dep in runs[name].depends_on}
    if not keep:
        example = next(iter(runs))
        raise SuiteError(
            f"no run of suite {source.name} matches --only {' '.join(patterns)}; names look like {example}, "
            "e.g. --only '*resnet8x4*'"
        )
    return {name: run for name, run in runs.items() if name in keep}


# --- the command -----------------------------------------------------------------------------------------------


def suite_command(
    target: str,
    *,
    console: Console,
    dry_run: bool = False,
    status: bool = False,
    output_format: Literal["table", "json"] = "table",
    seeds: int | None = None,
    only: list[str] | None = None,
    out: Path | str = "logs",
    devices: str | None = None,
    per_device: int = 1,
    train_teachers: bool = False,
    dataset: str | None = None,
    epochs: int | None = None,
    launcher: list[str] | None = None,
    store: TeacherStore | None = None,
    backend: Literal["local", "slurm"] = "local",
    slurm: SlurmOptions | None = None,
) -> int:
    """`sddkd suite`: plan, then print the plan (--dry-run), the runs' state (--status) or run it (on this machine,
    or submitted to SLURM with `backend="slurm"`); the exit code. `output_format` and `backend` come typed from the
    command line (Literal options there), so they are not checked again here."""
    if dry_run and status:
        raise SuiteError("--dry-run and --status each print something else; pass one of them")
    if backend == "local" and slurm is not None:
        raise SuiteError("the --slurm-* options apply to --backend slurm; add it or leave them out")
    if backend == "slurm" and (devices is not None or per_device != 1):
        raise SuiteError("--devices and --per-device apply to --backend local; on SLURM use the --slurm-* options")
    if backend == "slurm" and not (dry_run or status):
        require_submitit()  # before planning: a missing extra is the first thing to say
    source = load_suite(target)
    plan = plan_suite(source, out=out, seeds=seeds, only=only, dataset=dataset, epochs=epochs,
                      train_teachers=train_teachers, store=store)  # fmt: skip
    if dry_run or status:
        rows = plan_rows(plan) if dry_run else status_rows(plan)
        if output_format == "json":
            console.out(json.dumps(rows, indent=2), highlight=False)
        else:
            console.print(plan_table(plan) if dry_run else status_table(plan))
        return 0
    if backend == "slurm":
        submission = submit_suite(plan, slurm or SlurmOptions(), store=store, launcher=launcher)
        return print_submission(submission, console, target)
    with LiveStatus(console, plan) as live:
        outcome = run_suite(plan, devices=devices, per_device=per_device, launcher=launcher, store=store,
                            on_update=live.update)  # fmt: skip
    return print_summary(outcome, console)
