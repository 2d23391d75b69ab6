"""The `notestream ingest` and `notestream export` commands (mounted by ``notestream.stream.cli.register``)."""

from __future__ import annotations

from pathlib import Path

import typer

from notestream.core.errors import ConfigError

ingest_app = typer.Typer(
    help="Take a hospital's feeds in: HL7 v2 (MLLP or files) and FHIR R4.", no_args_is_help=True
)
export_app = typer.Typer(
    help="Give risk updates out in EHR formats (FHIR RiskAssessment).", no_args_is_help=True
)


def _listen(value: str) -> tuple[str, int]:
    from notestream.stream.ingest.hl7_server import parse_listen

    try:
        return parse_listen(value)
    except ValueError as exc:
        raise ConfigError(str(exc)) from exc


@ingest_app.command("hl7")
def ingest_hl7(
    listen: str = typer.Option(None, help="HOST:PORT of the MLLP listener, e.g. 0.0.0.0:2575."),
    file: Path = typer.Option(None, help="Backfill from a file of HL7 messages (or FHS/BHS batches)."),
    broker: str = typer.Option(None, help="kafka://HOST:PORT[,HOST:PORT] (env NOTESTREAM_BROKER)."),
    topic_prefix: str = typer.Option(None, help="Prefix of every topic name."),
    config: Path = typer.Option(None, help="Settings TOML file (else $NOTESTREAM_CONFIG)."),
) -> None:
    """HL7 v2 (ADT, MDM, ORU) to the admissions and notes topics; ACK after Kafka holds the events."""
    import asyncio
    import json

    from notestream.core.settings import load_settings

    if (listen is None) == (file is None):
        raise ConfigError("Pass exactly one of --listen HOST:PORT or --file PATH.")
    settings = load_settings(config, broker=broker, topic_prefix=topic_prefix)
    if listen is not None:
        from notestream.stream.ingest.hl7_server import serve_hl7

        host, port = _listen(listen)
        counts = asyncio.run(serve_hl7(settings, host, port, announce=lambda url: typer.echo(url)))
    else:
        from rich.console import Console
        from rich.progress import BarColumn, DownloadColumn, Progress, TimeElapsedColumn

        from notestream.stream.ingest.hl7_file import backfill

        if not file.is_file():
            raise ConfigError(f"--file {file} does not exist.")
        columns = (BarColumn(), DownloadColumn(), TimeElapsedColumn())
        with Progress(*columns, console=Console(stderr=True)) as progress:
            task = progress.add_task("hl7", total=file.stat().st_size)
            result = asyncio.run(
                backfill(settings, file, on_message=lambda done: progress.update(task, completed=done))
            )
        counts = result.as_dict()
    typer.echo(json.dumps(counts))


@ingest_app.command("fhir")
def ingest_fhir(
    listen: str = typer.Option(None, help="HOST:PORT of the FHIR endpoint (base URL http://HOST:PORT/fhir)."),
    ndjson: Path = typer.Option(None, help="Folder of a Bulk Data export (*.ndjson, *.ndjson.gz)."),
    broker: str = typer.Option(None, help="kafka://HOST:PORT[,HOST:PORT] (env NOTESTREAM_BROKER)."),
    topic_prefix: str = typer.Option(None, help="Prefix of every topic name."),
    config: Path = typer.Option(None, help="Settings TOML file (else $NOTESTREAM_CONFIG)."),
) -> None:
    """FHIR R4 Encounter and DocumentReference to the admissions and notes topics."""
    import asyncio
    import json

    from notestream.core.settings import load_settings

    if (listen is None) == (ndjson is None):
        raise ConfigError("Pass exactly one of --listen HOST:PORT or --ndjson DIR.")
    settings = load_settings(config, broker=broker, topic_prefix=topic_prefix)
    if listen is not None:
        from notestream.stream.ingest.fhir_server import serve_fhir

        host, port = _listen(listen)
        counts = asyncio.run(serve_fhir(settings, host, port, announce=lambda url: typer.echo(url)))
    else:
        from rich.console import Console
        from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

        from notestream.stream.ingest.fhir_ndjson import load_ndjson

        if not ndjson.is_dir():
            raise ConfigError(f"--ndjson {ndjson} is not a folder.")
        columns = (SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn())
        with Progress(*columns, console=Console(stderr=True)) as progress:
            task = progress.add_task("resources", total=None)
            result = asyncio.run(
                load_ndjson(
                    settings, ndjson, on_line=lambda n: progress.update(task, description=f"{n} resources")
                )
            )
        counts = result.as_dict()
    typer.echo(json.dumps(counts))


@export_app.command("fhir")
def export_fhir(
    out: Path = typer.Option(None, help="NDJSON file to write (default: stdout)."),
    model_dir: Path = typer.Option(
        None, help="Model folder whose fingerprint goes into method.coding.version."
    ),
    group: str = typer.Option(None, help="Consumer group (default: none, read the topic from its start)."),
    max_updates: int = typer.Option(None, "--max", help="Stop after this many risk updates."),
    idle_timeout: float = typer.Option(None, help="Stop after this many seconds without an update."),
    broker: str = typer.Option(None, help="kafka://HOST:PORT[,HOST:PORT] (env NOTESTREAM_BROKER)."),
    topic_prefix: str = typer.Option(None, help="Prefix of every topic name."),
    config: Path = typer.Option(None, help="Settings TOML file (else $NOTESTREAM_CONFIG)."),
) -> None:
    """Risk updates as FHIR R4 RiskAssessment resources, one JSON line each."""
    import asyncio
    import contextlib
    import json
    import sys

    from notestream.core.settings import load_settings
    from notestream.stream.ingest.fhir_export import export_fhir as run_export

    settings = load_settings(config, broker=broker, topic_prefix=topic_prefix, model_dir=model_dir)
    fingerprint = None
    if settings.model_dir is not None:
        from notestream.models.fingerprint import model_fingerprint

        fingerprint = model_fingerprint(settings.model_dir)
    with contextlib.ExitStack() as stack:
        stream = sys.stdout if out is None else stack.enter_context(out.open("w", encoding="utf-8"))
        counts = asyncio.run(
            run_export(
                settings,
                stream,
                fingerprint=fingerprint,
                group_id=group,
                max_updates=max_updates,
                idle_timeout_s=idle_timeout,
            )
        )
    typer.echo(json.dumps(counts), err=True)


def register_ingest(app: typer.Typer) -> None:
    """Add ``ingest`` and ``export`` to the top-level app."""
    app.add_typer(ingest_app, name="ingest")
    app.add_typer(export_app, name="export")
