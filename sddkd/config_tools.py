"""See and edit recipes before training: `sddkd config show|cp|validate`, `train --list` and `train --dry-run`.

No torch import, except `validate`, which checks architecture names against the model registry.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass
from pathlib import Path

import yaml
from pydantic import ValidationError

from sddkd.config import (
    ConfigError,
    RunConfig,
    config_hash,
    describe_error,
    list_presets,
    load_yaml,
    presets,
    resolve_preset,
    shipped_preset_name,
)
from sddkd.datasets import PUBLISHED_DATASETS
from sddkd.files import write_text_atomic
from sddkd.locations import teacher_store_path
from sddkd.rundir.naming import differences, partial_reason, run_name
from sddkd.rundir.state import read_run_state

# --- listing ----------------------------------------------------------------------------------------------------


def preset_description(path: Path) -> str:
    """A preset's one-line description: its `description` key, else its first comment line."""
    text = path.read_text(encoding="utf-8")
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith("#") and stripped.lstrip("# ").strip():
            return stripped.lstrip("# ").strip()
        if stripped and not stripped.startswith("#"):
            break
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError:
        return ""
    return str(raw.get("description") or "") if isinstance(raw, dict) else ""


def matching_presets(pattern: str | None = None) -> list[tuple[str, str]]:
    """(name, description) of the shipped presets matching a glob (`*kd*/res32x4*`), or containing the text."""
    names = list_presets()
    if pattern:
        glob = any(char in pattern for char in "*?[")
        names = [n for n in names if (fnmatch.fnmatch(n, pattern) if glob else pattern in n)]
        if not names:
            raise ConfigError(f"no preset matches {pattern!r}; `sddkd train --list` shows them all")
    root = presets.presets_root()
    return [(name, preset_description(root / f"{name}.yaml")) for name in names]


# --- show / dry-run -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Sources:
    teacher: str | None  # where the teacher checkpoint would come from; None for vanilla training
    data: str
    run_dir: str


def _get_teacher_hint(dataset: str, arch: str) -> str:
    if dataset in PUBLISHED_DATASETS:  # `sddkd fetch-teachers` has sources for each
        return f"sddkd fetch-teachers --dataset {dataset} --arch {arch}"
    if dataset == "synthetic":
        return f"sddkd suite smoke registers it, or train it with sddkd train --preset synthetic/vanilla/{arch}"
    return "train it with a vanilla preset and pass its checkpoint with --teacher"


def describe_sources(cfg: RunConfig, out: Path) -> Sources:
    """Where a run would read its teacher and data, and the state of its run directory, without reading either."""
    teacher = None
    if cfg.teacher is not None:
        if cfg.teacher.checkpoint:
            found = "present" if Path(cfg.teacher.checkpoint).expanduser().is_file() else "MISSING"
            teacher = f"{cfg.teacher.arch} from teacher.checkpoint {cfg.teacher.checkpoint} ({found})"
        else:
            stored = teacher_store_path(cfg.data.name, cfg.teacher.arch)
            found = "present" if stored.is_file() else f"missing: {_get_teacher_hint(cfg.data.name, cfg.teacher.arch)}"
            teacher = f"{cfg.teacher.arch} from the teacher store, {stored} ({found})"
    if cfg.data.synthetic is not None:
        synth = cfg.data.synthetic
        data = (
            f"generated in memory: {synth.num_classes} classes, {synth.image_size} px, "
            f"{synth.train_per_class}/{synth.test_per_class} train/test images per class, seed {synth.seed}"
        )
    else:
        root = Path(cfg.data.root).expanduser()
        # the marker `sddkd prepare-data` writes once a dataset is ready (sddkd.data.prepare.marker_path)
        ready = (root / ".prepared" / f"{cfg.data.name}.json").is_file()
        state = "prepared" if ready else f"not prepared: sddkd prepare-data {cfg.data.name} --data-root {root}"
        data = f"{cfg.data.name} under {root.resolve()} ({state})"
    folder = Path(out) / run_name(cfg)
    recorded = read_run_state(folder, config_hash(cfg))
    run_state = {
        "new": "new",
        "finished": "finished: training it again does nothing",
        "conflict": "holds another recipe: choose another --out or --name",
        "running": "running now",
    }.get(recorded.state, f"{recorded.state}: --resume continues it")
    return Sources(teacher, data, f"{folder} ({run_state})")


def show_text(cfg: RunConfig, out: Path) -> str:
    """The resolved config as YAML (loadable as a preset), under a comment header naming its identity and sources."""
    sources = describe_sources(cfg, out)
    changed = differences(cfg)
    partial = partial_reason(cfg)
    header = [
        f"# run name: {run_name(cfg)}",
        f"# config hash: {config_hash(cfg)}",
        f"# run directory: {sources.run_dir}",
        f"# preset: {cfg.preset or '(none: a config file of its own)'}",
    ]
    if changed:
        header.append("# changed from the preset: " + ", ".join(f"{k}={v}" for k, v in changed.items()))
    if partial:
        header.append(f"# partial run ({partial}): left out of report means unless --include-partial")
    if sources.teacher:
        header.append(f"# teacher: {sources.teacher}")
    header.append(f"# data: {sources.data}")
    body = yaml.safe_dump(cfg.model_dump(mode="json", exclude_none=False), sort_keys=False)
    return "\n".join(header) + "\n" + body


# --- cp -------------------------------------------------------------------------------------------------------


def copy_preset(preset: str, dest: Path, *, force: bool = False) -> Path:
    """Copy a preset to `dest` for editing: its text and header kept, plus `preset:` naming where it came from."""
    source = resolve_preset(preset)
    if dest.suffix not in (".yaml", ".yml"):
        raise ConfigError(f"{dest} must end in .yaml, so `sddkd train --preset {dest}` reads it as a file")
    if dest.exists() and not force:
        raise ConfigError(f"{dest} already exists; pass --force to overwrite it")
    if not dest.parent.is_dir():
        raise ConfigError(f"folder {dest.parent} does not exist")
    text = source.read_text(encoding="utf-8")
    lines = text.splitlines(keepends=True)
    header_end = next((i for i, line in enumerate(lines) if line.strip() and not line.lstrip().startswith("#")), 0)
    origin = shipped_preset_name(source) or source
    added = [f"# Copied from {origin} by `sddkd config cp`; run: sddkd train --preset {dest}\n"]
    name = shipped_preset_name(source)
    if name is not None and "preset" not in load_yaml(source):
        # run names then list what this copy changes, exactly as `--set` overrides of the preset would
        added.append(f"preset: {name}  # the shipped preset this copy derives from\n")
    return write_text_atomic(dest, "".join(lines[:header_end] + added + lines[header_end:]))


# --- validate -------------------------------------------------------------------------------------------------


def file_problems(target: str) -> list[str]:
    """Every problem of one config file or preset name: YAML, keys and values, preset reference, architectures."""
    try:
        path = resolve_preset(target)
        raw = load_yaml(path)
    except ConfigError as exc:
        return [str(exc)]
    try:
        cfg = RunConfig.model_validate(raw)
    except ValidationError as exc:
        return [describe_error(error) for error in exc.errors()]
    problems = []
    try:
        differences(cfg)  # reads the preset it derives from
    except ConfigError as exc:
        problems.append(str(exc))
    from sddkd.models import list_models  # imports torch: only validate pays for it

    # synthetic data stands in for a dataset's geometry; any registered net may train on it
    dataset = None if cfg.data.name == "synthetic" else cfg.data.name
    known = set(list_models(dataset))
    archs = [("student", cfg.student)] + ([("teacher.arch", cfg.teacher.arch)] if cfg.teacher else [])
    for key, arch in archs:
        if arch not in known:
            problems.append(f"{key}: unknown architecture {arch!r} for {dataset or 'synthetic'} data")
    return problems
