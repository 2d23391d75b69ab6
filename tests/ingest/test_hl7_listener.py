"""The MLLP listener end to end: python-hl7's `mllp_send` client -> listener -> embedded Kafka topics."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from notestream.core.settings import Settings
from notestream.stream.embedded import EmbeddedBroker
from notestream.stream.events import AdmissionEvent, DeadLetter, NoteEvent
from notestream.stream.ingest.hl7_server import Hl7Listener
from notestream.stream.ingest.producer import EventSink
from notestream.stream.metrics import Metrics
from tests.fixtures.kafka import read_topic
from tests.fixtures.tls import self_signed
from tests.ingest.messages import (
    MLLP_END,
    MLLP_START,
    adt,
    evn,
    framed,
    mdm,
    message,
    msh,
    obr,
    obx,
    pid,
    pv1,
    txa,
)

MLLP_SEND = shutil.which("mllp_send") or str(Path(sys.executable).parent / "mllp_send")

FEED = [
    adt("A01", "ADM-1", admit="20260301080000-0500"),
    mdm(
        "T02",
        "DOC-1a",
        "DOC-1",
        r"Seen on rounds.\.br\BP 118\S\76",
        r"Plan: diuresis \T\ daily weights",
        kind="PN",
    ),
    mdm("T08", "DOC-1b", "DOC-1", "Seen on rounds (edited).", edited="20260301110000-0500"),
    b"THIS IS NOT HL7 AT ALL",
    message(
        msh("ORU^R01^ORU_R01", "RAD-1"), pid(), pv1(), obr("RAD-55"), obx(1, "IMPRESSION: clear lungs.", "FT")
    ),
    message(msh("MDM^T11", "DOC-1c", when="20260301120000-0500"), evn("T11"), pid(), pv1(), txa("DOC-1")),
    adt("A02", "TRANSFER-1"),
    adt("A03", "DIS-1", discharge="20260303100000-0500"),
]


@pytest.fixture
async def listener(kafka_settings: Settings) -> AsyncIterator[Hl7Listener]:
    async with EventSink(kafka_settings, metrics=Metrics(role="ingest")) as sink:
        server = await Hl7Listener(kafka_settings, sink).start("127.0.0.1", 0)
        yield server
        await server.close()


async def mllp_send(port: int, path: Path) -> list[list[str]]:
    """Send a file of framed messages with python-hl7's client; the MSA segment of each ACK."""
    proc = await asyncio.create_subprocess_exec(
        MLLP_SEND, "-p", str(port), "-f", str(path), "127.0.0.1", stdout=asyncio.subprocess.PIPE
    )
    out, _ = await asyncio.wait_for(proc.communicate(), 120)
    assert proc.returncode == 0
    acks = [line.strip(MLLP_START + MLLP_END) for line in out.split(b"\n") if line.strip()]
    return [_msa(ack) for ack in acks]


def _msa(ack: bytes) -> list[str]:
    segments = {s.split(b"|")[0]: s.decode() for s in ack.split(b"\r") if s}
    assert b"MSH" in segments
    out = segments[b"MSA"].split("|")
    if b"ERR" in segments:
        out.append(segments[b"ERR"])
    return out


async def read(settings: Settings, topic: str, n: int) -> list[Any]:
    messages = await asyncio.to_thread(read_topic, settings, topic, until=lambda m: len(m) >= n, timeout_s=60)
    assert len(messages) == n, f"{topic}: {len(messages)} messages, expected {n}"
    return messages


async def test_a_real_mllp_client_feeds_the_topics(
    listener: Hl7Listener, kafka_settings: Settings, tmp_path: Path
) -> None:
    feed = tmp_path / "feed.hl7"
    feed.write_bytes(framed(*FEED))
    msas = await mllp_send(listener.address[1], feed)
    assert [m[1] for m in msas] == ["AA", "AA", "AA", "AR", "AA", "AA", "AR", "AA"]
    assert [m[2] for m in msas] == ["ADM-1", "DOC-1a", "DOC-1b", "", "RAD-1", "DOC-1c", "TRANSFER-1", "DIS-1"]
    assert "not start with an MSH segment" in msas[3][3]
    assert msas[6][-1].startswith("ERR||MSH^1^9|201^Unsupported event code^HL70357|E")

    admissions = [AdmissionEvent.from_bytes(m.value()) for m in await read(kafka_settings, "admissions", 2)]
    assert sorted(a.kind for a in admissions) == ["admit", "discharge"]
    notes = await read(kafka_settings, "notes", 4)
    assert {m.key() for m in notes} == {b"167853"}, "keyed by the admission"
    by_id = {}
    for m in notes:
        note = NoteEvent.from_bytes(m.value())
        by_id.setdefault(note.note_id, []).append(note)
    assert sorted(by_id) == ["DOC-1", "RAD-55"]
    original, edit, cancel = sorted(by_id["DOC-1"], key=lambda n: n.revision)
    assert original.text == "Seen on rounds.\nBP 118^76\nPlan: diuresis & daily weights"
    assert edit.text == "Seen on rounds (edited)."
    assert cancel.is_error
    assert original.revision < edit.revision < cancel.revision
    assert by_id["RAD-55"][0].text == "IMPRESSION: clear lungs."

    letters = [DeadLetter.from_bytes(m.value()) for m in await read(kafka_settings, "notes-dlq", 2)]
    sent = [FEED[3], FEED[6].rstrip(b"\r")]  # mllp_send strips the last segment's \r as it frames
    assert sorted(letter.original for letter in letters) == sorted(sent), "the bytes received, kept exactly"
    assert {letter.topic for letter in letters} == {"hl7"}
    assert listener.handler.sink.counts.accepted == 6
    metrics = listener.handler.sink.metrics
    assert metrics is not None
    sample = metrics.registry.get_sample_value
    assert sample("notestream_ingest_answers_total", {"source": "hl7", "answer": "AA"}) == 6
    assert sample("notestream_ingest_answers_total", {"source": "hl7", "answer": "AR"}) == 2
    assert sample("notestream_ingest_events_total", {"topic": "notes"}) == 4
    assert sample("notestream_dead_letters_total", {"reason": "schema"}) == 2


async def test_garbage_gets_ar_and_other_connections_keep_being_served(
    listener: Hl7Listener, kafka_settings: Settings, tmp_path: Path
) -> None:
    host, port = listener.address
    reader, writer = await asyncio.open_connection(host, port)
    writer.write(b"\x00\xff garbage without framing" + MLLP_END)  # no start block
    writer.write(MLLP_START + b"MSH|^~\\&|" + os.urandom(64).replace(b"\x1c", b"") + MLLP_END)
    await writer.drain()
    answers = [await asyncio.wait_for(reader.readuntil(MLLP_END), 30) for _ in range(2)]
    assert [_msa(a.strip(MLLP_START + MLLP_END))[1] for a in answers] == ["AR", "AR"]
    writer.write(MLLP_START + b"MSH|^~\\&|half a message")  # then hang up mid-message
    writer.close()

    feed = tmp_path / "feed.hl7"
    feed.write_bytes(framed(adt("A01", "OK-1", admit="20260301")))
    assert [m[1] for m in await mllp_send(port, feed)] == ["AA"], "the listener still serves"
    await read(kafka_settings, "admissions", 1)


async def test_enhanced_mode_and_no_aa_when_kafka_does_not_take_the_events(tmp_path: Path) -> None:
    broker = EmbeddedBroker().start()
    settings = Settings(broker=broker.url, topic_prefix="down.")
    broker.ensure_topics(["down.admissions", "down.notes-dlq"])
    async with EventSink(settings, request_timeout_ms=3000) as sink:
        server = await Hl7Listener(settings, sink).start("127.0.0.1", 0)
        try:
            feed = tmp_path / "feed.hl7"
            feed.write_bytes(
                framed(message(msh("ADT^A01", "E-1", f15="AL", f16="NE"), pid(), pv1(admit="20260301")))
            )
            assert [m[1] for m in await mllp_send(server.address[1], feed)] == ["CA"]
            broker.close()  # Kafka goes away
            feed.write_bytes(framed(adt("A01", "LOST-1", admit="20260301")))
            [msa] = await mllp_send(server.address[1], feed)
            assert msa[1] == "AR"
            assert "207^Application internal error" in msa[-1], "resend: nothing was kept"
            assert sink.counts.failed == 1
        finally:
            await server.close()


def test_file_backfill_from_the_command_line(kafka_settings: Settings, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from notestream.cli import app
    from notestream.stream.ingest.cli import register_ingest

    if not any(group.name == "ingest" for group in app.registered_groups):
        register_ingest(app)
    batch = b"FHS|^~\\&|EPIC\rBHS|^~\\&|EPIC\r" + b"".join(FEED[:3]) + b"BTS|3\rFTS|1\r"
    path = tmp_path / "backfill.hl7"
    path.write_bytes(FEED[3] + b"\n" + batch.replace(b"\r", b"\r\n") + FEED[7])  # garbage first
    args = ["ingest", "hl7", "--file", str(path), "--broker", kafka_settings.broker]
    done = CliRunner().invoke(app, [*args, "--topic-prefix", kafka_settings.topic_prefix])
    assert done.exit_code == 0, done.output[-2000:]
    counts = json.loads(done.stdout.strip().splitlines()[-1])
    assert counts["received"] == 5
    assert counts["events"] == {"admissions": 2, "notes": 2}
    assert counts["rejected"] == {"schema": 1}
    notes = read_topic(kafka_settings, "notes", until=lambda m: len(m) >= 2)
    assert len(notes) == 2


async def test_mllp_over_tls(kafka_settings: Settings, tmp_path: Path) -> None:
    import ssl

    cert, key = self_signed(tmp_path)
    settings = kafka_settings.model_copy(update={"ingest_tls_certfile": cert, "ingest_tls_keyfile": key})
    async with EventSink(settings) as sink:
        server = await Hl7Listener(settings, sink).start("127.0.0.1", 0)
        try:
            client = ssl.create_default_context(cafile=str(cert))
            reader, writer = await asyncio.open_connection("127.0.0.1", server.address[1], ssl=client)
            writer.write(MLLP_START + adt("A01", "TLS-1", admit="20260301") + MLLP_END)
            await writer.drain()
            ack = await asyncio.wait_for(reader.readuntil(MLLP_END), 60)
            assert _msa(ack.strip(MLLP_START + MLLP_END))[1:3] == ["AA", "TLS-1"]
            writer.close()
        finally:
            await server.close()
    await read(kafka_settings, "admissions", 1)


async def test_an_oversize_block_gets_ar_and_the_connection_goes_on(kafka_settings: Settings) -> None:
    from notestream.stream.ingest.hl7_server import message_limit

    settings = kafka_settings.model_copy(update={"max_note_bytes": 1000})
    async with EventSink(settings) as sink:
        server = await Hl7Listener(settings, sink).start("127.0.0.1", 0)
        try:
            reader, writer = await asyncio.open_connection(*server.address)
            huge = mdm("T02", "BIG-1", "DOC-9", "x" * (message_limit(settings) + 10))
            writer.write(
                MLLP_START + huge + MLLP_END + MLLP_START + adt("A01", "NEXT-1", admit="20260301") + MLLP_END
            )
            await writer.drain()
            first, second = [await asyncio.wait_for(reader.readuntil(MLLP_END), 60) for _ in range(2)]
            assert _msa(first.strip(MLLP_START + MLLP_END))[1] == "AR"
            assert _msa(second.strip(MLLP_START + MLLP_END))[1:3] == ["AA", "NEXT-1"]
            writer.close()
        finally:
            await server.close()
    assert sink.counts.rejected == {"text_too_large": 1}


async def test_a_mapping_bug_keeps_the_message_and_says_so(
    listener: Hl7Listener, kafka_settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    import notestream.stream.ingest.hl7_server as server

    def broken(*args: object) -> None:
        raise RuntimeError("a bug")

    monkeypatch.setattr(server, "map_message", broken)  # the one seam: the mapping fails unexpectedly
    reader, writer = await asyncio.open_connection(*listener.address)
    raw = adt("A01", "BUG-1", admit="20260301")
    writer.write(MLLP_START + raw + MLLP_END)
    await writer.drain()
    msa = _msa((await asyncio.wait_for(reader.readuntil(MLLP_END), 60)).strip(MLLP_START + MLLP_END))
    writer.close()
    assert msa[1:3] == ["AE", "BUG-1"]
    assert "207^Application internal error" in msa[-1]
    [letter] = [DeadLetter.from_bytes(m.value()) for m in await read(kafka_settings, "notes-dlq", 1)]
    assert (letter.reason, letter.original) == ("processing_error", raw)
