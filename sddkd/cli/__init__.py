"""The `sddkd` command line (`sddkd = "sddkd.cli:main"`): the Typer app and its commands."""

from sddkd.cli.app import app, main

__all__ = ["app", "main"]
