"""`sddkd prepare-data`: download (or take --from), verify, extract and cache a dataset."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from sddkd.cli.common import console, user_errors
from sddkd.datasets import PublishedDataset


def prepare_data_command(
    dataset: Annotated[PublishedDataset, typer.Argument(help="Which dataset.")],
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
