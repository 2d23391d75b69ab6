"""FHIR in end to end: the HTTP endpoint and Bulk Data NDJSON files -> embedded Kafka topics."""

from __future__ import annotations

import asyncio
import gzip
import json
import ssl
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fhir.resources.R4B.bundle import Bundle
from fhir.resources.R4B.operationoutcome import OperationOutcome
from pydantic import SecretStr

from notestream.core.settings import Settings
from notestream.stream.events import AdmissionEvent, DeadLetter, NoteEvent
from notestream.stream.ingest.fhir_ndjson import load_ndjson
from notestream.stream.ingest.fhir_server import start_fhir
from notestream.stream.ingest.producer import EventSink
from notestream.stream.metrics import Metrics
from tests.fixtures.kafka import read_topic
from tests.ingest.resources import bundle, document, encounter

FHIR = {"Content-Type": "application/fhir+json"}


@pytest.fixture
async def endpoint(kafka_settings: Settings) -> AsyncIterator[tuple[str, EventSink]]:
    async with EventSink(kafka_settings, metrics=Metrics(role="ingest")) as sink:
        runner, url = await start_fhir(kafka_settings, sink, "127.0.0.1", 0)
        yield url, sink
        await runner.cleanup()


async def read(settings: Settings, topic: str, n: int) -> list[Any]:
    messages = await asyncio.to_thread(read_topic, settings, topic, until=lambda m: len(m) >= n, timeout_s=60)
    assert len(messages) == n, f"{topic}: {len(messages)} messages, expected {n}"
    return messages


async def test_http_endpoint_answers_after_kafka_holds_the_events(
    endpoint: tuple[str, EventSink], kafka_settings: Settings
) -> None:
    url, sink = endpoint
    async with httpx.AsyncClient(timeout=60) as client:
        ok = await client.post(f"{url}/Encounter", json=encounter(), headers=FHIR)
        assert ok.status_code == 200, ok.text
        assert OperationOutcome.model_validate(ok.json()).issue[0].diagnostics == "1 events written"
        status = {"resourceType": "SubscriptionStatus", "status": "active", "type": "event-notification"}
        note = await client.post(
            url, json=bundle("subscription-notification", status, document("doc-5")), headers=FHIR
        )
        assert note.status_code == 200, note.text
        put = await client.put(f"{url}/DocumentReference/doc-6", json=document("doc-6"), headers=FHIR)
        assert put.status_code == 200, put.text
        patient = {"resourceType": "Patient", "id": "22532"}
        tx = await client.post(url, json=bundle("transaction", patient), headers=FHIR)
        reply = Bundle.model_validate(tx.json())
        assert (tx.status_code, reply.type) == (200, "transaction-response")
        assert [e.response.status for e in reply.entry] == ["200 OK"]

        bad = await client.post(url, json=document("doc-7", encounter_ref=""), headers=FHIR)
        assert bad.status_code == 422
        issue = OperationOutcome.model_validate(bad.json()).issue[0]
        assert (issue.code, issue.expression) == ("required", ["DocumentReference.context.encounter"])
        garbage = await client.post(url, content=b"{not json", headers=FHIR)
        assert garbage.status_code == 400
        xml = await client.post(
            url, content=b"<Encounter/>", headers={"Content-Type": "application/fhir+xml"}
        )
        assert xml.status_code == 415
        wrong = await client.post(f"{url}/Encounter", json=document("doc-8"), headers=FHIR)
        assert wrong.status_code == 400
        meta = await client.get(f"{url}/metadata")
        assert meta.json()["resourceType"] == "CapabilityStatement"

    [admit] = [AdmissionEvent.from_bytes(m.value()) for m in await read(kafka_settings, "admissions", 1)]
    assert admit.kind == "admit"
    notes = [NoteEvent.from_bytes(m.value()) for m in await read(kafka_settings, "notes", 2)]
    assert sorted(n.note_id for n in notes) == ["doc-5", "doc-6"]
    letters = [DeadLetter.from_bytes(m.value()) for m in await read(kafka_settings, "notes-dlq", 3)]
    assert sorted(letter.reason for letter in letters) == ["invalid_json", "missing_admission_id", "schema"]
    assert {letter.topic for letter in letters} == {"fhir"}
    assert sink.counts.accepted == 4
    assert (sink.counts.ignored, sink.counts.skipped) == (1, 1), "the Patient-only transaction"
    assert sink.metrics is not None
    answers = {
        code: sink.metrics.registry.get_sample_value(
            "notestream_ingest_answers_total", {"source": "fhir", "answer": code}
        )
        for code in ("200", "400", "415", "422")
    }
    assert answers == {"200": 4, "400": 2, "415": 1, "422": 1}


async def test_bulk_ndjson_export_streams_encounters_first(kafka_settings: Settings, tmp_path: Path) -> None:
    lines = [document(f"doc-{i}", f"Note {i}.", encounter_ref=f"Encounter/{100 + i % 3}") for i in range(30)]
    (tmp_path / "DocumentReference.000.ndjson").write_text(
        "\n".join(json.dumps(d) for d in lines) + "\n{broken\n", encoding="utf-8"
    )
    with gzip.open(tmp_path / "Encounter.000.ndjson.gz", "wt", encoding="utf-8") as f:
        for hadm in (100, 101, 102):
            f.write(json.dumps(encounter(str(hadm), "finished", end="2026-03-04T12:00:00-05:00")) + "\n")
    (tmp_path / "Patient.000.ndjson").write_text(
        json.dumps({"resourceType": "Patient", "id": "22532"}) + "\n"
    )

    counts = await load_ndjson(kafka_settings, tmp_path, window=4)
    assert counts.received == 35
    assert counts.events == {"admissions": 6, "notes": 30}
    assert counts.ignored == 1
    assert counts.rejected == {"invalid_json": 1}

    admissions = [AdmissionEvent.from_bytes(m.value()) for m in await read(kafka_settings, "admissions", 6)]
    assert {a.hadm_id for a in admissions} == {100, 101, 102}
    notes = [NoteEvent.from_bytes(m.value()) for m in await read(kafka_settings, "notes", 30)]
    assert sorted(n.produced_at for n in notes)[0] > max(a.produced_at for a in admissions), (
        "encounters first"
    )
    [letter] = [DeadLetter.from_bytes(m.value()) for m in await read(kafka_settings, "notes-dlq", 1)]
    assert letter.original == b"{broken"
    assert "DocumentReference.000.ndjson line 31" in letter.detail


async def test_503_when_kafka_does_not_take_the_events() -> None:
    from notestream.stream.embedded import EmbeddedBroker

    broker = EmbeddedBroker().start()
    settings = Settings(broker=broker.url, topic_prefix="fdown.")
    broker.ensure_topics(["fdown.admissions", "fdown.notes-dlq"])
    async with EventSink(settings, request_timeout_ms=3000) as sink:
        runner, url = await start_fhir(settings, sink, "127.0.0.1", 0)
        try:
            async with httpx.AsyncClient(timeout=60) as client:
                assert (await client.post(url, json=encounter(), headers=FHIR)).status_code == 200
                broker.close()  # Kafka goes away
                lost = await client.post(url, json=encounter("167854"), headers=FHIR)
            assert lost.status_code == 503
            assert lost.headers["Retry-After"] == "5"
            assert OperationOutcome.model_validate(lost.json()).issue[0].code == "transient"
            assert sink.counts.failed == 1
        finally:
            await runner.cleanup()


async def test_https_and_bearer_token(kafka_settings: Settings, tmp_path: Path) -> None:
    from tests.fixtures.tls import self_signed

    cert, key = self_signed(tmp_path)
    settings = kafka_settings.model_copy(
        update={
            "ingest_tls_certfile": cert,
            "ingest_tls_keyfile": key,
            "fhir_bearer_token": SecretStr("s3cret"),
        }
    )
    async with EventSink(settings) as sink:
        runner, url = await start_fhir(settings, sink, "127.0.0.1", 0)
        try:
            assert url.startswith("https://")
            async with httpx.AsyncClient(
                timeout=60, verify=ssl.create_default_context(cafile=str(cert))
            ) as client:
                anonymous = await client.post(url, json=encounter(), headers=FHIR)
                assert anonymous.status_code == 401
                assert OperationOutcome.model_validate(anonymous.json()).issue[0].code == "login"
                wrong = await client.post(
                    url, json=encounter(), headers={**FHIR, "Authorization": "Bearer nope"}
                )
                assert wrong.status_code == 401
                assert (await client.get(f"{url}/metadata")).status_code == 200, "metadata stays open"
                ok = await client.post(
                    url, json=encounter(), headers={**FHIR, "Authorization": "Bearer s3cret"}
                )
                assert ok.status_code == 200, ok.text
        finally:
            await runner.cleanup()
    assert sink.counts.received == 1, "refused requests are not read"


async def test_a_mapping_bug_keeps_the_body_and_answers_500(
    endpoint: tuple[str, EventSink], kafka_settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    import notestream.stream.ingest.fhir_server as server

    def broken(*args: object) -> None:
        raise RuntimeError("a bug")

    monkeypatch.setattr(server, "map_body", broken)  # the one seam: the mapping fails unexpectedly
    url, _ = endpoint
    async with httpx.AsyncClient(timeout=60) as client:
        reply = await client.post(url, json=encounter(), headers=FHIR)
    assert reply.status_code == 500
    assert OperationOutcome.model_validate(reply.json()).issue[0].code == "exception"
    [letter] = [DeadLetter.from_bytes(m.value()) for m in await read(kafka_settings, "notes-dlq", 1)]
    assert letter.reason == "processing_error"
    assert json.loads(letter.original) == encounter()
