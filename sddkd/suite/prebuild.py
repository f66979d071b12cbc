"""The suite's teacher-logit caches, built before any run trains: runs that share a teacher and data share one
cache, and a group builds it ahead only when its runs together make at least as many teacher passes as the build
costs (or one of them asks for `teacher.cache=on`). Which cache a run uses, and building one, is the engine's
(`sddkd.engine.teacher_cache_serve`); this module only groups a suite's runs and asks for the builds.
"""

from __future__ import annotations

from rich.console import Console

from sddkd.config import RunConfig
from sddkd.engine.teacher_cache_serve import build_for_config
from sddkd.errors import UserError


def prebuild_for_suite(configs: list[RunConfig], console: Console, device: str) -> list[str]:
    """Build, before any run trains, one cache per group of `configs` that share a teacher and data and that
    together make at least as many teacher passes as the build costs (or ask for `on`); returns the caches' names.

    Runs whose teacher is not available yet (trained earlier in the same suite) build their own, under the lock."""
    groups: dict[str, list[RunConfig]] = {}
    for cfg in configs:
        if cfg.teacher is None or cfg.teacher.cache == "off" or cfg.data.spec.exact_cache_problem is not None:
            continue  # the run itself says why, if it asked for a cache
        engine = cfg.engine.model_copy(update={"device": device})
        key = cfg.model_dump_json(include={"data": True, "teacher": {"arch", "checkpoint"}}) + engine.amp
        groups.setdefault(key + str(max(cfg.scales)), []).append(cfg.model_copy(update={"engine": engine}))
    built = []
    for members in groups.values():
        first = members[0]
        passes = sum(c.optim.epochs if c.optim.max_steps is None else 0 for c in members)
        if not any(c.teacher and c.teacher.cache == "on" for c in members):
            crops = first.data.spec.train_crops
            if crops is None or passes < crops.views:
                continue
        try:
            opened = build_for_config(first, console, progress=first.engine.progress)
        except UserError as exc:  # e.g. the teacher is trained by this suite: its runs decide for themselves
            console.print(f"[yellow]teacher cache not built ahead[/]: {exc}", highlight=False)
            continue
        built.append(opened.directory.name)
    return built
