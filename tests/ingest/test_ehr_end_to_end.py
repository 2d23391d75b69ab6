"""A hospital's HL7 feed end to end: mllp_send -> MLLP listener -> Kafka -> worker (tiny model, Redis)
-> risk updates equal to the offline scores -> FHIR RiskAssessments."""

from __future__ import annotations

import asyncio
import io
import json
from collections.abc import Callable
from pathlib import Path

import pytest
from fhir.resources.R4B.riskassessment import RiskAssessment

from notestream.core.settings import Settings
from notestream.core.topics import NOTES, RISK_UPDATES
from notestream.stream.events import NoteEvent
from notestream.stream.ingest.fhir_export import export_fhir
from notestream.stream.ingest.hl7_server import Hl7Listener
from notestream.stream.ingest.producer import EventSink
from tests.fixtures.kafka import WorkerProcess, read_topic
from tests.ingest.messages import adt, evn, framed, mdm, message, msh, pid, pv1, txa
from tests.ingest.test_hl7_listener import mllp_send
from tests.stream.feed import OfflineScorer, final_updates

pytestmark = pytest.mark.slow

SENTENCES = [
    "Patient seen on morning rounds, afebrile overnight, tolerating diet.\\.br\\",
    "Creatinine improved to 1.2 \\T\\ potassium 4.1; continue diuresis with daily weights.\\.br\\",
    "Oxygen weaned to two liters nasal cannula, ambulating in the hallway with physical therapy.",
    "Plan: follow up echocardiogram, cardiology consult, discharge planning with case management.",
]


def text(seed: int) -> list[str]:
    return [SENTENCES[(seed + i) % len(SENTENCES)] * 3 for i in range(4)]


async def test_hl7_feed_is_scored_and_exported(
    kafka_settings: Settings,
    redis_url: str,
    tiny_model_dir: Path,
    start_worker: Callable[..., WorkerProcess],
    tmp_path: Path,
) -> None:
    settings = kafka_settings.model_copy(update={"store": redis_url, "model_dir": tiny_model_dir})
    feed = [
        adt("A01", "A-1", admit="20260301080000-0500"),
        mdm("T02", "N-1", "DOC-1", *text(0)),
        mdm("T02", "N-2", "DOC-2", *text(1)),
        mdm("T08", "N-3", "DOC-1", *text(2), edited="20260301110000-0500"),
        mdm("T02", "N-4", "DOC-3", *text(3)),
        message(msh("MDM^T11", "N-5", when="20260301130000-0500"), evn("T11"), pid(), pv1(), txa("DOC-3")),
        adt("A08", "A-2", admit="20260301073000-0500"),
        adt("A03", "A-3", discharge="20260303100000-0500"),
    ]
    path = tmp_path / "feed.hl7"
    path.write_bytes(framed(*feed))
    async with EventSink(settings) as sink:
        listener = await Hl7Listener(settings, sink).start("127.0.0.1", 0)
        try:
            assert [m[1] for m in await mllp_send(listener.address[1], path)] == ["AA"] * len(feed)
        finally:
            await listener.close()

    worker = start_worker(settings)

    def done(msgs: list[object]) -> bool:
        last = final_updates(msgs).get(167853)
        return last is not None and last.final

    updates = await asyncio.to_thread(
        read_topic,
        settings,
        RISK_UPDATES,
        until=done,
        timeout_s=120,
        alive=lambda: worker.proc.poll() is None,
    )
    assert done(updates), worker.output()[-3000:]
    final = final_updates(updates)[167853]
    assert final.n_notes == 2, "DOC-1 (edited) and DOC-2; DOC-3 was cancelled"
    notes = [
        NoteEvent.from_bytes(m.value()) for m in read_topic(settings, NOTES, until=lambda m: len(m) >= 5)
    ]
    expected = OfflineScorer(tiny_model_dir).scores(notes)[167853]
    assert expected is not None
    assert final.score == pytest.approx(expected, abs=1e-6)

    out = io.StringIO()
    counts = await export_fhir(settings, out, idle_timeout_s=2.0)
    assert counts["written"] == len(updates)
    assessments = [RiskAssessment.model_validate(json.loads(line)) for line in out.getvalue().splitlines()]
    last = max(assessments, key=lambda ra: int(ra.id.rsplit("-", 1)[1]))
    assert (last.status, last.encounter.reference, last.subject.reference) == (
        "final",
        "Encounter/167853",
        "Patient/22532",
    )
    assert float(last.prediction[0].probabilityDecimal) == pytest.approx(final.score)
    assert last.basis[0].reference in ("DocumentReference/DOC-1", "DocumentReference/DOC-2")
