"""Commands of the `stream` package, mounted on the `notestream` CLI by notestream.cli.

``worker`` runs the Faust worker; ``replay`` and ``alerts`` come from :mod:`notestream.stream.cli_data`;
``demo`` (the one-machine run) lives in :mod:`notestream.cli.demo`, imported only when it runs, because it
needs ``training`` and ``stream`` must not import it.
"""

from __future__ import annotations

from pathlib import Path

import typer

from notestream.core.settings import load_settings


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
        from notestream.stream.worker import run_worker

        settings = load_settings(
            config,
            broker=broker,
            store=store,
            model_dir=model_dir,
            topic_prefix=topic_prefix,
            consumer_group=group,
        )
        run_worker(settings)

    @app.command()
    def demo(
        out: Path = typer.Option(Path("notestream-demo"), help="Folder for the model, data and summary."),
        broker: str = typer.Option(
            None,
            help="kafka://... to use a real Kafka instead of the embedded one (its topics must exist, or "
            "auto-creation be on: deploy/create_topics.py).",
        ),
        store: str = typer.Option(None, help="redis://... to use Redis instead of the in-memory store."),
        patients: int = typer.Option(600, help="Synthetic patients in the cohort."),
        steps: int = typer.Option(None, help="Fine-tuning steps of the small model (default 400, batch 32)."),
        speed: float = typer.Option(0.0, help="Replay speed factor (0: no event-time pacing)."),
        rate: float = typer.Option(
            None, help="At most this many replayed events per second (default 20; 0: as fast as possible)."
        ),
        live: bool = typer.Option(True, help="Show the live table of risk updates and alerts."),
    ) -> None:
        """Synthesize a cohort, train a small model, stream it through a worker, and summarize."""
        from dataclasses import replace

        from notestream.cli.demo import DemoConfig, run_demo

        cfg = DemoConfig(out=out, broker=broker, store=store, patients=patients, speed=speed, live=live)
        # options left unset keep the defaults of DemoConfig
        if steps is not None:
            cfg = replace(cfg, steps=steps)
        if rate is not None:
            cfg = replace(cfg, rate=rate)
        run_demo(cfg)

    from notestream.stream.cli_data import register_data

    register_data(app)

    from notestream.stream.cli_dlq import register_dlq

    register_dlq(app)
