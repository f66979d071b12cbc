"""Run identity: what a recipe changes from the shipped preset it derives from, and whether it is a partial run.

A run directory is named `<dataset>-<method>-<pair>-M<M>-s<seed>` plus a suffix built here:
- `+temperature=8+lr=0.1`: the recipe keys whose values differ from the preset (a hash once that gets long);
- `-partial-2steps` / `-partial-e2of240`: a smoke run (`--max-steps`, or fewer epochs than the preset).
So a sweep over one preset lands in one `--out` without collisions, and a smoke run never occupies the directory of
the full run. No torch import: suite planning and the report use this too.
"""

from __future__ import annotations

import hashlib
import json
import re
from functools import lru_cache
from typing import Any

from sddkd.config import (
    NOT_RECIPE,
    ConfigError,
    RunConfig,
    build_config,
    load_yaml,
    presets,
    shipped_preset_name,
    swap_to_synthetic,
)
from sddkd.scales import format_scales

# Keys the base name already shows, and keys that make a run partial rather than different.
IN_BASE_NAME = frozenset({"seed", "data.name", "method.name", "method.scales", "student", "teacher.arch"})
SUFFIX_LIMIT = 40  # characters of `+key=value` text before the suffix becomes a hash
_UNSAFE = re.compile(r"[^A-Za-z0-9._,=+-]")


def flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """{"optim": {"lr": 0.1}} -> {"optim.lr": 0.1}; lists stay values."""
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten(value, dotted + "."))
        else:
            flat[dotted] = value
    return flat


def flat_recipe(cfg: RunConfig) -> dict[str, Any]:
    """Every key that changes what a run computes (the config hash's input), as dotted keys."""
    flat = flatten(cfg.model_dump(mode="json", exclude=NOT_RECIPE))
    flat.pop("teacher.checkpoint", None)  # a path; the teacher's checksum identifies it instead
    return flat


def recipe_key(cfg: RunConfig) -> str:
    """12 hex digits identifying the recipe without its seed: the seeds of one recipe share it (report rows)."""
    recipe = {k: v for k, v in flat_recipe(cfg).items() if k != "seed"}
    return hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()[:12]


@lru_cache(maxsize=256)
def _preset_recipe(preset: str, synthetic: bool) -> dict[str, Any]:
    path = presets.presets_root() / f"{preset}.yaml"
    if not path.is_file() or shipped_preset_name(path) != preset:
        raise ConfigError(f"preset: {preset!r} is not a shipped preset (`sddkd train --list` shows them)")
    raw = load_yaml(path)
    if synthetic:  # `--dataset synthetic` keeps the preset's identity; the generated data is not an override
        swap_to_synthetic(raw)
    return flat_recipe(build_config(raw, source=path.name))


def preset_recipe(cfg: RunConfig) -> dict[str, Any] | None:
    """The flattened recipe of the preset `cfg` derives from (swapped to synthetic data like `cfg`), if any."""
    if cfg.preset is None:
        return None
    return dict(_preset_recipe(cfg.preset, cfg.data.name == "synthetic"))


def differences(cfg: RunConfig) -> dict[str, Any]:
    """Recipe keys whose values differ from the preset, with this run's values (None: the key is gone)."""
    reference = preset_recipe(cfg)
    if reference is None:
        return {}
    recipe = flat_recipe(cfg)
    changed = {}
    for key in sorted(set(recipe) | set(reference)):
        if key in IN_BASE_NAME or key == "optim.max_steps":
            continue
        if key == "optim.epochs" and recipe[key] < reference[key]:
            continue  # shorter than the preset: partial, said by partial_reason
        if recipe.get(key) != reference.get(key):
            changed[key] = recipe.get(key)
    return changed


def partial_reason(cfg: RunConfig) -> str | None:
    """`2steps` or `e2of240` for a run cut short of its preset (a smoke run), else None."""
    if cfg.optim.max_steps is not None:
        return f"{cfg.optim.max_steps}steps"
    reference = preset_recipe(cfg)
    if reference is not None and cfg.optim.epochs < reference["optim.epochs"]:
        return f"e{cfg.optim.epochs}of{reference['optim.epochs']}"
    return None


def _value_text(value: Any) -> str:
    if isinstance(value, bool) or value is None:
        return str(value).lower()
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, list):
        return ",".join(_value_text(v) for v in value)
    return str(value)


def short_keys(keys: list[str]) -> dict[str, str]:
    """Each dotted key by its last part, unless two keys share it."""
    last = [key.rsplit(".", 1)[-1] for key in keys]
    return {key: tail if last.count(tail) == 1 else key for key, tail in zip(keys, last)}


def identity_suffix(cfg: RunConfig) -> str:
    """What the run directory's name adds to the base name (empty for the preset as shipped)."""
    changed = differences(cfg)
    suffix = ""
    if changed:
        names = short_keys(list(changed))
        text = "+".join(f"{names[key]}={_value_text(value)}" for key, value in changed.items())
        if len(text) > SUFFIX_LIMIT:
            digest = hashlib.sha256(json.dumps(changed, sort_keys=True).encode()).hexdigest()[:8]
            text = f"{len(changed)}changes-{digest}"
        suffix = "+" + _UNSAFE.sub("_", text)
    reason = partial_reason(cfg)
    return suffix + (f"-partial-{reason}" if reason else "")


def identity_record(cfg: RunConfig) -> dict[str, Any]:
    """The identity fields of `result.json`: preset, what differs from it, the seedless recipe, partial or not."""
    reason = partial_reason(cfg)
    recipe = {k: v for k, v in flat_recipe(cfg).items() if k != "seed"}
    return {
        "preset": cfg.preset, "changed": differences(cfg), "recipe": recipe, "recipe_key": recipe_key(cfg),
        "partial": reason is not None, "partial_reason": reason,
    }  # fmt: skip


def run_name(cfg: RunConfig) -> str:
    """The run directory's name: `name` when given, else the base name plus what differs from the preset."""
    if cfg.name:
        return cfg.name
    return base_run_name(cfg) + identity_suffix(cfg)


def base_run_name(cfg: RunConfig) -> str:
    """Dataset, method, pair, M and seed."""
    if cfg.teacher is None:
        return f"{cfg.data.name}-{cfg.method.name}-{cfg.student}-s{cfg.seed}"
    pair = f"{cfg.teacher.arch}_{cfg.student}"
    return f"{cfg.data.name}-{cfg.method.name}-{pair}-M{format_scales(cfg.scales)}-s{cfg.seed}"
