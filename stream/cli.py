"""Commands of the `stream` package, mounted on the `notestream` CLI by notestream.cli.

``worker`` runs the Faust worker; ``topics`` creates the topics on a Kafka cluster
(:mod:`notestream.stream.topics`); ``broker`` serves the one-machine broker
(:mod:`notestream.stream.embedded`); ``replay`` and ``alerts`` come from
:mod:`notestream.stream.cli_data`.
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

    @app.command()
    def topics(
        broker: str = typer.Option(None, help="kafka://HOST:PORT[,HOST:PORT] (env NOTESTREAM_BROKER)."),
        topic_prefix: str = typer.Option(None, help="Prefix of every topic name."),
        partitions: int = typer.Option(
            None, help="Partitions of each topic created (env NOTESTREAM_PARTITIONS)."
        ),
        wait: float = typer.Option(120.0, help="Seconds to wait for the broker to answer."),
        config: Path = typer.Option(None, help="Settings TOML file (else $NOTESTREAM_CONFIG)."),
    ) -> None:
        """Create the missing topics (existing ones are left alone); print one JSON line."""
        from notestream.core.settings import load_settings
        from notestream.stream.topics import run_topics

        settings = load_settings(config, broker=broker, topic_prefix=topic_prefix, partitions=partitions)
        raise typer.Exit(run_topics(settings, wait))

    @app.command()
    def broker(
        host: str = typer.Option("127.0.0.1", help="Address to listen on (and advertise)."),
        port: int = typer.Option(0, help="Port to listen on (0: a free one)."),
        max_memory_mb: int = typer.Option(
            None, help="Stop the broker (loudly) past this resident memory (default: half the machine's)."
        ),
    ) -> None:
        """Serve the one-machine broker: print kafka://HOST:PORT first, then serve until SIGTERM/SIGINT.

        It keeps every message in memory until it stops; point worker, replay and alerts at the
        printed address with --broker.
        """
        from notestream.stream.embedded import serve

        raise typer.Exit(serve(host=host, port=port, max_memory_mb=max_memory_mb))

    from notestream.stream.cli_data import register_data
    from notestream.stream.cli_monitor import register_monitor

    register_data(app)

    from notestream.stream.cli_dlq import register_dlq

    register_dlq(app)
    register_monitor(app)

    from notestream.stream.ingest.cli import register_ingest

    register_ingest(app)
