"""Event schemas of the streaming service (JSON on Kafka, keyed by admission id).

Topics and what travels on them (names get ``settings.topic_prefix`` in front):

- ``notes``: :class:`NoteEvent`, the only events that carry note text.
- ``notes-dlq``: :class:`DeadLetter`, a sibling of ``notes``: the original message bytes (base64 in
  JSON, so they may contain note text) with the reason they could not be processed.
- ``admissions``: :class:`AdmissionEvent` (admit, discharge; from EHR feeds also update, cancel_admit,
  cancel_discharge).
- ``risk-updates``: :class:`RiskUpdate`, one per change of an admission's aggregate. No note text.
- ``risk-alerts``: :class:`RiskAlert`. No note text.

Every event carries ``schema_version``; fields a later version adds are ignored by this one, and a
missing required field fails validation naming the field. Messages are keyed by the admission id as
ASCII bytes (:func:`admission_key`) so one admission stays in one partition.

>>> raw = b'{"note_id": "174", "subject_id": 22532, "hadm_id": 167853, "text": "Stable.", "future": 1}'
>>> note = parse_note(raw, max_text_bytes=1000)
>>> note.note_id, note.hadm_id, note.revision, note.schema_version
('174', 167853, 0, 1)
>>> "Stable" in repr(note)   # note text never shows in reprs or logs
False
>>> try:
...     parse_note(b'{"note_id": "1", "subject_id": 1, "text": "x"}', max_text_bytes=1000)
... except EventError as exc:
...     print(exc.reason, "|", exc.detail)
missing_admission_id | field 'hadm_id' is missing or empty; every note needs its admission id
>>> admission_key(167853)
b'167853'
"""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, time, tzinfo
from typing import Any, Literal, TypeVar

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from notestream.stream.errors import EventError
from notestream.stream.ids import MAX_ID_INT, Id, NoteId, parse_id

SCHEMA_VERSION = 1


DeadLetterReason = Literal[
    "invalid_json",  # the bytes are UTF-8 but not JSON
    "non_utf8",  # the bytes (or a string inside) are not valid UTF-8
    "schema",  # JSON, but a field is missing, of the wrong type or out of range
    "missing_admission_id",  # no hadm_id: the note cannot be placed
    "text_too_large",  # the text is over settings.max_note_bytes (UTF-8 bytes)
    "admission_unknown",  # no admit time in the note nor in the store (after waiting)
    "processing_error",  # valid, but cleaning / chunking / inference failed for this note
    "too_large",  # the message is over the size parsing decodes (before decoding)
    "too_deep",  # JSON nested deeper than MAX_JSON_DEPTH
    "number_too_long",  # a JSON number literal longer than MAX_NUMBER_CHARS
    "key_mismatch",  # the Kafka key names another admission than the body's hadm_id
    "conflict",  # the store holds this note id and revision with other content (sha256 of the text)
]
DEAD_LETTER_REASONS: tuple[str, ...] = DeadLetterReason.__args__  # type: ignore[attr-defined]


def utcnow() -> datetime:
    """The current time, timezone-aware UTC."""
    return datetime.now(UTC)


def admission_key(hadm_id: int | str) -> bytes:
    """The Kafka message key of an admission: its canonical id (:func:`notestream.stream.ids.parse_id`) as UTF-8.

    One admission has one key whatever form its id came in, so it always lands on one partition:

    >>> admission_key(100001), admission_key("100001"), admission_key("V2026-7"), hadm_from_key(b"100001")
    (b'100001', b'100001', b'V2026-7', 100001)
    """
    return str(parse_id(hadm_id)).encode("utf-8")


def hadm_from_key(key: bytes) -> int | str:
    """The admission id of a message key (see :func:`admission_key`); ValueError when it is none."""
    return parse_id(key.decode("utf-8"))


class Event(BaseModel):
    """Base of every event: versioned, frozen, unknown fields ignored, JSON bytes in and out."""

    model_config = ConfigDict(extra="ignore", frozen=True, json_schema_serialization_defaults_required=True)

    schema_version: int = Field(default=SCHEMA_VERSION, ge=1, description="Schema version of the event.")
    _zone: tzinfo = PrivateAttr(default=UTC)

    @field_validator("*", mode="after")
    @classmethod
    def _aware(cls, value: Any, info: ValidationInfo) -> Any:
        """Naive times (MIMIC's) are read in the source time zone: every time on the wire is aware."""
        if isinstance(value, datetime) and value.tzinfo is None:
            return value.replace(tzinfo=_source_zone(info))
        return value

    @model_validator(mode="after")
    def _remember_zone(self, info: ValidationInfo) -> Event:
        self._zone = _source_zone(info)
        return self

    def to_bytes(self) -> bytes:
        """This event as UTF-8 JSON bytes."""
        return self.model_dump_json().encode("utf-8")

    @classmethod
    def from_bytes(cls: type[E], raw: bytes) -> E:
        """Parse JSON bytes; failures raise :class:`EventError` with a dead-letter reason."""
        return parse_event(raw, cls)


E = TypeVar("E", bound=Event)


class NoteEvent(Event):
    """A clinical note (or a new revision, or a retraction) of one admission."""

    note_id: NoteId = Field(description="The note's id: MIMIC-III ROW_ID, MIMIC-IV note_id, a document id.")
    revision: int = Field(
        default=0,
        ge=0,
        le=MAX_ID_INT,
        strict=True,  # a JSON integer: never a bool, a float or a string coerced
        description="A higher revision replaces the note's earlier one.",
    )
    subject_id: Id
    hadm_id: Id = Field(description="Admission id; a note without one is dead-lettered.")
    category: str = ""
    description: str = ""
    chart_time: datetime | None = None
    chart_date: date | None = None
    store_time: datetime | None = None
    is_error: bool = Field(default=False, strict=True, description="MIMIC ISERROR: the note is retracted.")
    text: str = Field(repr=False, description="Note text (PHI): only ever on the notes topic.")
    source: str = Field(default="", description="Feed that produced the note, e.g. mimic-iii.")
    produced_at: datetime = Field(default_factory=utcnow, description="When the feed produced it (UTC).")
    admit_time: datetime | None = Field(
        default=None, description="Admission time, when the feed knows it; else the store's admission record."
    )

    def event_time(self) -> datetime | None:
        """When the note happened: CHART_TIME, else CHART_DATE (midnight), else STORE_TIME.

        A date alone is midnight in the time zone the note was read in (``source_timezone``).

        >>> NoteEvent(note_id="1", subject_id=1, hadm_id=2, text="", chart_date=date(2150, 3, 1)).event_time()
        datetime.datetime(2150, 3, 1, 0, 0, tzinfo=datetime.timezone.utc)
        """
        if self.chart_time is not None:
            return self.chart_time
        if self.chart_date is not None:
            return datetime.combine(self.chart_date, time(), tzinfo=self._zone)
        return self.store_time


AdmissionKind = Literal["admit", "discharge", "update", "cancel_admit", "cancel_discharge"]


class AdmissionEvent(Event):
    """An admission starts (``admit``, with admit_time) or ends (``discharge``, with discharge_time).

    EHR feeds add three kinds (HL7 ADT A08, A11, A13; see stream/ingest/hl7_map.py): ``update``
    (corrected details: an admit_time it carries replaces the stored one; it never discharges),
    ``cancel_admit`` and ``cancel_discharge`` (the EHR undid an admit or a discharge). The worker
    records an update's admit time and counts cancels without changing the store: an admission's
    scores are never taken back by a cancel (docs/ehr.md).
    """

    kind: AdmissionKind
    subject_id: Id
    hadm_id: Id
    admit_time: datetime | None = None
    discharge_time: datetime | None = None
    admission_type: str | None = None
    death_time: datetime | None = None
    source: str = ""
    produced_at: datetime = Field(default_factory=utcnow)

    @model_validator(mode="after")
    def _times_present(self) -> AdmissionEvent:
        if self.kind == "admit" and self.admit_time is None:
            raise ValueError("field 'admit_time' is required when kind is 'admit'")
        if self.kind == "discharge" and self.discharge_time is None:
            raise ValueError("field 'discharge_time' is required when kind is 'discharge'")
        return self


class RiskUpdate(Event):
    """A new aggregate of one admission; ``seq`` rises by one per change. Never note text."""

    hadm_id: Id
    subject_id: Id
    task: str
    model: str = Field(description="Model name or folder the score comes from.")
    model_fingerprint: str | None = Field(
        default=None,
        description="The model's fingerprint (name@digest, notestream.models.fingerprint): two folders of one name "
        "with other weights are told apart. None from workers before it was added.",
    )
    score: float | None = Field(
        ge=0,
        le=1,
        description="null while the admission holds no chunk (only short or retracted notes): no evidence "
        "yet, never a risk of 0. p_max and p_mean are null then too.",
    )
    risk: float | None = Field(
        default=None,
        ge=0,
        le=1,
        description="Calibrated probability of the outcome (notestream.models.calibration) at the prevalence the "
        "model was calibrated on; None without a calibrator or a chunk.",
    )
    p_max: float | None
    p_mean: float | None
    n_chunks: int = Field(ge=0)
    n_notes: int = Field(ge=0)
    seq: int = Field(ge=0)
    c: float = Field(gt=0, description="Aggregation constant of the score.")
    trigger_note_id: str | None = None
    top_note_id: str | None = None
    top_chunk: int | None = Field(
        default=None, ge=0, description="Index of the top chunk inside top_note_id."
    )
    change: Literal["new", "revision", "retracted", "discharge"] | None = Field(
        default=None,
        description="What changed the aggregate; null for a repeat of the current state (same seq).",
    )
    note_time: datetime | None = None
    produced_at: datetime | None = Field(default=None, description="When the triggering event was produced.")
    emitted_at: datetime = Field(default_factory=utcnow)
    final: bool = Field(default=False, description="True once the admission was discharged.")


AlertReason = Literal["score", "no_chunks", "discharged", "retired"]


class RiskAlert(Event):
    """An alert is raised (score >= threshold) or cleared (score < threshold - hysteresis, the admission
    holds no chunk any more, or it was discharged)."""

    hadm_id: Id
    subject_id: Id | None = None
    task: str
    model: str | None = None
    model_fingerprint: str | None = Field(
        default=None, description="Fingerprint of the model whose score raised or cleared the alert."
    )
    reason: AlertReason | None = Field(
        default=None,
        description="Why: score (crossed the threshold or the clear level), no_chunks, discharged, "
        "retired (the model was taken out of service: `notestream alerts --retire`).",
    )
    score: float | None = Field(
        description="The admission score that raised or cleared the alert; null when the admission holds "
        "no chunk any more (reason no_chunks), as in its risk update."
    )
    threshold: float
    hysteresis: float = 0.0
    state: Literal["raised", "cleared"]
    seq: int = Field(ge=0)
    at: datetime = Field(default_factory=utcnow)


class DeadLetter(Event):
    """A message that could not be processed, with why. Lives on ``notes-dlq`` (a notes sibling).

    ``original`` keeps the message's bytes exactly (base64 in JSON); they may hold note text, so
    dead letters stay beside the notes topic and are never logged. A message too large to travel whole
    inside a dead letter (see ``settings.dead_letter_max_bytes``) has an empty ``original`` and its
    ``original_sha256`` and ``original_size`` instead: with ``topic``, ``partition`` and ``offset`` they
    find it on its topic while retention keeps it.

    >>> dl = DeadLetter(reason="invalid_json", detail="x", topic="notes", original=b"{oops")
    >>> DeadLetter.from_bytes(dl.to_bytes()).original
    b'{oops'
    """

    model_config = ConfigDict(ser_json_bytes="base64", val_json_bytes="base64")

    reason: DeadLetterReason
    detail: str
    topic: str
    partition: int | None = None
    offset: int | None = None
    key: bytes | None = Field(
        default=None, repr=False, description="The message's Kafka key, URL-safe base64 (RFC 4648 section 5)."
    )
    original: bytes = Field(
        default=b"",
        repr=False,
        description="The message's bytes exactly, URL-safe base64 (RFC 4648 section 5); may hold note text. "
        "Empty when the message was too large to carry whole, or for a note that waited in vain for its "
        "admission: then topic, partition and offset say where it is.",
        json_schema_extra={"contentEncoding": "base64url"},
    )
    original_sha256: str | None = Field(
        default=None, description="Hex SHA-256 of the original, when it was too large to carry whole."
    )
    original_size: int | None = Field(
        default=None, ge=0, description="Bytes of the original, when it was too large to carry whole."
    )
    at: datetime = Field(default_factory=utcnow)

    @classmethod
    def from_error(
        cls,
        raw: bytes,
        error: EventError,
        *,
        topic: str,
        partition: int | None = None,
        offset: int | None = None,
        key: bytes | None = None,
    ) -> DeadLetter:
        """The dead letter of a message that failed with ``error``."""
        return cls(
            reason=error.reason,  # type: ignore[arg-type]
            detail=error.detail,
            topic=topic,
            partition=partition,
            offset=offset,
            key=key,
            original=raw,
        )


def _schema_detail(exc: ValidationError) -> str:
    """Name the failing fields without echoing their values (they may be note text)."""
    parts = []
    for err in exc.errors(include_input=False, include_url=False):
        loc = ".".join(str(p) for p in err["loc"]) or "<event>"
        parts.append(f"field '{loc}': {err['msg']}")
    return "; ".join(parts)


MAX_EVENT_BYTES = 1 << 20
"""The largest message of any topic but ``notes`` that parsing decodes (1 MiB); see :func:`note_limit`."""
MAX_JSON_DEPTH = 64
"""The deepest nesting of JSON arrays and objects parsing accepts (events nest two or three levels)."""
MAX_NUMBER_CHARS = 64
"""The longest JSON number literal parsing accepts (ids stop at 19 digits; probabilities need 17)."""


def note_limit(max_text_bytes: int) -> int:
    """The largest notes message parsing decodes: room for a text of ``max_text_bytes`` written
    entirely as ``\\uXXXX`` escapes (6 bytes per byte) plus 64 KiB of other fields.

    >>> note_limit(2_000_000)
    12065536
    """
    return 6 * max_text_bytes + 65_536


def _number(kind: str, convert: Any) -> Any:
    def parse(literal: str) -> Any:
        if len(literal) > MAX_NUMBER_CHARS:
            raise EventError(
                "number_too_long",
                f"a JSON {kind} has {len(literal)} characters, over the limit of {MAX_NUMBER_CHARS}",
            )
        return convert(literal)

    return parse


def _constant(name: str) -> Any:
    raise EventError("invalid_json", f"the message is not JSON ({name} is not a JSON value)")


_PARSE_INT, _PARSE_FLOAT = _number("integer", int), _number("number", float)


def _depth_ok(obj: Any) -> bool:
    """Whether ``obj`` nests at most MAX_JSON_DEPTH arrays and objects (iterative: no recursion).

    >>> deep: list[object] = []
    >>> for _ in range(MAX_JSON_DEPTH):
    ...     deep = [deep]
    >>> _depth_ok({"a": [[1]]}), _depth_ok(deep)
    (True, False)
    """
    stack: list[tuple[Any, int]] = [(obj, 0)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict | list):
            if depth >= MAX_JSON_DEPTH:
                return False
            values = item.values() if isinstance(item, dict) else item
            stack.extend((v, depth + 1) for v in values if isinstance(v, dict | list))
    return True


def _decode(raw: bytes, *, max_bytes: int = MAX_EVENT_BYTES) -> dict[str, Any]:
    """JSON bytes -> an object, within the bounds: size (checked first, before any decoding), UTF-8,
    nesting depth and number length. Every failure is an :class:`EventError` with its reason.

    >>> for raw in (b"[" * 100_000 + b"]" * 100_000, b'{"hadm_id": ' + b"9" * 5000 + b"}", b"{" * 10):
    ...     try:
    ...         _decode(raw, max_bytes=100_000)
    ...     except EventError as exc:
    ...         print(exc.reason)
    too_large
    number_too_long
    invalid_json
    >>> try:
    ...     _decode(b"[" * 50_000 + b"]" * 50_000)
    ... except EventError as exc:
    ...     print(exc.reason)
    too_deep
    """
    if len(raw) > max_bytes:
        raise EventError(
            "too_large", f"the message has {len(raw)} bytes, over the limit of {max_bytes} for its topic"
        )
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise EventError("non_utf8", f"the message is not UTF-8 (byte {exc.start}: {exc.reason})") from exc
    try:
        obj = json.loads(text, parse_int=_PARSE_INT, parse_float=_PARSE_FLOAT, parse_constant=_constant)
    except EventError:
        raise
    except RecursionError as exc:  # the C decoder's own guard: nothing was left half-done
        raise EventError("too_deep", f"the message nests JSON deeper than {MAX_JSON_DEPTH} levels") from exc
    except json.JSONDecodeError as exc:
        raise EventError(
            "invalid_json", f"the message is not JSON ({exc.msg} at line {exc.lineno} column {exc.colno})"
        ) from exc
    except ValueError as exc:  # any other value the decoder refuses
        raise EventError("invalid_json", "the message is not JSON (a value cannot be decoded)") from exc
    if not _depth_ok(obj):
        raise EventError("too_deep", f"the message nests JSON deeper than {MAX_JSON_DEPTH} levels")
    if not isinstance(obj, dict):
        raise EventError("schema", f"the message is a JSON {type(obj).__name__}, not an object")
    return obj


def check_key(key: bytes | None, hadm_id: int | str) -> None:
    """Raise ``key_mismatch`` when a message's Kafka key names another admission than its body.

    A keyless message is accepted (its body decides); a key is compared in canonical form
    (:func:`admission_key`), so ``b"167853"`` matches ``"167853"`` and ``167853``.

    >>> check_key(b"167853", 167853), check_key(None, "V-1")
    (None, None)
    >>> check_key(b"167854", 167853)
    Traceback (most recent call last):
    ...
    notestream.stream.errors.EventError: Invalid event (key_mismatch): the message key is not the admission id of its body (field 'hadm_id')
    """
    if key is None:
        return
    try:
        same = hadm_from_key(key) == parse_id(hadm_id)
    except (UnicodeDecodeError, ValueError):
        same = False
    if not same:
        raise EventError(
            "key_mismatch", "the message key is not the admission id of its body (field 'hadm_id')"
        )


def _source_zone(info: ValidationInfo) -> tzinfo:
    context = info.context if isinstance(info.context, dict) else {}
    zone = context.get("source_timezone")
    return zone if isinstance(zone, tzinfo) else UTC


def _validate(obj: dict[str, Any], cls: type[E], source_timezone: tzinfo | None = None) -> E:
    try:
        return cls.model_validate(obj, context={"source_timezone": source_timezone or UTC})
    except ValidationError as exc:
        raise EventError("schema", _schema_detail(exc)) from exc


def parse_event(
    raw: bytes, cls: type[E], *, max_bytes: int = MAX_EVENT_BYTES, source_timezone: tzinfo | None = None
) -> E:
    """Parse one message of any event type; failures raise :class:`EventError` with its reason.

    >>> parse_event(b'{"kind": "admit", "subject_id": 1, "hadm_id": 2}', AdmissionEvent)
    Traceback (most recent call last):
    ...
    notestream.stream.errors.EventError: Invalid event (schema): field '<event>': Value error, field 'admit_time' is required when kind is 'admit'
    """
    return _validate(_decode(raw, max_bytes=max_bytes), cls, source_timezone)


def parse_note(raw: bytes, *, max_text_bytes: int, source_timezone: tzinfo | None = None) -> NoteEvent:
    """Parse a message of the notes topic, classifying every failure into a dead-letter reason.

    Reasons, checked in this order: ``too_large`` (over :func:`note_limit`, before decoding),
    ``non_utf8``, ``invalid_json``, ``number_too_long``, ``too_deep``, ``schema`` (not an object),
    ``missing_admission_id``, ``text_too_large``, ``schema`` (the fields). ``detail`` names the field.

    >>> parse_note(b'{"note_id": "1", "subject_id": 1, "hadm_id": 2, "text": "abcdef"}', max_text_bytes=3)
    Traceback (most recent call last):
    ...
    notestream.stream.errors.EventError: Invalid event (text_too_large): field 'text' has 6 UTF-8 bytes, over the limit of 3 (settings.max_note_bytes)
    """
    obj = _decode(raw, max_bytes=note_limit(max_text_bytes))
    if obj.get("hadm_id") in (None, ""):
        raise EventError(
            "missing_admission_id", "field 'hadm_id' is missing or empty; every note needs its admission id"
        )
    text = obj.get("text")
    if isinstance(text, str):
        try:
            size = len(text.encode("utf-8"))
        except UnicodeEncodeError as exc:
            raise EventError("non_utf8", "field 'text' holds an unpaired surrogate escape") from exc
        if size > max_text_bytes:
            raise EventError(
                "text_too_large",
                f"field 'text' has {size} UTF-8 bytes, over the limit of {max_text_bytes} "
                "(settings.max_note_bytes)",
            )
    note = _validate(obj, NoteEvent, source_timezone)
    try:
        note.note_id.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise EventError("non_utf8", "field 'note_id' holds an unpaired surrogate escape") from exc
    return note
