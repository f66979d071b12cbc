"""`python -m sddkd.bench`: the engine's step against the reference-style loop, as one JSON object.

python -m sddkd.bench --device cpu --steps 20              # prints one JSON object
python -m sddkd.bench --cache --device cuda                # also the step fed by the teacher-logit cache
python -m sddkd.bench --mlkd --device cpu --steps 10       # MLKD mode: the loops of sddkd.bench.mlkd
"""

from __future__ import annotations

import json
from typing import Annotated

import typer

from sddkd.bench.core import run_bench
from sddkd.errors import UserError

app = typer.Typer(add_completion=False, pretty_exceptions_enable=False)

# Options only the single-view bench reads (run_bench): MLKD mode times the live teacher's training step in the
# engine's default memory format, with no evaluation pass and no cache. Parameter -> its flag, by value if a switch.
NOT_READ_BY_MLKD: dict[str, dict[object, str] | str] = {
    "channels_last": {True: "--channels-last", False: "--no-channels-last"},
    "evaluation": {True: "--eval", False: "--no-eval"},
    "cache": {True: "--cache", False: "--no-cache"},
    "cache_images": "--cache-images",
    "cache_build_images": "--cache-build-images",
}


def _flags_mlkd_ignores(ctx: typer.Context) -> list[str]:
    """The flags given on the command line that MLKD mode would silently ignore, as the user wrote them."""
    flags = []
    for name, flag in NOT_READ_BY_MLKD.items():
        source = ctx.get_parameter_source(name)  # typer's ParameterSource: DEFAULT unless the user set it
        if source is not None and source.name != "DEFAULT":
            flags.append(flag[ctx.params[name]] if isinstance(flag, dict) else flag)
    return flags


@app.command()
def main(
    ctx: typer.Context,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda or cuda:N.")] = "auto",
    steps: Annotated[int, typer.Option(min=1, help="Optimizer steps per timed round.")] = 30,
    batch_size: Annotated[int, typer.Option(min=1, help="Images per step.")] = 64,
    pair: Annotated[str, typer.Option(help="Teacher_student pair of an sdd_kd_lskd preset, or a preset name.")] = (
        "res32x4_res8x4"
    ),
    M: Annotated[
        str | None,
        typer.Option("--M", help="SDD scales, e.g. 1,2,4 (default 1,2,4; with --mlkd, the MLKD step's, default 1)."),
    ] = None,
    compile: Annotated[bool, typer.Option(help="torch.compile the engine's step.")] = True,
    amp: Annotated[
        str, typer.Option(help="auto (bf16 where the device has it natively, else fp32), bf16 or off.")
    ] = "auto",
    channels_last: Annotated[bool | None, typer.Option(help="Engine memory format (default: the engine's).")] = None,
    warmup: Annotated[int, typer.Option(min=1, help="Untimed steps of each loop first.")] = 5,
    rounds: Annotated[int, typer.Option(min=1, help="Alternating timed rounds; the median is reported.")] = 3,
    workers: Annotated[int | None, typer.Option(help="Baseline DataLoader workers (default 2, as mdistiller).")] = None,
    baseline: Annotated[bool, typer.Option(help="Also time the reference-style baseline.")] = True,
    evaluation: Annotated[bool, typer.Option("--eval/--no-eval", help="Time the evaluation pass too.")] = True,
    cache: Annotated[
        bool, typer.Option("--cache/--no-cache", help="Also time the step fed by the teacher-logit cache.")
    ] = False,
    cache_images: Annotated[int, typer.Option(min=1, help="Training images in the timed cache.")] = 1024,
    cache_build_images: Annotated[
        int, typer.Option(min=1, help="Images whose cache is built with the real teacher, to time the build.")
    ] = 16,
    mlkd: Annotated[
        bool,
        typer.Option(
            "--mlkd",
            help="MLKD mode: time the engine's MLKD+LS step (two views; SD-MLKD+LS when --M has several scales) "
            "against the single-view SDD-KD-LSKD step and MLKD's reference-style loop (sddkd.bench.mlkd).",
        ),
    ] = False,
) -> None:
    """Time the engine's training step against the reference-style loop; print one JSON object."""
    try:
        if mlkd:
            if ignored := _flags_mlkd_ignores(ctx):
                raise UserError(f"--mlkd times the live teacher's training step in the engine's default memory "
                                f"format, with no evaluation pass and no cache, so it would ignore "
                                f"{', '.join(ignored)}; drop {' and '.join(ignored)}")  # fmt: skip
            from sddkd.bench.mlkd import run_mlkd_bench

            result = run_mlkd_bench(device, steps, batch_size, pair, M or "1", compile, amp, warmup, rounds, workers,
                                    baseline)  # fmt: skip
        else:
            result = run_bench(device, steps, batch_size, pair, M or "1,2,4", compile, amp, channels_last, warmup,
                               rounds, workers, baseline, evaluation, cache, cache_images,
                               cache_build_images)  # fmt: skip
    except UserError as exc:  # a bad option: one sentence and exit 2, as the sddkd commands do
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    print(json.dumps(result))


if __name__ == "__main__":
    app()
