"""Preset files and the raw dicts read from them: where the shipped presets are, a name resolved to its file, YAML
read safely (one-line errors, no alias bombs), `--set` overrides and `--dataset synthetic` applied to the raw dict
before it is validated (`sddkd.config.load_config`). No torch import.
"""

from __future__ import annotations

import difflib
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from sddkd.datasets import synthetic_stand_in
from sddkd.errors import ConfigError

DEFAULT_PRESET_DIR = ("cifar100", "sdd_kd_lskd")  # where a bare pair name like `res32x4_res8x4` is looked up first


def presets_root() -> Path:
    """The shipped presets: `sddkd.presets` when installed, the repo's `presets/` in a plain source checkout."""
    try:
        root = Path(str(resources.files("sddkd.presets")))
    except ModuleNotFoundError:
        root = Path(__file__).resolve().parents[2] / "presets"  # sddkd/config/ -> the checkout
    return root


def list_presets() -> list[str]:
    """Names like `cifar100/sdd_kd_lskd/res32x4_res8x4`, sorted."""
    root = presets_root()
    names = sorted(p.relative_to(root).with_suffix("").as_posix() for p in root.rglob("*.yaml"))
    if not names:  # a build that left the package data out: say so rather than list nothing
        raise ConfigError(f"no presets found in {root}: this installation of sddkd is incomplete; reinstall it")
    return names


def resolve_preset(name: str) -> Path:
    """A YAML path, a full preset name, `method/pair`, or a short name (first under cifar100/sdd_kd_lskd)."""
    path = Path(name).expanduser()
    if path.suffix in (".yaml", ".yml"):
        if not path.is_file():
            raise ConfigError(f"preset file {name} does not exist")
        return path
    names = list_presets()
    key = name.strip().strip("/")
    candidates = [key, "/".join((*DEFAULT_PRESET_DIR, key)), f"{DEFAULT_PRESET_DIR[0]}/{key}"]
    for candidate in candidates:
        if candidate in names:
            return presets_root() / f"{candidate}.yaml"
    by_stem = [n for n in names if n.endswith("/" + key)]
    preferred = [n for n in by_stem if n.startswith(DEFAULT_PRESET_DIR[0] + "/")]  # CIFAR-100 is the default
    if len(by_stem) == 1 or len(preferred) == 1:
        return presets_root() / f"{(preferred or by_stem)[0]}.yaml"
    if len(by_stem) > 1:
        raise ConfigError(f"preset {name!r} is ambiguous; use one of: {', '.join(by_stem)}")
    stems = sorted({n.rsplit("/", 1)[-1] for n in names} | set(names))
    close = difflib.get_close_matches(key, stems, n=4, cutoff=0.5)
    hint = f"; did you mean {', '.join(close)}?" if close else ""
    raise ConfigError(f"unknown preset {name!r}{hint} (`sddkd train --list` shows all presets)")


def shipped_preset_name(path: Path) -> str | None:
    """`cifar100/kd/res32x4_res8x4` for a file among the shipped presets, else None."""
    try:
        relative = path.resolve().relative_to(presets_root().resolve())
    except ValueError:
        return None
    return relative.with_suffix("").as_posix()


def yaml_problem(exc: yaml.YAMLError) -> str:
    """A parser error as one readable clause: where (line, column) and what, without the echoed source lines."""
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
    context = getattr(exc, "context", None)
    where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
    if "'\\t'" in problem:  # PyYAML names a tab as the two characters backslash-t
        problem += " (indent with spaces, not tabs)"
    return where + problem + (f" ({context})" if context else "")


# A config is a few hundred values; YAML aliases can make a short file stand for billions (an "alias bomb"), and
# any message or hash that formats the expanded value would then run for ever. Refuse such documents on load.
MAX_YAML_VALUES = 100_000


def _expands_beyond(value: Any, limit: int) -> bool:
    """Whether `value`, with every shared (aliased) node counted each time it is used, has more than `limit`
    nodes; stops counting at the limit, so a bomb or a self-referencing alias costs at most `limit` steps."""
    count, stack = 0, [value]
    while stack:
        node = stack.pop()
        count += 1
        if count > limit:
            return True
        if isinstance(node, dict):
            stack.extend(node.keys())
            stack.extend(node.values())
        elif isinstance(node, list | tuple):
            stack.extend(node)
    return False


def load_yaml(path: Path) -> dict[str, Any]:
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path} is not valid YAML: {yaml_problem(exc)}") from None
    if _expands_beyond(raw, MAX_YAML_VALUES):
        raise ConfigError(
            f"{path}: its YAML aliases (*name) expand to more than {MAX_YAML_VALUES:,} values, far beyond any config; "
            "write the values out instead"
        )
    if not isinstance(raw, dict):
        raise ConfigError(f"{path} must hold a mapping of config keys")
    return raw


def apply_override(raw: dict[str, Any], assignment: str) -> None:
    """Apply `section.key=value` (value parsed as a YAML scalar or list) to a raw config dict, in place."""
    if "=" not in assignment:
        raise ConfigError(f"override {assignment!r} must look like key=value, e.g. optim.lr=0.1")
    dotted, text = assignment.split("=", 1)
    keys = [k for k in dotted.strip().split(".") if k]
    if not keys:
        raise ConfigError(f"override {assignment!r} names no key")
    try:
        value = yaml.safe_load(text) if text.strip() else None
    except yaml.YAMLError:
        value = text
    if _expands_beyond(value, MAX_YAML_VALUES):
        raise ConfigError(f"override {dotted.strip()}: its YAML aliases expand to more than {MAX_YAML_VALUES:,} values")
    node = raw
    for key in keys[:-1]:
        child = node.get(key)
        if child is None:
            child = node[key] = {}
        if not isinstance(child, dict):
            raise ConfigError(f"override {assignment!r}: {key} is not a section")
        node = child
    node[keys[-1]] = value


def swap_to_synthetic(raw: dict[str, Any]) -> None:
    """`--dataset synthetic`: generated data of the same shape and class count as the preset's dataset."""
    data = raw.setdefault("data", {})
    original = data.get("name", "cifar100")
    if original == "synthetic":
        return
    data["name"] = "synthetic"
    data["synthetic"] = synthetic_stand_in(original).model_dump(exclude={"seed"})
