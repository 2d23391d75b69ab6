"""`notestream dlq list` and `notestream dlq redrive`: the dead-letter topic for people (notestream.stream.dlq)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

console = Console()


def _since(value: str | None) -> datetime | None:
    """``--since`` as an aware time (a naive one is UTC, as dead letters are stamped)."""
    if value is None:
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError as exc:
        raise typer.BadParameter(f"--since {value!r} is not an ISO 8601 time, e.g. 2026-03-04T12:00") from exc
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def _reason(value: str | None) -> str | None:
    from notestream.stream.events import DEAD_LETTER_REASONS

    if value is not None and value not in DEAD_LETTER_REASONS:
        raise typer.BadParameter(f"--reason must be one of {', '.join(DEAD_LETTER_REASONS)}")
    return value


def _key(key: bytes | None) -> str:
    if key is None:
        return ""
    try:
        text = key.decode("utf-8")
    except UnicodeDecodeError:
        return "0x" + key.hex()
    return text if text.isprintable() else repr(text)


def register_dlq(app: typer.Typer) -> None:
    """Add ``notestream dlq`` to the top-level app."""
    dlq = typer.Typer(help="Inspect and re-drive the dead-letter topic (notes-dlq).", no_args_is_help=True)
    app.add_typer(dlq, name="dlq")

    @dlq.command("list")
    def list_letters(
        reason: str = typer.Option(None, help="Only this reason (e.g. schema, admission_unknown)."),
        since: str = typer.Option(None, help="Only letters dead-lettered at or after this time (ISO 8601)."),
        as_json: bool = typer.Option(False, "--json", help="One JSON object per line instead of a table."),
        broker: str = typer.Option(None, help="kafka://HOST:PORT[,HOST:PORT] (env NOTESTREAM_BROKER)."),
        topic_prefix: str = typer.Option(None, help="Prefix of every topic name."),
        config: Path = typer.Option(None, help="Settings TOML file (else $NOTESTREAM_CONFIG)."),
    ) -> None:
        """Dead letters by reason, time and key: never their original bytes (only their size)."""
        import asyncio

        from notestream.core.settings import load_settings
        from notestream.stream.dlq import chosen, read_dead_letters

        settings = load_settings(config, broker=broker, topic_prefix=topic_prefix)
        letters, unreadable = asyncio.run(read_dead_letters(settings))
        picked = chosen(letters, reason=_reason(reason), since=_since(since))
        if as_json:
            for partition, offset, letter in picked:
                row = {
                    "dlq": f"{partition}@{offset}",
                    "at": letter.at.isoformat(),
                    "reason": letter.reason,
                    "key": _key(letter.key),
                    "from": f"{letter.topic}[{letter.partition}]@{letter.offset}",
                    "bytes": len(letter.original),
                    "detail": letter.detail,
                }
                typer.echo(json.dumps(row))
            return
        table = Table(title=f"{len(picked)} dead letters on {settings.topic('notes-dlq')}")
        for name in ("at", "reason", "key", "from", "bytes", "detail"):
            table.add_column(name)
        for _, _, letter in picked:
            table.add_row(
                letter.at.isoformat(timespec="seconds"),
                letter.reason,
                Text(_key(letter.key)),  # feed strings are never read as markup
                Text(f"{letter.topic}[{letter.partition}]@{letter.offset}"),
                str(len(letter.original)),
                Text(letter.detail),
            )
        console.print(table)
        from notestream.stream.events import DEAD_LETTER_REASONS

        by_reason = {r: sum(1 for *_, x in picked if x.reason == r) for r in DEAD_LETTER_REASONS}
        console.print(Text(", ".join(f"{r}: {n}" for r, n in by_reason.items() if n) or "none"))
        if unreadable:
            console.print(Text(f"{unreadable} messages on the topic are not dead letters and were skipped."))

    @dlq.command("redrive")
    def redrive_letters(
        reason: str = typer.Option(None, help="Only this reason (e.g. admission_unknown)."),
        since: str = typer.Option(None, help="Only letters dead-lettered at or after this time (ISO 8601)."),
        dry_run: bool = typer.Option(False, "--dry-run", help="Say what would be put back; send nothing."),
        broker: str = typer.Option(None, help="kafka://HOST:PORT[,HOST:PORT] (env NOTESTREAM_BROKER)."),
        topic_prefix: str = typer.Option(None, help="Prefix of every topic name."),
        config: Path = typer.Option(None, help="Settings TOML file (else $NOTESTREAM_CONFIG)."),
    ) -> None:
        """Put chosen originals back on the topic they came from (safe: the store dedupes)."""
        import asyncio

        from notestream.core.settings import load_settings
        from notestream.stream.dlq import chosen, read_dead_letters, redrive

        settings = load_settings(config, broker=broker, topic_prefix=topic_prefix)
        picked_reason, picked_since = _reason(reason), _since(since)

        async def run() -> str:
            letters, _ = await read_dead_letters(settings)
            picked = chosen(letters, reason=picked_reason, since=picked_since)
            return (await redrive(settings, picked, dry_run=dry_run)).summary()

        typer.echo(asyncio.run(run()))
