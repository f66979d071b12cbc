"""`sddkd fetch-teachers`: download, verify and register published teacher checkpoints."""

from __future__ import annotations

from typing import Annotated

import typer

from sddkd.cli.common import console, fail, user_errors
from sddkd.datasets import PublishedDataset


def fetch_teachers_command(
    dataset: Annotated[PublishedDataset, typer.Option(help="Which teachers.")],
    arch: Annotated[
        list[str] | None, typer.Option(help="Architecture (repeatable); default: every published teacher.")
    ] = None,
    source: Annotated[
        str | None,
        typer.Option(help="URL, archive, folder or single checkpoint to take them from (offline machines, mirrors)."),
    ] = None,
    sha256: Annotated[str | None, typer.Option(help="Expected sha256 of the --source file.")] = None,
    force: Annotated[bool, typer.Option(help="Fetch again even when a verified copy is in the store.")] = False,
) -> None:
    """Download, verify and register published teacher checkpoints.

    Store: $SDDKD_HOME/teachers/<dataset>/<arch>.pth plus index.json (SDDKD_HOME defaults to
    $XDG_CACHE_HOME/sddkd, else ~/.cache/sddkd).

    Each checkpoint is loaded strictly into its architecture (weights only, no code) before it is accepted.

    CUB-200 teachers are only on a Baidu Pan share: pass what you downloaded with --source, or train them.
    """
    from sddkd.teachers.sources import fetch_teachers, status_report

    with user_errors():
        statuses = fetch_teachers(dataset, arch or (), source=source, sha256=sha256, force=force)
    console.print(status_report(statuses))
    missing = [s.arch for s in statuses if s.state == "missing"]
    if missing:
        fail(
            f"{len(missing)} teacher(s) not available: {', '.join(missing)}; the lines above say where each comes from"
        )
