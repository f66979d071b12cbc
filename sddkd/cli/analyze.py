"""`sddkd analyze`: compare a student with its teacher on the test set; figures and analysis.json."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

import typer
from rich.console import Console
from rich.markup import escape

from sddkd.cli.common import BatchSizeOption, DeviceOption, ScalesOption, console, scales_of, user_errors


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
    scales: ScalesOption = None,
    temperature: Annotated[float | None, typer.Option(help="KL temperature \\[default: the run's].")] = None,
    embedding: Annotated[
        Literal["auto", "tsne", "pca"], typer.Option(help="auto: t-SNE with the `analysis` extra, else PCA.")
    ] = "auto",
    device: DeviceOption = "auto",
    batch_size: BatchSizeOption = 256,
) -> None:
    """Compare a student with its teacher on the test set: agreement, KL, correlation difference, logit
    statistics, SDD regions, calibration, per-class accuracy, embeddings. Writes PNGs and analysis.json."""
    region_scales = scales_of(scales)
    with user_errors():
        from sddkd.analysis.run import analyze

        result = analyze(
            checkpoint, teacher=teacher, teacher_arch=teacher_arch, dataset=dataset, data_root=data_root,
            baseline=baseline, out=out, scales=region_scales, temperature=temperature, embedding=embedding,
            device=device or "auto", batch_size=batch_size,
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
