"""Commands of the `stream` package, mounted on the `notestream` CLI by notestream.cli.

``worker`` runs the Faust worker; ``replay`` and ``alerts`` come from :mod:`notestream.stream.cli_data`.
"""

from __future__ import annotations

from pathlib import Path

import typer


def register(app: typer.Typer) -> None:
    """Add this package's commands to the top-level app."""

    @app.command()
    def worker(
        broker: str = typer.Option(None, help="kafka://HOST:PORT[,HOST:PORT] (env NOTESTREAM_BROKER)."),
        store: str = typer.Option(None, help="redis://HOST:PORT/DB or memory:// (env NOTESTREAM_STORE)."),
        model_dir: Path = typer.Option(None, help="Model folder to serve (env NOTESTREAM_MODEL_DIR)."),
        topic_prefix: str = typer.Option(None, help="Prefix of every topic name."),
        group: str = typer.Option(None, help="Consumer group shared by the workers."),
        config: Path = typer.Option(None, help="Settings TOML file (else $NOTESTREAM_CONFIG)."),
    ) -> None:
        """Run a worker: notes -> chunks -> engine -> store -> risk updates, until SIGTERM."""
        import sys

        from notestream.core.errors import ConfigError
        from notestream.core.settings import load_settings
        from notestream.stream.fate import EXIT_CONFIG
        from notestream.stream.worker import run_worker

        try:
            settings = load_settings(
                config,
                broker=broker,
                store=store,
                model_dir=model_dir,
                topic_prefix=topic_prefix,
                consumer_group=group,
            )
        except ConfigError as exc:
            print(f"notestream worker cannot start: {exc}", file=sys.stderr, flush=True)
            raise typer.Exit(EXIT_CONFIG) from None
        run_worker(settings)

    from notestream.stream.cli_data import register_data
    from notestream.stream.cli_monitor import register_monitor

    register_data(app)

    from notestream.stream.cli_dlq import register_dlq

    register_dlq(app)
    register_monitor(app)

    from notestream.stream.ingest.cli import register_ingest

    register_ingest(app)
