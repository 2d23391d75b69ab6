"""`notestream config show | docs | check`: the effective settings (secrets masked) and their reference."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

if TYPE_CHECKING:
    from notestream.core.settings import Settings

config_app = typer.Typer(
    name="config", help="Show, check and document notestream's settings.", no_args_is_help=True
)

ConfigOption = Annotated[
    Path | None,
    typer.Option("--config", "-c", help="TOML settings file (default: $NOTESTREAM_CONFIG)."),
]


def to_toml(values: dict[str, Any]) -> str:
    """Flat settings as TOML lines; unset values become comments.

    >>> print(to_toml({"broker": "kafka://k:9092", "partitions": 4, "log_json": False, "model_dir": None}))
    broker = "kafka://k:9092"
    partitions = 4
    log_json = false
    # model_dir = (unset)
    """
    lines = []
    for key, value in values.items():
        if value is None:
            lines.append(f"# {key} = (unset)")
        else:
            lines.append(f"{key} = {json.dumps(value)}")
    return "\n".join(lines)


def masked_settings(settings: Settings) -> dict[str, Any]:
    """The settings as printed: secrets and URL passwords masked."""
    return settings.masked()


@config_app.command("show")
def show(
    config: ConfigOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of TOML.")] = False,
) -> None:
    """Print the effective settings (defaults, TOML file, environment), every secret masked."""
    from notestream.core.settings import load_settings

    values = masked_settings(load_settings(config))
    typer.echo(json.dumps(values, indent=2) if as_json else to_toml(values))


@config_app.command("check")
def check(
    config: ConfigOption = None,
    connect: Annotated[
        bool,
        typer.Option(
            "--connect",
            help="Also run the worker's start-up checks: the model folder, the metrics port, and reach "
            "the broker and Redis (retried for startup_timeout_s). Exit 78 or 69 when one fails.",
        ),
    ] = False,
    timeout: Annotated[
        float | None, typer.Option(help="Seconds to keep retrying the broker and Redis (--connect).")
    ] = None,
) -> None:
    """Validate the settings and build the Kafka TLS context and client options they describe."""
    from notestream.core.settings import load_settings
    from notestream.stream.kafka import security_kwargs
    from notestream.stream.store.redis_store import redis_options

    settings = load_settings(config)
    security_kwargs(settings)
    redis_options(settings)
    typer.echo(f"settings ok: broker {settings.masked()['broker']}, store {settings.masked()['store']}")
    if not connect:
        return
    import asyncio

    from notestream.stream.preflight import exit_code, run_checks

    checks = asyncio.run(run_checks(settings, timeout_s=timeout))
    for one in checks:
        typer.echo(f"{'ok    ' if one.ok else 'FAILED'} {one.line()}", err=not one.ok)
    code = exit_code(checks)
    if code:
        raise typer.Exit(code)


@config_app.command("docs")
def docs(
    out: Annotated[
        Path | None,
        typer.Option(help="Where to write the reference (default: docs/configuration.md of the checkout)."),
    ] = None,
    check_only: Annotated[
        bool, typer.Option("--check", help="Exit 1 if the file is out of date instead of writing it.")
    ] = False,
) -> None:
    """Write the settings reference table (docs/configuration.md) generated from the settings model."""
    from notestream.cli.config_docs import DOCS_PATH, render_docs, write_docs

    out = DOCS_PATH if out is None else out
    if check_only:
        current = out.read_text(encoding="utf-8") if out.is_file() else ""
        if current != render_docs():
            typer.echo(f"{out} is out of date; run `notestream config docs`.", err=True)
            raise typer.Exit(1)
        typer.echo(f"{out} is up to date.")
        return
    changed = write_docs(out)
    typer.echo(f"{'wrote' if changed else 'unchanged'}: {out}")


def register(app: typer.Typer) -> None:
    """Mount the `config` group on the top-level app."""
    app.add_typer(config_app, name="config")
