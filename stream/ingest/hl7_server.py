"""The MLLP listener of ``notestream ingest hl7 --listen HOST:PORT`` (python-hl7's asyncio server).

Each connection is served in its own task, one message at a time as MLLP wants: read a block
(``<VT> message <FS><CR>``), map it (:mod:`notestream.stream.ingest.hl7_map`), produce its events and wait for
Kafka, then answer (:mod:`notestream.stream.ingest.hl7_ack`):

- AA (CA): Kafka holds every event of the message (an ORU without text results gives none: still AA).
- AE (CE) / AR (CR) with an ERR segment: the message is wrong (AE) or cannot be processed (AR); it is
  filed on the dead-letter topic first, so the ACK is sent only once the message is kept somewhere.
- AR with ERR code 207 when Kafka does not take the events or the dead letter: nothing was kept, the
  engine should resend (its usual behaviour on AR/AE with a retry count).

Bytes that are not MLLP-framed, not HL7, or over the size limit (:func:`message_limit`) get an AR too;
the connection stays open and every other connection keeps being served. An oversize block is counted
(rejected as ``text_too_large``) but not kept: a dead letter could not hold it either. Message bytes
are never logged.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from dataclasses import dataclass
from typing import Any

from notestream.core.settings import Settings
from notestream.stream.errors import BrokerError
from notestream.stream.ingest.errors import Hl7Reject
from notestream.stream.ingest.hl7_ack import Outcome, ack_code, build_ack, now_utc
from notestream.stream.ingest.hl7_map import (
    INTERNAL_ERROR,
    SEGMENT_SEQUENCE,
    Header,
    Hl7Options,
    Reject,
    decode,
    map_message,
)
from notestream.stream.ingest.producer import EventSink, serve_ingest_metrics
from notestream.stream.ingest.tls import server_ssl_context

log = logging.getLogger(__name__)

START, END = b"\x0b", b"\x1c\r"


def message_limit(settings: Settings) -> int:
    """Largest MLLP block read (bytes): room for the largest note plus its message around it."""
    return settings.max_note_bytes + settings.max_note_bytes // 4 + 256 * 1024


@dataclass(frozen=True)
class Answer:
    """What one message got: the ACK text to send (None: the sender asked for none) and the outcome."""

    ack: str | None
    outcome: Outcome
    codec: str


class Hl7Handler:
    """Turns one MLLP block into events, a dead letter or neither, and the ACK that says which."""

    def __init__(self, sink: EventSink, options: Hl7Options) -> None:
        self.sink = sink
        self.options = options

    async def handle(self, raw: bytes) -> Answer:
        self.sink.counts.received += 1
        header: Header | None = None
        try:
            parsed = decode(raw, self.options)
            header = parsed.header
            events = map_message(parsed, self.options)
        except Hl7Reject as exc:
            header = exc.header if isinstance(exc, Reject) else header
            return await self._reject(raw, exc, header)
        except Exception as exc:  # a mapping bug must not lose the message: keep it, tell the sender
            log.error(
                "HL7 message %s could not be mapped (%s); dead-lettered", _control(header), type(exc).__name__
            )
            error = Hl7Reject(
                "AE",
                INTERNAL_ERROR,
                "notestream could not map this message (internal error); it is kept on the dead-letter topic",
                reason="processing_error",
            )
            return await self._reject(raw, error, header)
        try:
            await self.sink.deliver(events)
        except BrokerError as exc:
            self.sink.counts.failed += 1
            log.warning("HL7 message %s not acknowledged: %s", _control(header), exc)
            return self._answer(
                header, "AR", Hl7Reject("AR", INTERNAL_ERROR, "Kafka did not take the events; resend")
            )
        if not events:
            log.info(
                "HL7 message %s (%s^%s) holds no text results: acknowledged, nothing produced",
                _control(header),
                header.message_type,
                header.trigger,
            )
        return self._answer(header, "AA", None)

    async def _reject(self, raw: bytes, error: Hl7Reject, header: Header | None) -> Answer:
        try:
            await self.sink.dead_letter(raw, error, source="hl7")
        except BrokerError as exc:
            self.sink.counts.failed += 1
            log.warning("HL7 message %s rejected but not dead-lettered: %s", _control(header), exc)
            return self._answer(
                header, "AR", Hl7Reject("AR", INTERNAL_ERROR, "Kafka did not take the message; resend")
            )
        log.info("HL7 message %s rejected (%s %s): %s", _control(header), error.ack, error.code, error.detail)
        return self._answer(header, error.ack, error)

    def _answer(self, header: Header | None, outcome: Outcome, error: Hl7Reject | None) -> Answer:
        code = ack_code(header, outcome)
        self.sink.answered("hl7", code or outcome)
        codec = header.codec if header is not None else "ascii"
        if code is None:
            return Answer(None, outcome, codec)
        text = build_ack(header, code, error, control_id=uuid.uuid4().hex[:20], now=now_utc())
        return Answer(text, outcome, codec)


def _control(header: Header | None) -> str:
    return f"control id {header.control_id!r}" if header is not None and header.control_id else "(no MSH-10)"


async def _read_block(reader: asyncio.StreamReader) -> bytes | None:
    """The next MLLP block (framing characters included), None at the end of the stream; a block over
    the reader's limit is skipped and returned as b'' (answered AR)."""
    try:
        return await reader.readuntil(END)
    except asyncio.IncompleteReadError as exc:
        return exc.partial if exc.partial.strip() else None
    except asyncio.LimitOverrunError:
        while True:  # drop the oversize block through its end
            try:
                await reader.readuntil(END)
                return b""
            except asyncio.LimitOverrunError as again:
                await reader.readexactly(max(1, again.consumed))
            except asyncio.IncompleteReadError:
                return None


class Hl7Listener:
    """The MLLP server: ``await listener.start(host, port)``, then ``await listener.close()``."""

    def __init__(self, settings: Settings, sink: EventSink, options: Hl7Options | None = None) -> None:
        self.settings = settings
        self.handler = Hl7Handler(sink, options or Hl7Options.from_settings(settings))
        self.server: asyncio.base_events.Server | None = None
        self._tasks: set[asyncio.Task[Any]] = set()

    @property
    def address(self) -> tuple[str, int]:
        assert self.server is not None
        host, port = self.server.sockets[0].getsockname()[:2]
        return host, port

    async def start(self, host: str, port: int) -> Hl7Listener:
        from hl7.mllp import start_hl7_server

        self.server = await start_hl7_server(
            self._serve, host, port, limit=message_limit(self.settings), ssl=server_ssl_context(self.settings)
        )
        return self

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _serve(self, reader: Any, writer: Any) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        peer = writer.get_extra_info("peername")
        try:
            while True:
                block = await _read_block(reader)
                if block is None:
                    break
                answer = await self._answer(block)
                if answer.ack is not None:
                    writer.writeblock(answer.ack.encode(answer.codec, errors="replace"))
                    await writer.drain()
        except (ConnectionError, OSError) as exc:
            log.info("MLLP connection from %s ended: %s", peer, type(exc).__name__)
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError, OSError):
                await writer.wait_closed()

    async def _answer(self, block: bytes) -> Answer:
        if not block:
            limit = message_limit(self.settings)
            self.handler.sink.counts.received += 1
            self.handler.sink.counts.rejected["text_too_large"] = (
                self.handler.sink.counts.rejected.get("text_too_large", 0) + 1
            )
            return self.handler._answer(
                None,
                "AR",
                Hl7Reject(
                    "AR", SEGMENT_SEQUENCE, f"the MLLP block is over {limit} bytes", reason="text_too_large"
                ),
            )
        start = block.find(START)
        if start < 0 or block[:start].strip():
            # no start block: still answered (and dead-lettered) as a message that is not HL7
            return await self.handler.handle(block[:-2] if block.endswith(END) else block)
        body = block[start + 1 :]
        return await self.handler.handle(body[:-2] if body.endswith(END) else body)


def parse_listen(value: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[::1]:2575`` for IPv6) as a pair; ValueError otherwise.

    >>> parse_listen("0.0.0.0:2575"), parse_listen("[::1]:0")
    (('0.0.0.0', 2575), ('::1', 0))
    """
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or int(port) > 65535:
        raise ValueError(f"--listen takes HOST:PORT, e.g. 0.0.0.0:2575, not {value!r}")
    return host.strip("[]") or "0.0.0.0", int(port)


async def serve_hl7(
    settings: Settings,
    host: str,
    port: int,
    *,
    announce: Any = print,
    stop: asyncio.Event | None = None,
) -> dict[str, Any]:
    """Serve the MLLP listener until ``stop`` is set (or SIGTERM/SIGINT); ``announce`` gets
    ``mllp://HOST:PORT`` once it listens. Returns the counts."""
    import signal

    options = Hl7Options.from_settings(settings)
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    metrics, server = await serve_ingest_metrics(settings, "ingest")
    async with EventSink(settings, metrics=metrics) as sink:
        listener = await Hl7Listener(settings, sink, options).start(host, port)
        bound_host, bound_port = listener.address
        scheme = "mllps" if settings.ingest_tls_certfile else "mllp"
        announce(f"{scheme}://{bound_host}:{bound_port}")
        try:
            await stop.wait()
        finally:
            await listener.close()
            if server is not None:
                await server.close()
        log.info("HL7 listener stopped: %s", sink.counts.as_dict())
        return sink.counts.as_dict()
