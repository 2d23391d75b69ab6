"""Event schemas: versioning, validation naming the field, dead-letter reasons, no text outside notes."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime

import pytest

from notestream.stream.errors import EventError
from notestream.stream.events import (
    DEAD_LETTER_REASONS,
    AdmissionEvent,
    DeadLetter,
    Event,
    NoteEvent,
    RiskAlert,
    RiskUpdate,
    admission_key,
    hadm_from_key,
    parse_event,
    parse_note,
)

NOTE = {
    "note_id": "174",
    "revision": 1,
    "subject_id": 22532,
    "hadm_id": 167853,
    "category": "Discharge summary",
    "description": "Report",
    "chart_date": "2151-08-04",
    "is_error": False,
    "text": "Admission Date:  [**2151-7-16**] sensitive words",
    "source": "mimic-iii",
}


def raw(obj: object) -> bytes:
    return json.dumps(obj).encode()


def test_note_round_trip_and_future_fields_ignored() -> None:
    note = parse_note(raw({**NOTE, "schema_version": 2, "added_in_v2": {"x": 1}}), max_text_bytes=10_000)
    assert note.chart_date == date(2151, 8, 4)
    assert note.event_time() == datetime(2151, 8, 4, tzinfo=UTC)  # midnight in source_timezone (UTC)
    assert note.schema_version == 2
    assert NoteEvent.from_bytes(note.to_bytes()) == note
    assert note.produced_at.tzinfo is not None
    assert "sensitive" not in repr(note)
    assert "sensitive" not in str(note)


@pytest.mark.parametrize(
    ("message", "reason", "field"),
    [
        (b"\xff\xfe{}", "non_utf8", "byte 0"),
        (b'{"note_id": "1",', "invalid_json", "line 1"),
        (b"[1, 2]", "schema", "list"),
        (raw({k: v for k, v in NOTE.items() if k != "hadm_id"}), "missing_admission_id", "hadm_id"),
        (raw({**NOTE, "hadm_id": None}), "missing_admission_id", "hadm_id"),
        (raw({**NOTE, "text": "x" * 101}), "text_too_large", "text"),
        (raw({**NOTE, "text": "é" * 51}), "text_too_large", "102 UTF-8 bytes"),
        (b'{"note_id": "1", "subject_id": 1, "hadm_id": 2, "text": "\\ud800"}', "non_utf8", "text"),
        (raw({k: v for k, v in NOTE.items() if k != "subject_id"}), "schema", "'subject_id'"),
        (raw({**NOTE, "hadm_id": " abc"}), "schema", "'hadm_id'"),
        (raw({**NOTE, "hadm_id": True}), "schema", "'hadm_id'"),
        (raw({**NOTE, "hadm_id": -5}), "schema", "'hadm_id'"),
        (raw({**NOTE, "hadm_id": 10**30}), "schema", "'hadm_id'"),
        (raw({**NOTE, "subject_id": 700101.0}), "schema", "'subject_id'"),
        (raw({**NOTE, "hadm_id": "a\u0000b"}), "schema", "'hadm_id'"),
        (raw({**NOTE, "note_id": "x" * 129}), "schema", "'note_id'"),
        (raw({**NOTE, "revision": -1}), "schema", "'revision'"),
        (raw({**NOTE, "revision": True}), "schema", "'revision'"),
        (raw({**NOTE, "revision": 1.0}), "schema", "'revision'"),
        (raw({**NOTE, "revision": "2"}), "schema", "'revision'"),
        (raw({**NOTE, "revision": 2**63}), "schema", "'revision'"),
        (raw({**NOTE, "is_error": "yes"}), "schema", "'is_error'"),
        (raw({**NOTE, "chart_time": "yesterday"}), "schema", "'chart_time'"),
    ],
)
def test_bad_notes_are_classified(message: bytes, reason: str, field: str) -> None:
    with pytest.raises(EventError) as info:
        parse_note(message, max_text_bytes=100)
    assert info.value.reason == reason
    assert info.value.reason in DEAD_LETTER_REASONS
    assert field in info.value.detail
    assert "sensitive" not in info.value.detail


def test_schema_details_never_echo_values() -> None:
    with pytest.raises(EventError) as info:
        parse_note(raw({**NOTE, "text": ["sensitive words"]}), max_text_bytes=1000)
    assert "'text'" in info.value.detail
    assert "sensitive" not in info.value.detail


def test_dead_letter_keeps_the_original_bytes() -> None:
    original = b"\xff\x00 not json \n"
    with pytest.raises(EventError) as info:
        parse_note(original, max_text_bytes=100)
    letter = DeadLetter.from_error(original, info.value, topic="notes", partition=3, offset=17, key=b"42")
    wire = letter.to_bytes()
    assert json.loads(wire)["reason"] == "non_utf8"
    back = DeadLetter.from_bytes(wire)
    assert (back.original, back.key, back.partition, back.offset) == (original, b"42", 3, 17)
    assert "not json" not in repr(back)


def test_admission_events_need_their_time() -> None:
    admit = AdmissionEvent(kind="admit", subject_id=1, hadm_id=2, admit_time=datetime(2150, 1, 1))
    assert AdmissionEvent.from_bytes(admit.to_bytes()) == admit
    with pytest.raises(EventError, match="discharge_time"):
        parse_event(raw({"kind": "discharge", "subject_id": 1, "hadm_id": 2}), AdmissionEvent)
    with pytest.raises(EventError, match="'kind'"):
        parse_event(raw({"kind": "transfer", "subject_id": 1, "hadm_id": 2}), AdmissionEvent)


@pytest.mark.parametrize("cls", [AdmissionEvent, RiskUpdate, RiskAlert, DeadLetter])
def test_no_event_but_notes_has_a_text_field(cls: type[Event]) -> None:
    assert not {"text", "note_text", "chunks"} & set(cls.model_fields)


def test_risk_events_round_trip() -> None:
    update = RiskUpdate(
        hadm_id=1,
        subject_id=2,
        task="readmission",
        model="m",
        score=None,
        p_max=None,
        p_mean=None,
        n_chunks=0,
        n_notes=0,
        seq=3,
        c=2.0,
        change="retracted",
    )
    assert RiskUpdate.from_bytes(update.to_bytes()) == update
    alert = RiskAlert(
        hadm_id=1,
        task="readmission",
        score=0.8,
        threshold=0.7,
        state="raised",
        seq=3,
        at=datetime(2026, 1, 1, tzinfo=UTC),
    )
    assert RiskAlert.from_bytes(alert.to_bytes()) == alert


def test_keys() -> None:
    assert hadm_from_key(admission_key(167853)) == 167853
    assert admission_key(5) == b"5"
