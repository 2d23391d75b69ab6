r"""HL7 v2 messages as notestream events: ADT -> admission events, MDM and ORU -> note events.

Pure: bytes in, events out (or an :class:`~notestream.stream.ingest.errors.Hl7Reject` that says which ACK to give
and why). python-hl7 parses; this module only maps. Two steps, so the listener can always answer with
an ACK built on the message's own header: :func:`decode` (character set from MSH-18, parse, header) and
:func:`map_message` (the events).

What becomes what (``kind`` of :class:`~notestream.stream.events.AdmissionEvent`):

=================  ====================================================================================
ADT^A01, A04       ``admit`` (admit time PV1-44, else the event time EVN-6, EVN-2, MSH-7)
ADT^A03            ``discharge`` (discharge time PV1-45, else the event time)
ADT^A08            ``update`` (an admit time given replaces the stored one; never a discharge)
ADT^A11, A13       ``cancel_admit``, ``cancel_discharge`` (recorded, counted; the store keeps its record)
MDM^T02, T06       a note (T06: an addendum, a note of its own), revision 0
MDM^T08, T10       a higher revision of the same note (T10: of the parent note TXA-13 it replaces)
MDM^T11            a retraction (``is_error``) of the note
ORU^R01            a note per OBR group with text results (OBX TX, FT, ST); OBR-25 ``X`` retracts
=================  ====================================================================================

Revisions: an original is revision 0; an edit, replacement or cancel is the time of the edit (TXA-8,
else MSH-7; ORU: OBR-22, else MSH-7) in milliseconds since 1970, so a later edit always wins and a
resent message is counted once. Ids are passed on as the strings the message holds.

>>> from zoneinfo import ZoneInfo
>>> raw = (b"MSH|^~\\&|EPIC|NORTH|NOTESTREAM|NORTH|20260301101500-0500||MDM^T02|MSG0001|P|2.5\r"
...        b"PID|1||22532^^^NORTH^MR\rPV1|1|I|W7^712^1" + b"|" * 16 + b"167853" + b"|" * 25 +
...        b"20260228081000-0500\rTXA|1|PN|TX|20260301100000-0500||||||||DOC-1\r"
...        b"OBX|1|TX|||Stable overnight.\\.br\\Plan: discharge \\T\\ follow up.\r")
>>> options = Hl7Options(tz=ZoneInfo("UTC"))
>>> [(topic, e.note_id, e.hadm_id, e.revision, e.chart_time.isoformat()) for topic, e in
...  map_message(decode(raw, options), options)]
[('notes', 'DOC-1', 167853, 0, '2026-03-01T10:00:00-05:00')]
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, tzinfo
from typing import Any, Literal

import hl7
from hl7.parser import _ParsePlan, _split, create_parse_plan
from pydantic import ValidationError

from notestream.core.topics import ADMISSIONS, NOTES
from notestream.stream.events import AdmissionEvent, Event, NoteEvent
from notestream.stream.ingest.errors import Hl7Reject
from notestream.stream.ingest.hl7_values import codec_of, parse_dtm, revision_of, unescape

FIELD_MAP_DEFAULTS: dict[str, tuple[str, ...]] = {
    "encounter_id": ("PV1-19.1",),
    "patient_id": ("PID-3.1",),
    "admit_time": ("PV1-44",),
    "discharge_time": ("PV1-45",),
    "event_time": ("EVN-6", "EVN-2", "MSH-7"),
    "admission_type": ("PV1-4",),
    "death_time": ("PID-29",),
    "note_id": ("TXA-12.1",),
    "parent_note_id": ("TXA-13.1",),
    "category": ("TXA-2",),
    "description": ("TXA-2.2",),
    "chart_time": ("TXA-4", "TXA-6", "MSH-7"),
    "edit_time": ("TXA-8", "MSH-7"),
    "oru_note_id": ("OBR-3.1",),
    "oru_category": ("OBR-4",),
    "oru_description": ("OBR-4.2",),
    "oru_chart_time": ("OBR-7", "OBR-22", "MSH-7"),
    "oru_edit_time": ("OBR-22", "MSH-7"),
}
"""Where each value is read, first non-empty path wins (``SEG-FIELD[.COMPONENT[.SUBCOMPONENT]]``, first
repetition). The ``hl7_field_map`` setting replaces any entry, e.g. ``{"encounter_id": ["PV1-50.1"]}``."""

_PATH = re.compile(r"^(?P<seg>[A-Z][A-Z0-9]{2})-(?P<f>[1-9]\d*)(?:\.(?P<c>[1-9]\d*))?(?:\.(?P<s>[1-9]\d*))?$")
TEXT_TYPES = ("TX", "FT", "ST")
"""OBX value types whose OBX-5 is note text."""

ADT_KINDS: dict[str, str] = {
    "A01": "admit",
    "A04": "admit",
    "A03": "discharge",
    "A08": "update",
    "A11": "cancel_admit",
    "A13": "cancel_discharge",
}
MDM_TRIGGERS = ("T02", "T06", "T08", "T10", "T11")
SUPPORTED: dict[str, tuple[str, ...]] = {"ADT": tuple(ADT_KINDS), "MDM": MDM_TRIGGERS, "ORU": ("R01",)}

# HL7 table 0357 error codes used in ERR-3
SEGMENT_SEQUENCE = 100
REQUIRED_MISSING = 101
DATA_TYPE = 102
UNSUPPORTED_TYPE = 200
UNSUPPORTED_EVENT = 201
UNSUPPORTED_PROCESSING = 202
UNSUPPORTED_VERSION = 203
INTERNAL_ERROR = 207


def check_path(path: str) -> str:
    """``path`` if it is a field path such as ``PV1-19.1``, else ValueError.

    >>> check_path("PID-3.1")
    'PID-3.1'
    >>> check_path("PID.3")
    Traceback (most recent call last):
    ...
    ValueError: 'PID.3' is not an HL7 field path (SEG-FIELD[.COMPONENT[.SUBCOMPONENT]], e.g. PV1-19.1)
    """
    if not _PATH.match(path):
        raise ValueError(
            f"{path!r} is not an HL7 field path (SEG-FIELD[.COMPONENT[.SUBCOMPONENT]], e.g. PV1-19.1)"
        )
    return path


def field_map(overrides: Mapping[str, Sequence[str]] | None = None) -> dict[str, tuple[str, ...]]:
    """The defaults with ``overrides`` applied; unknown names and malformed paths raise ValueError.

    >>> field_map({"encounter_id": ["PV1-50.1", "PV1-19.1"]})["encounter_id"]
    ('PV1-50.1', 'PV1-19.1')
    """
    out = dict(FIELD_MAP_DEFAULTS)
    for name, paths in (overrides or {}).items():
        if name not in FIELD_MAP_DEFAULTS:
            raise ValueError(
                f"hl7_field_map has an unknown entry {name!r}; known: {', '.join(FIELD_MAP_DEFAULTS)}"
            )
        if isinstance(paths, str) or not paths:
            raise ValueError(f"hl7_field_map entry {name!r} must be a non-empty list of field paths")
        out[name] = tuple(check_path(p) for p in paths)
    return out


@dataclass(frozen=True)
class Hl7Options:
    """How messages are read: the field map, the zone of times without an offset, the character set
    of messages without MSH-18, the processing ids accepted (MSH-11), the note size limit, and document
    type codes renamed to the model's categories (``{"DS": "Discharge summary"}``)."""

    tz: tzinfo = UTC
    fields: Mapping[str, tuple[str, ...]] = field(default_factory=lambda: dict(FIELD_MAP_DEFAULTS))
    default_codec: str = "utf-8"
    processing_ids: tuple[str, ...] = ("P",)
    max_text_bytes: int = 2_000_000
    categories: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def from_settings(cls, settings: Any) -> Hl7Options:
        """The options of :class:`notestream.core.settings.Settings` (``source_timezone``, ``hl7_*``)."""
        from zoneinfo import ZoneInfo

        from notestream.core.errors import ConfigError

        try:
            fields = field_map(settings.hl7_field_map)
            codec = codec_of(settings.hl7_default_charset) or "utf-8"
        except (ValueError, LookupError) as exc:
            raise ConfigError(f"Invalid HL7 settings: {exc}.") from exc
        return cls(
            tz=ZoneInfo(settings.source_timezone),
            fields=fields,
            default_codec=codec,
            processing_ids=tuple(p.upper() for p in settings.hl7_processing_ids),
            max_text_bytes=settings.max_note_bytes,
            categories=dict(settings.note_category_map),
        )


@dataclass(frozen=True)
class Header:
    """What an ACK needs from a message's MSH segment (raw, still escaped, as HL7 wants them echoed)."""

    control_id: str
    message_type: str
    trigger: str
    version: str
    processing_id: str
    accept_ack: str
    app_ack: str
    sending_app: str
    sending_facility: str
    receiving_app: str
    receiving_facility: str
    codec: str
    separators: str
    escape: str


@dataclass(frozen=True)
class Parsed:
    """A decoded message: its header and python-hl7's parse."""

    header: Header
    message: hl7.Message


class _FieldPlan(_ParsePlan):
    """python-hl7's parse plan, stopped at the field level: segments hold their fields as raw strings.

    The mapping reads raw fields (and unescapes them itself), so the repetition, component and
    sub-component containers python-hl7 would build for every field are never used; building them is
    two thirds of a full parse (docs/ehr.md: throughput)."""

    def next(self) -> _ParsePlan | None:
        if self.containers[0] == self.factory.create_segment:
            return None  # asked once per field: answered without building a plan
        deeper = super().next()
        if deeper is None:
            return None
        return _FieldPlan(deeper.separator, deeper.separators, deeper.containers, deeper.esc, deeper.factory)


def parse_fields(text: str) -> hl7.Message:
    r"""Parse a message with python-hl7 down to its fields: ``message[i][n]`` is segment i's field n as
    written (MSH-n for the MSH segment, as python-hl7 numbers it).

    >>> msg = parse_fields("MSH|^~\\&|EPIC|NORTH\rPID|1||123^^^H^MR~456")
    >>> str(msg[0][3]), msg[1][3], msg.separators[1:]
    ('EPIC', '123^^^H^MR~456', '|~^&')
    """
    text = text.strip()
    plan = create_parse_plan(text)
    return _split(text, _FieldPlan(plan.separator, plan.separators, plan.containers, plan.esc, plan.factory))


def _msh_fields(raw: bytes) -> list[str]:
    """The MSH segment's fields as latin-1 text (ASCII-compatible in every charset HL7 allows), so
    MSH-18 can be read before the message is decoded. ``fields[n - 1]`` is MSH-n for n >= 2."""
    line = re.split(rb"[\r\n]", raw, maxsplit=1)[0].decode("latin-1")
    if len(line) < 8:
        raise Hl7Reject(
            "AR", SEGMENT_SEQUENCE, "the MSH segment is too short to hold its delimiters", location="MSH-2"
        )
    return line.split(line[3])


def decode(raw: bytes, options: Hl7Options) -> Parsed:
    """Decode and parse one message: MSH-18 names its character set (else ``options.default_codec``).

    Raises :class:`Hl7Reject` (AR) for bytes that are not an HL7 v2 message, an unknown or wrong
    character set, an unsupported version (MSH-12) or processing id (MSH-11).
    """
    body = raw.lstrip(b"\xef\xbb\xbf \t\r\n\x0b").rstrip(b" \t\r\n\x1c")
    if body[:3] in (b"FHS", b"BHS"):
        raise Hl7Reject(
            "AR",
            SEGMENT_SEQUENCE,
            "batches (FHS/BHS) are read by `notestream ingest hl7 --file`, not "
            "over MLLP; send one message per MLLP block",
            location="MSH-1",
        )
    if body[:3] != b"MSH":
        raise Hl7Reject(
            "AR", SEGMENT_SEQUENCE, "the message does not start with an MSH segment", location="MSH-1"
        )
    msh = _msh_fields(body)
    charset = msh[17].split(msh[1][1:2] or "~")[0] if len(msh) > 17 else ""
    try:
        codec = codec_of(charset) or options.default_codec
    except LookupError as exc:
        raise Hl7Reject(
            "AR", DATA_TYPE, "MSH-18 names a character set notestream does not know", location="MSH-18"
        ) from exc
    try:
        text = body.decode(codec)
    except UnicodeDecodeError as exc:
        raise Hl7Reject(
            "AR",
            DATA_TYPE,
            f"byte {exc.start} is not valid {codec} (MSH-18 or the hl7_default_charset setting)",
            location="MSH-18",
            reason="non_utf8" if codec == "utf-8" else "schema",
        ) from exc
    text = text.replace("\r\n", "\r").replace("\n", "\r")
    try:
        message = parse_fields(text)
        head = message[0]
    except Exception as exc:  # python-hl7 raises many kinds (ParseException, IndexError...) on garbage
        raise Hl7Reject("AR", SEGMENT_SEQUENCE, "the message is not parsable HL7 v2", location="MSH") from exc
    seps = message.separators.lstrip("\r")

    def raw_field(n: int) -> str:
        return str(head[n]) if n < len(head) else ""

    def first(value: str, sep: str) -> str:
        return value.split(sep)[0].strip()

    comp, rep = seps[2], seps[1]
    header = Header(
        control_id=raw_field(10),
        message_type=first(first(raw_field(9), rep), comp).upper(),
        trigger=[*first(raw_field(9), rep).split(comp), ""][1].strip().upper(),
        version=first(first(raw_field(12), rep), comp),
        processing_id=first(first(raw_field(11), rep), comp).upper(),
        accept_ack=raw_field(15).strip().upper(),
        app_ack=raw_field(16).strip().upper(),
        sending_app=raw_field(3),
        sending_facility=raw_field(4),
        receiving_app=raw_field(5),
        receiving_facility=raw_field(6),
        codec=codec,
        separators=seps,
        escape=message.esc,
    )
    if not header.version.startswith("2."):
        raise Reject(
            header, "AR", UNSUPPORTED_VERSION, "MSH-12 is not an HL7 v2 version (2.1 to 2.9)", "MSH-12"
        )
    if header.processing_id not in options.processing_ids:
        raise Reject(
            header,
            "AR",
            UNSUPPORTED_PROCESSING,
            f"MSH-11 processing id {header.processing_id or '(empty)'} is not accepted here (the "
            f"hl7_processing_ids setting: {', '.join(options.processing_ids)})",
            "MSH-11",
        )
    return Parsed(header, message)


class Reject(Hl7Reject):
    """An :class:`Hl7Reject` raised once the header is known (the ACK echoes it)."""

    def __init__(
        self,
        header: Header,
        ack: Literal["AE", "AR"],
        code: int,
        detail: str,
        location: str = "",
        *,
        reason: str = "schema",
        key: bytes | None = None,
    ) -> None:
        super().__init__(ack, code, detail, location=location, reason=reason, key=key)
        self.header = header


class _Reader:
    """Field values of one message by path, unescaped; ``group`` limits OBR/OBX paths to one group."""

    def __init__(self, parsed: Parsed, options: Hl7Options) -> None:
        self.parsed = parsed
        self.options = options
        self.header = parsed.header
        self.group: list[Any] = []
        self.segments = [list(seg) for seg in parsed.message]  # plain lists: indexing containers is slow
        self.first: dict[str, list[Any]] = {}
        for seg in reversed(self.segments):
            self.first[str(seg[0])] = seg

    def segment(self, name: str) -> Any | None:
        for seg in self.group:
            if str(seg[0]) == name:
                return seg
        return self.first.get(name)

    def repetitions(self, path: str) -> list[str]:
        m = _PATH.match(path)
        assert m is not None  # checked by field_map
        seg = self.segment(m["seg"])
        n = int(m["f"])
        if seg is None or n >= len(seg):
            return []
        rep_sep, comp_sep, sub_sep = (
            self.header.separators[1],
            self.header.separators[2],
            self.header.separators[3],
        )
        out = []
        for rep in str(seg[n]).split(rep_sep):
            value = (rep.split(comp_sep) + [""] * int(m["c"] or 1))[int(m["c"] or 1) - 1]
            value = (value.split(sub_sep) + [""] * int(m["s"] or 1))[int(m["s"] or 1) - 1]
            out.append(self.unescape(value).strip())
        return out

    def unescape(self, value: str) -> str:
        return unescape(
            value, escape=self.header.escape, separators=self.header.separators, codec=self.header.codec
        )

    def value(self, name: str) -> tuple[str, str]:
        """The first non-empty value of the map entry ``name`` and the path it came from."""
        paths = self.options.fields[name]
        for path in paths:
            reps = self.repetitions(path)
            if reps and reps[0]:
                return reps[0], path
        return "", paths[0]

    def required(self, name: str, what: str, *, reason: str = "schema") -> str:
        value, path = self.value(name)
        if not value:
            raise Reject(
                self.header,
                "AE",
                REQUIRED_MISSING,
                f"{_loc(path)} ({what}) is empty",
                _loc(path),
                reason=reason,
            )
        return value

    def time(self, name: str, *, latest: bool = False) -> datetime | None:
        """The time of the map entry ``name`` (None when every path is empty); ``latest``: the latest of
        the first non-empty path's repetitions (TXA-8 lists every edit)."""
        for path in self.options.fields[name]:
            values = [v for v in self.repetitions(path) if v]
            if not values:
                continue
            try:
                times = [parse_dtm(v, self.options.tz) for v in values]
            except ValueError as exc:
                raise Reject(self.header, "AE", DATA_TYPE, f"{_loc(path)}: {exc}", _loc(path)) from exc
            return max(times) if latest else times[0]
        return None


def _loc(path: str) -> str:
    """``PV1-19.1`` -> ``PV1-19`` (ERR locations and messages name the field)."""
    return path.split(".")[0]


def map_message(parsed: Parsed, options: Hl7Options) -> list[tuple[str, Event]]:
    """The ``(topic kind, event)`` pairs of one decoded message, in the order they must be produced.

    An empty list means the message is understood but carries nothing to score (an ORU without text
    results). Raises :class:`Reject` (AR for an unsupported type or trigger, AE for missing or invalid
    content) with the header, so the ACK can be built.
    """
    header = parsed.header
    triggers = SUPPORTED.get(header.message_type)
    if triggers is None:
        raise Reject(
            header,
            "AR",
            UNSUPPORTED_TYPE,
            f"message type {header.message_type or '(empty)'} is not read here (ADT, MDM and ORU are)",
            "MSH-9",
        )
    if header.trigger not in triggers:
        raise Reject(
            header,
            "AR",
            UNSUPPORTED_EVENT,
            f"trigger {header.message_type}^{header.trigger or '(empty)'} "
            f"is not read here ({', '.join(triggers)} are)",
            "MSH-9",
        )
    reader = _Reader(parsed, options)
    source = (
        "hl7:" + reader.unescape(header.sending_app.split(header.separators[2])[0])
        if header.sending_app
        else "hl7"
    )
    hadm = reader.required("encounter_id", "encounter id", reason="missing_admission_id")
    key = hadm.encode("utf-8")
    try:
        subject = reader.required("patient_id", "patient id")
        if header.message_type == "ADT":
            return [(ADMISSIONS, _adt(reader, hadm, subject, source))]
        if header.message_type == "MDM":
            return [(NOTES, _mdm(reader, hadm, subject, source))]
        return [(NOTES, note) for note in _oru(reader, hadm, subject, source)]
    except Hl7Reject as exc:
        exc.key = key
        raise


def _event(reader: _Reader, cls: type[Event], values: dict[str, Any], paths: dict[str, str]) -> Any:
    """Validate an event, turning a schema error into an AE naming the event field and its HL7 field."""
    try:
        return cls(**values)
    except ValidationError as exc:
        err = exc.errors(include_input=False, include_url=False)[0]
        name = str(err["loc"][0]) if err["loc"] else "event"
        where = _loc(paths.get(name, ""))
        raise Reject(
            reader.header, "AE", DATA_TYPE, f"{where or name}: {name} {err['msg']}".strip(), where
        ) from exc


def _adt(reader: _Reader, hadm: str, subject: str, source: str) -> AdmissionEvent:
    kind = ADT_KINDS[reader.header.trigger]
    admit = reader.time("admit_time")
    discharge = reader.time("discharge_time")
    if kind == "admit" and admit is None:
        admit = reader.time("event_time")
        if admit is None:
            raise Reject(
                reader.header,
                "AE",
                REQUIRED_MISSING,
                "PV1-44 (admit time) and the event time are empty",
                "PV1-44",
            )
    if kind == "discharge" and discharge is None:
        discharge = reader.time("event_time")
        if discharge is None:
            raise Reject(
                reader.header,
                "AE",
                REQUIRED_MISSING,
                "PV1-45 (discharge time) and the event time are empty",
                "PV1-45",
            )
    fm = reader.options.fields
    return _event(
        reader,
        AdmissionEvent,
        {
            "kind": kind,
            "hadm_id": hadm,
            "subject_id": subject,
            "admit_time": admit,
            "discharge_time": discharge if kind != "update" else None,
            "admission_type": reader.value("admission_type")[0] or None,
            "death_time": reader.time("death_time"),
            "source": source,
        },
        {
            "hadm_id": fm["encounter_id"][0],
            "subject_id": fm["patient_id"][0],
            "admit_time": fm["admit_time"][0],
        },
    )


def _text(reader: _Reader, segments: Sequence[Any]) -> str:
    """Every text OBX-5 (TX, FT, ST; not OBX-11 ``D`` deleted or ``W`` wrong) in order, one per line;
    repetitions of one OBX-5 are lines too."""
    rep_sep = reader.header.separators[1]
    lines: list[str] = []
    for seg in segments:
        if str(seg[0]) != "OBX" or len(seg) < 6:
            continue
        kind = str(seg[2]).split(reader.header.separators[2])[0].strip().upper()
        status = str(seg[11]).strip().upper() if len(seg) > 11 else ""
        if kind not in TEXT_TYPES or status in ("D", "W"):
            continue
        lines.extend(reader.unescape(rep) for rep in str(seg[5]).split(rep_sep))
    return "\n".join(lines)


def _check_size(reader: _Reader, text: str) -> None:
    size = len(text.encode("utf-8"))
    if size > reader.options.max_text_bytes:
        raise Reject(
            reader.header,
            "AE",
            DATA_TYPE,
            f"the note text has {size} UTF-8 bytes, over the limit of "
            f"{reader.options.max_text_bytes} (the max_note_bytes setting)",
            "OBX-5",
            reason="text_too_large",
        )


def _category(reader: _Reader, name: str) -> str:
    code = reader.value(name)[0]
    return reader.options.categories.get(code, code)


def _mdm(reader: _Reader, hadm: str, subject: str, source: str) -> NoteEvent:
    trigger = reader.header.trigger
    note_id = reader.value("parent_note_id")[0] if trigger == "T10" else ""
    note_id = note_id or reader.required("note_id", "unique document number")
    retract = trigger == "T11"
    revision = 0
    if trigger in ("T08", "T10", "T11"):
        edited = reader.time("edit_time", latest=True)
        if edited is None:
            raise Reject(
                reader.header, "AE", REQUIRED_MISSING, "TXA-8 (edit time) and MSH-7 are empty", "TXA-8"
            )
        revision = revision_of(edited)
    text = "" if retract else _text(reader, reader.segments)
    if not retract and not text:
        raise Reject(
            reader.header,
            "AE",
            REQUIRED_MISSING,
            "the document has no text OBX-5 (value type TX, FT or ST); other types (ED, RP) are not read",
            "OBX-5",
        )
    _check_size(reader, text)
    chart = reader.time("chart_time")
    fm = reader.options.fields
    return _event(
        reader,
        NoteEvent,
        {
            "note_id": note_id,
            "revision": revision,
            "hadm_id": hadm,
            "subject_id": subject,
            "category": _category(reader, "category"),
            "description": reader.value("description")[0],
            "chart_time": chart,
            "chart_date": chart.date() if chart is not None else None,
            "is_error": retract,
            "text": text,
            "source": source,
            "admit_time": reader.time("admit_time"),
        },
        {"hadm_id": fm["encounter_id"][0], "subject_id": fm["patient_id"][0], "note_id": fm["note_id"][0]},
    )


def _oru(reader: _Reader, hadm: str, subject: str, source: str) -> list[NoteEvent]:
    groups: list[list[Any]] = []
    for seg in reader.segments:
        if str(seg[0]) == "OBR":
            groups.append([seg])
        elif groups:
            groups[-1].append(seg)
    if not groups:
        raise Reject(reader.header, "AE", SEGMENT_SEQUENCE, "the ORU^R01 has no OBR segment", "OBR")
    notes = []
    admit = reader.time("admit_time")
    fm = reader.options.fields
    for group in groups:
        reader.group = group
        status = reader.repetitions("OBR-25")
        retract = bool(status) and status[0].upper() == "X"
        text = _text(reader, group)
        if not text and not retract:
            obx = [s for s in group if str(s[0]) == "OBX"]
            if obx and all(len(s) > 11 and str(s[11]).strip().upper() == "W" for s in obx):
                retract = True  # every result posted as wrong: the report is withdrawn
            else:
                continue
        _check_size(reader, text)
        edited = reader.time("oru_edit_time", latest=True)
        chart = reader.time("oru_chart_time")
        notes.append(
            _event(
                reader,
                NoteEvent,
                {
                    "note_id": reader.required("oru_note_id", "filler order number"),
                    "revision": revision_of(edited) if edited is not None else 0,
                    "hadm_id": hadm,
                    "subject_id": subject,
                    "category": _category(reader, "oru_category"),
                    "description": reader.value("oru_description")[0],
                    "chart_time": chart,
                    "chart_date": chart.date() if chart is not None else None,
                    "is_error": retract,
                    "text": "" if retract else text,
                    "source": source,
                    "admit_time": admit,
                },
                {
                    "hadm_id": fm["encounter_id"][0],
                    "subject_id": fm["patient_id"][0],
                    "note_id": fm["oru_note_id"][0],
                },
            )
        )
    reader.group = []
    return notes
