"""FHIR R4 -> events, without Kafka: Encounters, DocumentReferences and Bundles through the mapping."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from notestream.stream.ingest.errors import FhirReject
from notestream.stream.ingest.fhir_map import FhirOptions, map_body, map_resource
from notestream.stream.ingest.hl7_values import revision_of
from tests.ingest.resources import bundle, document, encounter

EST = timezone(timedelta(hours=-5))
OPTIONS = FhirOptions(tz=ZoneInfo("America/New_York"), categories={"18842-5": "Discharge summary"})


def events(obj: dict[str, Any]) -> list[Any]:
    return [event for _, event in map_body(obj, OPTIONS).events]


def rejected(obj: Any) -> FhirReject:
    with pytest.raises(FhirReject) as info:
        map_body(obj, OPTIONS)
    return info.value


def test_encounters_become_admission_events() -> None:
    [admit] = events(encounter())
    assert (admit.kind, admit.hadm_id, admit.subject_id, admit.admission_type) == (
        "admit",
        167853,
        22532,
        "IMP",
    )
    assert admit.admit_time == datetime(2026, 2, 28, 8, 10, tzinfo=EST)
    admit, discharge = events(encounter(status="finished", end="2026-03-03"))
    assert [admit.kind, discharge.kind] == ["admit", "discharge"]
    assert discharge.discharge_time == datetime(2026, 3, 3, tzinfo=ZoneInfo("America/New_York")), (
        "a date: local midnight"
    )
    assert [e.kind for e in events(encounter(status="entered-in-error"))] == ["cancel_admit"]
    assert events(encounter(status="planned")) == []


def test_document_references_become_notes() -> None:
    [note] = events(document(text="Fièvre à 39°C.\r\nPlan: IV fluids.", charset="iso-8859-1"))
    assert (note.note_id, note.hadm_id, note.subject_id, note.revision) == ("doc-1", 167853, 22532, 0)
    assert note.text == "Fièvre à 39°C.\nPlan: IV fluids."
    assert note.chart_time == datetime(2026, 3, 1, 10, 0, tzinfo=EST)
    assert (note.category, note.description) == ("11506-3", "Progress note")
    html = "<html><body><h1>Discharge</h1><p>Home today &amp; follow up.</p><ul><li>aspirin</li></ul></body></html>"
    [note] = events(document(text=html, mime="text/html"))
    assert note.text == "Discharge\nHome today & follow up.\naspirin"


def test_replacements_and_errors_are_revisions_of_the_replaced_note() -> None:
    replaced = document(
        "doc-2",
        "Corrected text.",
        relatesTo=[{"code": "replaces", "target": {"reference": "DocumentReference/doc-1"}}],
        meta={"lastUpdated": "2026-03-01T16:00:00Z"},
    )
    [note] = events(replaced)
    assert (note.note_id, note.text) == ("doc-1", "Corrected text.")
    assert note.revision == revision_of(datetime(2026, 3, 1, 16, 0, tzinfo=UTC))
    [gone] = events(
        document("doc-1", status="entered-in-error", meta={"lastUpdated": "2026-03-02T09:00:00Z"})
    )
    assert gone.is_error
    assert gone.revision > note.revision


def test_bundles_transactions_and_subscription_notifications() -> None:
    tx = bundle(
        "transaction",
        {"resourceType": "Patient", "id": "22532"},
        encounter("4242"),
        document(encounter_ref="urn:uuid:61ebe359-bfdc-4613-8bf2-c5e300945f0a"),
        full_urls=["urn:uuid:p1", "urn:uuid:61ebe359-bfdc-4613-8bf2-c5e300945f0a", "urn:uuid:d1"],
    )
    mapped = map_body(tx, OPTIONS)
    assert [(topic, e.hadm_id) for topic, e in mapped.events] == [("admissions", 4242), ("notes", 4242)]
    assert mapped.skipped == 1, "the Patient is skipped and counted"
    status = {"resourceType": "SubscriptionStatus", "status": "active", "type": "event-notification"}
    note = bundle("subscription-notification", status, document("doc-9"))
    assert [e.note_id for e in events(note)] == ["doc-9"]
    id_only = {
        "resourceType": "Bundle",
        "type": "subscription-notification",
        "entry": [{"resource": status}, {"fullUrl": "https://ehr/fhir/DocumentReference/doc-9"}],
    }
    assert rejected(id_only).issue == "not-supported"


@pytest.mark.parametrize(
    ("obj", "status", "issue", "expression", "reason"),
    [
        (
            document(encounter_ref=""),
            422,
            "required",
            "DocumentReference.context.encounter",
            "missing_admission_id",
        ),
        ({"resourceType": "Patient", "id": "1"}, 422, "not-supported", "resourceType", "schema"),
        ([1, 2], 400, "structure", "resourceType", "schema"),
        (document(date="yesterday"), 400, "invalid", "DocumentReference.date", "schema"),
        (
            document(content=[{"attachment": {"contentType": "text/plain", "url": "https://x/doc"}}]),
            422,
            "not-supported",
            "DocumentReference.content[0].attachment.data",
            "schema",
        ),
        (
            document(content=[{"attachment": {"contentType": "application/pdf", "data": "JVBERi0="}}]),
            422,
            "required",
            "DocumentReference.content.attachment.contentType",
            "schema",
        ),
        (encounter(status="finished", end=None), 422, "required", "Encounter.period.end", "schema"),
        (
            bundle("batch", encounter(), document(encounter_ref="")),
            422,
            "required",
            "Bundle.entry[1].resource.context.encounter",
            "missing_admission_id",
        ),
        (
            {"resourceType": "Bundle", "type": "document", "entry": []},
            422,
            "not-supported",
            "Bundle.type",
            "schema",
        ),
    ],
)
def test_rejects_name_the_element(obj: Any, status: int, issue: str, expression: str, reason: str) -> None:
    exc = rejected(obj)
    assert (exc.status, exc.issue, exc.expression, exc.reason) == (status, issue, expression, reason), (
        exc.detail
    )


def test_rejects_never_quote_the_text() -> None:
    exc = rejected(document(text="SECRET-PHI " * 50, encounter_ref=""))
    assert "SECRET" not in exc.detail
    with pytest.raises(FhirReject) as info:
        map_resource(document(text="SECRET-PHI " * 50), FhirOptions(max_text_bytes=100))
    assert (info.value.status, info.value.reason) == (413, "text_too_large")
    assert "SECRET" not in info.value.detail
