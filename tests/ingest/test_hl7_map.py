"""HL7 v2 -> events, without Kafka: real-format ADT, MDM and ORU messages through the mapping."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from notestream.models.spec import ModelSpec
from notestream.stream.events import AdmissionEvent, NoteEvent
from notestream.stream.ingest.errors import Hl7Reject
from notestream.stream.ingest.hl7_ack import ack_code, build_ack
from notestream.stream.ingest.hl7_map import Hl7Options, decode, field_map, map_message
from notestream.stream.ingest.hl7_values import revision_of
from notestream.stream.pipeline import Pipeline
from notestream.stream.store import MemoryRiskStore
from tests.ingest.messages import adt, evn, mdm, message, msh, obr, obx, pid, pv1, segment, txa

EST = timezone(timedelta(hours=-5))
OPTIONS = Hl7Options(tz=ZoneInfo("UTC"), categories={"DS": "Discharge summary"})


def events(raw: bytes, options: Hl7Options = OPTIONS) -> list[Any]:
    return [event for _, event in map_message(decode(raw, options), options)]


def rejected(raw: bytes, options: Hl7Options = OPTIONS) -> Hl7Reject:
    with pytest.raises(Hl7Reject) as info:
        map_message(decode(raw, options), options)
    return info.value


@pytest.mark.parametrize(
    ("trigger", "kind"),
    [
        ("A01", "admit"),
        ("A04", "admit"),
        ("A03", "discharge"),
        ("A08", "update"),
        ("A11", "cancel_admit"),
        ("A13", "cancel_discharge"),
    ],
)
def test_adt_triggers_become_admission_events(trigger: str, kind: str) -> None:
    [event] = events(adt(trigger, f"C-{trigger}", admit="20260228081000-0500", discharge="20260305140000"))
    assert isinstance(event, AdmissionEvent)
    assert (event.kind, event.hadm_id, event.subject_id) == (kind, 167853, 22532)
    assert event.admit_time == datetime(2026, 2, 28, 8, 10, tzinfo=EST), "the offset is kept"
    if kind == "update":
        assert event.discharge_time is None, "an update never discharges"
    else:
        assert event.discharge_time == datetime(2026, 3, 5, 14, 0, tzinfo=UTC), "no offset: source_timezone"
    assert event.source == "hl7:EPIC"
    assert event.admission_type == "E"


def test_admit_without_pv1_44_takes_the_event_time_in_the_source_timezone() -> None:
    raw = message(msh("ADT^A01", "1"), segment("EVN", {1: "A01", 2: "20260301080000"}), pid(), pv1())
    [event] = events(raw, Hl7Options(tz=ZoneInfo("America/New_York")))
    assert event.admit_time == datetime(2026, 3, 1, 8, 0, tzinfo=ZoneInfo("America/New_York"))


def test_mdm_text_decodes_escapes_and_joins_obx_lines() -> None:
    raw = mdm(
        "T02",
        "M1",
        "DOC-1",
        r"Pt seen at bedside.\.br\BP 120\S\80, HR 72.",
        r"Plan: diuresis \T\ follow-up\X0D0A\Meds: see list \F\ MAR \R\ pharmacy \E\ notes",
        "Third line~Fourth line (a repetition)",
        kind="DS",
    )
    [note] = events(raw)
    assert isinstance(note, NoteEvent)
    assert note.text == (
        "Pt seen at bedside.\nBP 120^80, HR 72.\n"
        "Plan: diuresis & follow-up\nMeds: see list | MAR ~ pharmacy \\ notes\n"
        "Third line\nFourth line (a repetition)"
    )
    assert (note.note_id, note.revision, note.is_error) == ("DOC-1", 0, False)
    assert note.category == "Discharge summary", "note_category_map renames the document type code"
    assert note.chart_time == datetime(2026, 3, 1, 9, 30, tzinfo=EST)
    assert note.chart_date is not None
    assert note.chart_date.isoformat() == "2026-03-01"


def test_edits_replacements_and_cancels_are_later_revisions_of_the_same_note() -> None:
    [original] = events(mdm("T02", "1", "DOC-7", "first text"))
    [edit] = events(mdm("T08", "2", "DOC-7", "edited text", edited="20260301110000-0500"))
    [replacement] = events(
        mdm("T10", "3", "DOC-7-R2", "replaced text", parent="DOC-7", edited="20260301120000-0500")
    )
    [addendum] = events(mdm("T06", "4", "DOC-8", "addendum text", parent="DOC-7"))
    cancel_raw = message(
        msh("MDM^T11", "5", when="20260301130000-0500"), evn("T11"), pid(), pv1(), txa("DOC-7")
    )
    [cancel] = events(cancel_raw)
    assert [n.note_id for n in (original, edit, replacement, cancel)] == ["DOC-7"] * 4
    revisions = [n.revision for n in (original, edit, replacement, cancel)]
    assert revisions == sorted(set(revisions)), "each later change is a higher revision"
    assert edit.revision == revision_of(datetime(2026, 3, 1, 11, 0, tzinfo=EST))
    assert replacement.text == "replaced text"
    assert cancel.is_error
    assert cancel.text == ""
    assert (addendum.note_id, addendum.revision) == ("DOC-8", 0), "an addendum is a note of its own"
    # the same edit resent is the same revision: the store counts it once
    assert (
        events(mdm("T08", "2b", "DOC-7", "edited text", edited="20260301110000-0500"))[0].revision
        == edit.revision
    )


def test_oru_text_results_become_one_note_per_report() -> None:
    raw = message(
        msh("ORU^R01^ORU_R01", "R1"),
        pid(),
        pv1(),
        obr("RAD-100", status="P", reported="20260301120500-0500"),
        obx(1, "FINDINGS: No acute process.", "FT"),
        segment("OBX", {1: "2", 2: "NM", 3: "DOSE", 5: "12", 11: "F"}),
        obx(3, "IMPRESSION: Normal chest.", "ST"),
        obr("RAD-101", status="X"),
        obr("LAB-1"),
        segment("OBX", {1: "1", 2: "NM", 3: "K", 5: "4.1", 11: "F"}),
    )
    report, cancelled = events(raw)
    assert (report.note_id, report.text) == (
        "RAD-100",
        "FINDINGS: No acute process.\nIMPRESSION: Normal chest.",
    )
    assert report.category == "71020"
    assert report.description == "XR CHEST 2V"
    assert report.revision == revision_of(datetime(2026, 3, 1, 12, 5, tzinfo=EST))
    assert (cancelled.note_id, cancelled.is_error) == ("RAD-101", True)
    final = message(
        msh("ORU^R01", "R2"), pid(), pv1(), obr("RAD-100", reported="20260301124500-0500"), obx(1, "Final.")
    )
    assert events(final)[0].revision > report.revision, "the final report replaces the preliminary one"
    numeric_only = message(
        msh("ORU^R01", "R3"), pid(), pv1(), obr("LAB-2"), segment("OBX", {1: "1", 2: "NM", 5: "1"})
    )
    assert events(numeric_only) == [], "no text results: nothing to score"


def test_character_set_from_msh_18() -> None:
    latin = message(msh("MDM^T02", "L1", charset="8859/1"), pid(), pv1(), txa("D1"), "OBX|1|TX|||").replace(
        b"OBX|1|TX|||\r", "OBX|1|TX|||Fièvre à 39°C\r".encode("latin-1")
    )
    assert events(latin)[0].text == "Fièvre à 39°C"
    undeclared = latin.replace(b"|8859/1", b"|")
    exc = rejected(undeclared)
    assert (exc.ack, exc.code, exc.location, exc.reason) == ("AR", 102, "MSH-18", "non_utf8")


@pytest.mark.parametrize(
    ("raw", "ack", "code", "location", "reason"),
    [
        (adt("A01", "1", encounter=""), "AE", 101, "PV1-19", "missing_admission_id"),
        (adt("A02", "2"), "AR", 201, "MSH-9", "schema"),
        (message(msh("SIU^S12", "3"), pid()), "AR", 200, "MSH-9", "schema"),
        (b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", "AR", 100, "MSH-1", "schema"),
        (b"MSH|^~\\&\x00\x01garbage", "AR", 203, "MSH-12", "schema"),
        (b"MSH|^~", "AR", 100, "MSH-2", "schema"),
        (message(msh("ADT^A01", "4", f11="T"), pid(), pv1(admit="20260301")), "AR", 202, "MSH-11", "schema"),
        (
            message(msh("ADT^A01", "5", f12="3.0"), pid(), pv1(admit="20260301")),
            "AR",
            203,
            "MSH-12",
            "schema",
        ),
        (adt("A01", "6", admit="2026-03-01 08:00"), "AE", 102, "PV1-44", "schema"),
        (mdm("T02", "7", "DOC-1"), "AE", 101, "OBX-5", "schema"),
        (mdm("T02", "8", "", "text"), "AE", 101, "TXA-12", "schema"),
        (message(msh("ADT^A03", "9", when=""), pid(), pv1()), "AE", 101, "PV1-45", "schema"),
    ],
)
def test_rejects_name_what_is_wrong(raw: bytes, ack: str, code: int, location: str, reason: str) -> None:
    exc = rejected(raw)
    assert (exc.ack, exc.code, exc.location, exc.reason) == (ack, code, location, reason), exc.detail


def test_rejects_never_quote_the_text_and_oversize_notes_are_refused() -> None:
    secret = "Patient disclosed SECRET-PHI-TOKEN"
    exc = rejected(mdm("T02", "1", "D1", secret * 10), Hl7Options(max_text_bytes=100))
    assert exc.reason == "text_too_large"
    assert exc.location == "OBX-5"
    assert "SECRET" not in exc.detail
    assert "SECRET" not in str(exc)
    assert exc.key == b"167853", "the dead letter is keyed by the admission"


def test_field_map_overrides_and_checks_its_entries() -> None:
    raw = message(
        msh("ADT^A01", "1"), pid(), segment("PV1", {1: "1", 19: "", 50: "ALT-7"}).replace("ALT-7", "4242")
    )
    options = Hl7Options(fields=field_map({"encounter_id": ["PV1-19.1", "PV1-50.1"]}))
    raw = raw.replace(b"\rPV1", b"\rEVN|A01|20260301\rPV1")
    assert events(raw, options)[0].hadm_id == 4242
    with pytest.raises(ValueError, match="unknown entry"):
        field_map({"encounter": ["PV1-19"]})
    with pytest.raises(ValueError, match="not an HL7 field path"):
        field_map({"encounter_id": ["PV1.19"]})


def test_hospital_string_ids_pass_through() -> None:
    [event] = events(adt("A01", "1", encounter="V2026-000123", admit="20260301"))
    assert event.hadm_id == "V2026-000123"


def test_acks_follow_the_original_and_enhanced_modes() -> None:
    parsed = decode(adt("A01", "CTRL-9", admit="20260301"), OPTIONS)
    ack = build_ack(parsed.header, "AA", None, control_id="X1", now=datetime(2026, 3, 1, tzinfo=UTC))
    msh_fields, msa = (s.split("|") for s in ack.strip("\r").split("\r"))
    assert msh_fields[8] == "ACK^A01^ACK"
    assert msh_fields[2] == "NOTESTREAM"
    assert msh_fields[4] == "EPIC"
    assert msa == ["MSA", "AA", "CTRL-9"]
    enhanced = decode(
        message(msh("ADT^A01", "E1", f15="ER", f16="NE"), pid(), pv1(admit="20260301")), OPTIONS
    )
    assert ack_code(enhanced.header, "AA") is None, "ER: only errors are acknowledged"
    assert ack_code(enhanced.header, "AE") == "CE"


async def test_the_worker_applies_updates_and_counts_cancels() -> None:
    store = MemoryRiskStore()
    pipeline = Pipeline(None, store, ModelSpec(), model="m")  # type: ignore[arg-type]
    first = datetime(2026, 3, 1, 8, 0, tzinfo=UTC)
    await pipeline.admission(AdmissionEvent(kind="admit", hadm_id=1, subject_id=2, admit_time=first))
    corrected = first - timedelta(hours=2)
    assert (
        await pipeline.admission(AdmissionEvent(kind="update", hadm_id=1, subject_id=2, admit_time=corrected))
        is None
    )
    info = await store.admission(1)
    assert info is not None
    assert info.admit_time == corrected
    assert not info.discharged
    for kind in ("cancel_admit", "cancel_discharge", "update"):
        assert await pipeline.admission(AdmissionEvent(kind=kind, hadm_id=1, subject_id=2)) is None  # type: ignore[arg-type]
    info = await store.admission(1)
    assert info is not None, "cancels change nothing"
    assert (info.admit_time, info.discharged) == (corrected, False)
    assert pipeline.counters["admission_cancel_admit"] == pipeline.counters["admission_cancel_discharge"] == 1
    assert pipeline.counters["admission_update"] == 2
