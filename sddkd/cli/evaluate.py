"""`sddkd eval`: top-1 / top-5 of a checkpoint, and each region scale's accuracy for multi-scale models."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from sddkd.cli.common import BatchSizeOption, DeviceOption, ScalesOption, console, scales_of, user_errors


def eval_command(
    checkpoint: Annotated[
        Path, typer.Option(help="A checkpoint written by `sddkd train`, or a published teacher file.")
    ],
    dataset: Annotated[str | None, typer.Option(help="Dataset to evaluate on \\[default: the checkpoint's].")] = None,
    data_root: Annotated[Path | None, typer.Option(help="Data root \\[default: the checkpoint's, else data].")] = None,
    arch: Annotated[str | None, typer.Option(help="Architecture, for a published file that carries no config.")] = None,
    scales: ScalesOption = None,
    device: DeviceOption = "auto",
    batch_size: BatchSizeOption = 256,
) -> None:
    """Evaluate a checkpoint: top-1 / top-5, and each region scale's accuracy for multi-scale models."""
    region_scales = scales_of(scales)
    with user_errors():
        from sddkd.engine.evaluation import evaluate_checkpoint

        result = evaluate_checkpoint(
            checkpoint, dataset=dataset, data_root=data_root, arch=arch, scales=region_scales,
            device=device or "auto", batch_size=batch_size,
        )  # fmt: skip
    console.print(f"{result['arch']} on {result['dataset']}: top-1 {result['top1']:.2f}%  top-5 {result['top5']:.2f}%")
    for m, top1 in result.get("scales", {}).items():
        console.print(f"  scale {m}x{m}: mean per-cell top-1 {top1:.2f}%", highlight=False)
