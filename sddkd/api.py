"""The Python API behind `from sddkd import train`: a preset name or a RunConfig in, the run's record out."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from sddkd.config import RunConfig, build_config, load_config
from sddkd.scales import Scales


def train(
    config: RunConfig | str,
    out: str | Path = "logs",
    *,
    overrides: Sequence[str] = (),
    scales: Scales | str | None = None,  # "1,2,4" or (1, 2, 4): load_config parses text once
    dataset: str | None = None,
    name: str | None = None,
    resume: bool = False,
    console: Any = None,
) -> dict[str, Any]:
    """Train one run into `<out>/<run name>/` and return its record (the dict written to `result.json`).

    `config` is a preset name, a YAML path or a RunConfig from `load_config`; `overrides` are `section.key=value`
    strings as with `--set`, applied to a preset name or path only. Bad input raises `sddkd.errors.UserError`.
    """
    from sddkd.engine.loop import train as train_run  # torch: imported on the first call only

    if isinstance(config, RunConfig):
        if overrides or scales or dataset:
            raise TypeError("overrides, scales and dataset apply to a preset name; pass them to load_config instead")
        cfg = config if name is None else build_config({**config.model_dump(mode="json"), "name": name}, "--name")
    else:
        cfg = load_config(config, overrides=overrides, scales=scales, dataset=dataset, name=name)
    return train_run(cfg, Path(out), resume=resume, console=console)
