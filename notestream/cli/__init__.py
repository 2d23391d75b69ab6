"""The `notestream` command line: one typer app that mounts each package's commands.

Each package owns its commands in its own ``cli`` module; this module only wires them, so that
``models`` never imports ``stream`` or ``training``.
"""

from __future__ import annotations

import logging
import sys

import typer
from rich.console import Console

from notestream.core.errors import NotestreamError

app = typer.Typer(
    name="notestream",
    help="Streaming ClinicalBERT risk scores from a live feed of clinical notes.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
err = Console(stderr=True)


@app.command()
def version() -> None:
    """Print the notestream version."""
    from notestream import __version__

    typer.echo(__version__)


def _mount() -> None:
    """Attach the command groups of every package (imported lazily by each module)."""
    from notestream.cli.commands import register as register_commands
    from notestream.cli.config import register as register_config
    from notestream.models.cli import register as register_models
    from notestream.stream.cli import register as register_stream
    from notestream.stream.cli_explain import register_explain
    from notestream.training.cli import register as register_training

    register_commands(app)
    register_models(app)
    register_training(app)
    register_stream(app)
    register_config(app)
    register_explain(app)


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    _mount()
    try:
        app()
    except NotestreamError as exc:
        err.print(f"[red]error:[/red] {exc}")
        sys.exit(2)


if __name__ == "__main__":
    main()
