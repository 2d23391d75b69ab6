"""Commands of the `training` package, mounted on the `notestream` CLI by notestream.cli."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    """Add this package's commands to the top-level app."""
