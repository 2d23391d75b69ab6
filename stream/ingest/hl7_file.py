r"""Backfills from HL7 files: ``notestream ingest hl7 --file PATH``.

A file holds messages one after another, each a block of segments (ended by ``\r``, ``\n`` or
``\r\n``) starting at its MSH segment; FHS/BHS batch envelopes (and their BTS/FTS trailers) and MLLP
framing characters are skipped. The file is read in chunks, so its size does not matter. Each message
goes through the same mapping as on the MLLP port; rejected ones go to the dead-letter topic, and a
summary of counts is returned.

>>> import io
>>> data = b"FHS|^~\\&\rBHS|^~\\&\rMSH|^~\\&|A\rPID|1\r\nMSH|^~\\&|B\nBTS|2\rFTS|1\r"
>>> list(split_messages(io.BytesIO(data), chunk=7))
[b'MSH|^~\\&|A\rPID|1', b'MSH|^~\\&|B']
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

from notestream.core.settings import Settings
from notestream.stream.events import Event
from notestream.stream.ingest.errors import Hl7Reject
from notestream.stream.ingest.hl7_map import Hl7Options, Reject, decode, map_message
from notestream.stream.ingest.producer import EventSink, IngestCounts

_BREAK = re.compile(rb"\r\n|\r|\n")
_ENVELOPE = (b"FHS", b"BHS", b"BTS", b"FTS")


def _segments(stream: IO[bytes], chunk: int) -> Iterator[bytes]:
    rest = b""
    while True:
        data = stream.read(chunk)
        if not data:
            break
        parts = _BREAK.split(rest + data.translate(None, b"\x0b\x1c"))
        rest = parts.pop()
        yield from parts
    if rest:
        yield rest


def split_messages(stream: IO[bytes], *, chunk: int = 1 << 20) -> Iterator[bytes]:
    """The messages of an HL7 file, each as its segments joined by ``\\r`` (see the module doc)."""
    current: list[bytes] = []
    for segment in _segments(stream, chunk):
        line = segment.strip(b" \t\x00\xef\xbb\xbf")
        if not line or line[:3] in _ENVELOPE:
            continue
        if line[:3] == b"MSH" and current:
            yield b"\r".join(current)
            current = []
        current.append(line)
    if current:
        yield b"\r".join(current)


async def backfill(
    settings: Settings,
    path: Path,
    *,
    options: Hl7Options | None = None,
    on_message: Callable[[int], None] | None = None,
    window: int = 512,
) -> IngestCounts:
    """Produce the events of every message in ``path`` (at most ``window`` awaiting Kafka at a time)
    and return the counts; ``on_message`` gets the bytes read so far after each message."""
    options = options or Hl7Options.from_settings(settings)
    async with EventSink(settings, linger_ms=5) as sink:
        pending: list[tuple[list[Any], list[tuple[str, Event]]]] = []

        async def flush() -> None:
            for futures, items in pending:
                await sink.wait(futures)
                sink.count(items)
            pending.clear()

        with path.open("rb") as stream:
            messages = split_messages(stream)
            while True:
                raw = await asyncio.to_thread(next, messages, None)
                if raw is None:
                    break
                sink.counts.received += 1
                try:
                    items = map_message(decode(raw, options), options)
                except Hl7Reject as exc:
                    if isinstance(exc, Reject) and exc.header.control_id:
                        exc.detail = f"{exc.detail} (MSH-10 {exc.header.control_id})"
                    await sink.dead_letter(raw, exc, source="hl7")
                else:
                    pending.append((await sink.send(items), items))
                    if len(pending) >= window:
                        await flush()
                if on_message is not None:
                    on_message(stream.tell())
            await flush()
        return sink.counts
