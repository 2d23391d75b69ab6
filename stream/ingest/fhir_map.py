"""FHIR R4 resources as notestream events: Encounter -> admission events, DocumentReference -> notes.

Pure: a JSON object in, events out, or a :class:`~notestream.stream.ingest.errors.FhirReject` naming the element at
fault. Resources are validated with fhir.resources' R4B models (R4B is R4 with fixes; the Encounter and
DocumentReference elements read here are the same in R4).

Encounter (admission id = ``Encounter.id``, patient = ``subject``):

- ``in-progress``, ``arrived``, ``triaged``, ``onleave``: ``admit`` at ``period.start``;
- ``finished``: ``admit`` at ``period.start`` (when given) and ``discharge`` at ``period.end``;
- ``cancelled``, ``entered-in-error``: ``cancel_admit``; ``planned`` and ``unknown``: nothing yet.

DocumentReference (note id = ``id``; admission = ``context.encounter``; patient = ``subject``):

- text from ``content.attachment.data`` (base64) of type ``text/plain`` (preferred) or ``text/html``
  (tags stripped, block elements and ``<br>`` give line breaks), in the ``charset`` the type names;
- ``chart_time`` = ``date``, else ``context.period.start``; category = ``type`` code (renamed by the
  ``note_category_map`` setting), description = its display or text;
- ``relatesTo`` ``replaces`` another DocumentReference: a higher revision of *that* note (revision =
  ``meta.lastUpdated``, else ``date``, in ms since 1970); ``status: entered-in-error``: a retraction.

Dates without a time are midnight in ``source_timezone``; FHIR requires an offset on every time.

>>> import base64
>>> doc = {"resourceType": "DocumentReference", "id": "doc-1", "status": "current",
...        "subject": {"reference": "Patient/22532"}, "date": "2026-03-01T10:00:00-05:00",
...        "context": {"encounter": [{"reference": "Encounter/167853"}]},
...        "content": [{"attachment": {"contentType": "text/plain",
...                                    "data": base64.b64encode(b"Stable.").decode()}}]}
>>> [(topic, e.note_id, e.hadm_id, e.text == "Stable.") for topic, e in map_resource(doc, FhirOptions())]
[('notes', 'doc-1', 167853, True)]
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, tzinfo
from html.parser import HTMLParser
from typing import Any

from pydantic import ValidationError

from notestream.core.topics import ADMISSIONS, NOTES
from notestream.stream.events import AdmissionEvent, Event, NoteEvent
from notestream.stream.ingest.errors import FhirReject
from notestream.stream.ingest.hl7_values import revision_of

SUPPORTED = ("Encounter", "DocumentReference")
OPEN = ("in-progress", "arrived", "triaged", "onleave")
CANCELLED = ("cancelled", "entered-in-error")


@dataclass(frozen=True)
class FhirOptions:
    """The zone of dates without a time, the note size limit and the category renames."""

    tz: tzinfo = UTC
    max_text_bytes: int = 2_000_000
    categories: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def from_settings(cls, settings: Any) -> FhirOptions:
        from zoneinfo import ZoneInfo

        return cls(
            tz=ZoneInfo(settings.source_timezone),
            max_text_bytes=settings.max_note_bytes,
            categories=dict(settings.note_category_map),
        )


def reference_id(reference: str | None, kind: str, refs: Mapping[str, str] | None = None) -> str:
    """The logical id a reference points at: ``Encounter/123``, an absolute URL ending in
    ``Encounter/123[/_history/n]``, or a ``urn:uuid:`` of a Bundle entry (``refs``: fullUrl -> id).

    >>> reference_id("https://ehr.example.org/fhir/Encounter/V-9/_history/2", "Encounter")
    'V-9'
    >>> reference_id("urn:uuid:7f1c", "Encounter", {"urn:uuid:7f1c": "167853"})
    '167853'
    """
    if not reference:
        return ""
    if refs and reference in refs:
        return refs[reference]
    parts = reference.split("/")
    if "_history" in parts:
        parts = parts[: parts.index("_history")]
    if len(parts) >= 2 and parts[-2] == kind:
        return parts[-1]
    return "" if reference.startswith("urn:") or "/" in reference else reference


def _when(value: date | datetime | None, tz: tzinfo) -> datetime | None:
    if value is None:
        return None
    if isinstance(value, datetime):
        return value if value.tzinfo is not None else value.replace(tzinfo=tz)
    return datetime(value.year, value.month, value.day, tzinfo=tz)


class _HtmlText(HTMLParser):
    BLOCKS = frozenset({"p", "div", "br", "li", "tr", "h1", "h2", "h3", "h4", "h5", "h6", "pre", "table"})

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self.skip = 0

    def handle_starttag(self, tag: str, attrs: Any) -> None:
        if tag in ("script", "style"):
            self.skip += 1
        elif tag in self.BLOCKS:
            self.parts.append("\n")

    def handle_endtag(self, tag: str) -> None:
        if tag in ("script", "style"):
            self.skip = max(0, self.skip - 1)
        elif tag in self.BLOCKS and tag != "br":
            self.parts.append("\n")

    def handle_data(self, data: str) -> None:
        if not self.skip:
            self.parts.append(data)


def html_text(markup: str) -> str:
    """The text of an HTML document: tags gone, block elements and ``<br>`` as line breaks.

    >>> html_text("<html><body><p>Stable &amp; afebrile.</p><p>Plan:<br>home</p><script>x</script></body></html>")
    'Stable & afebrile.\\nPlan:\\nhome'
    """
    parser = _HtmlText()
    parser.feed(markup)
    parser.close()
    lines = [" ".join(line.split()) for line in "".join(parser.parts).splitlines()]
    return "\n".join(line for line in lines if line)


def _reject(status: int, issue: str, detail: str, expression: str, **kw: Any) -> FhirReject:
    return FhirReject(status, issue, detail, expression=expression, **kw)


def parse_resource(obj: Any) -> Any:
    """A validated fhir.resources R4B model of an Encounter or a DocumentReference."""
    from fhir.resources.R4B import get_fhir_model_class

    if not isinstance(obj, Mapping) or not isinstance(obj.get("resourceType"), str):
        raise _reject(400, "structure", "the body is not a FHIR resource (no resourceType)", "resourceType")
    kind = obj["resourceType"]
    if kind not in SUPPORTED:
        raise _reject(
            422,
            "not-supported",
            f"{kind} resources are not read here (Encounter and DocumentReference are; Bundles hold them)",
            "resourceType",
        )
    try:
        return get_fhir_model_class(kind).model_validate(dict(obj))
    except ValidationError as exc:
        errors = exc.errors(include_input=False, include_url=False)
        where = ".".join(str(p) for p in errors[0]["loc"]) if errors else ""
        text = "; ".join(
            f"{'.'.join(str(p) for p in e['loc'])}: {e['msg'].splitlines()[0]}" for e in errors[:5]
        )
        raise _reject(400, "invalid", f"{kind} is not valid FHIR R4: {text}", f"{kind}.{where}") from exc


def map_resource(
    obj: Any, options: FhirOptions, *, full_url: str | None = None, refs: Mapping[str, str] | None = None
) -> list[tuple[str, Event]]:
    """The ``(topic kind, event)`` pairs of one resource (JSON object), in the order to produce them.

    ``full_url`` is the resource's Bundle ``fullUrl`` (its id when the resource has none) and ``refs``
    maps the Bundle's fullUrls to ids. Raises :class:`FhirReject` naming the element at fault.
    """
    resource = parse_resource(obj)
    own_id = resource.id or reference_id(full_url, resource.get_resource_type(), refs)
    if resource.get_resource_type() == "Encounter":
        return _encounter(resource, own_id, options, refs)
    return _document(resource, own_id, options, refs)


def _validate(cls: type[Event], values: dict[str, Any], kind: str, key: bytes) -> Any:
    try:
        return cls(**values)
    except ValidationError as exc:
        err = exc.errors(include_input=False, include_url=False)[0]
        name = str(err["loc"][0]) if err["loc"] else "event"
        raise _reject(422, "value", f"{kind}: {name} {err['msg']}", kind, key=key) from exc


def _encounter(
    enc: Any, hadm: str, options: FhirOptions, refs: Mapping[str, str] | None
) -> list[tuple[str, Event]]:
    if not hadm:
        raise _reject(422, "required", "Encounter.id is empty", "Encounter.id", reason="missing_admission_id")
    key = hadm.encode("utf-8")
    subject = reference_id(enc.subject.reference if enc.subject else None, "Patient", refs)
    if not subject:
        raise _reject(422, "required", "Encounter.subject names no Patient", "Encounter.subject", key=key)
    period = enc.period
    start = _when(period.start if period else None, options.tz)
    end = _when(period.end if period else None, options.tz)
    status = enc.status or "unknown"
    common = {
        "hadm_id": hadm,
        "subject_id": subject,
        "admission_type": (enc.class_fhir.code if enc.class_fhir else None) or None,
        "source": "fhir",
    }
    kinds: list[tuple[str, dict[str, Any]]] = []
    if status in OPEN or (status == "finished" and start is not None):
        if start is None:
            raise _reject(
                422,
                "required",
                f"an Encounter {status} needs period.start (the admit time)",
                "Encounter.period.start",
                key=key,
            )
        kinds.append(("admit", {"admit_time": start}))
    if status == "finished":
        if end is None:
            raise _reject(
                422,
                "required",
                "a finished Encounter needs period.end (the discharge time)",
                "Encounter.period.end",
                key=key,
            )
        kinds.append(("discharge", {"admit_time": start, "discharge_time": end}))
    if status in CANCELLED:
        kinds.append(("cancel_admit", {"admit_time": start}))
    return [
        (ADMISSIONS, _validate(AdmissionEvent, {**common, "kind": k, **v}, "Encounter", key))
        for k, v in kinds
    ]


def _text(doc: Any, key: bytes) -> str:
    """The note text of the best text attachment: text/plain first, else text/html."""
    found: dict[str, tuple[str, bytes]] = {}
    for i, content in enumerate(doc.content or []):
        att = content.attachment
        mime, _, params = (att.contentType or "").partition(";")
        mime = mime.strip().lower()
        if mime in ("text/plain", "text/html") and mime not in found:
            if att.data is None:
                raise _reject(
                    422,
                    "not-supported",
                    f"content[{i}].attachment has no inline data (url attachments are not fetched)",
                    f"DocumentReference.content[{i}].attachment.data",
                    key=key,
                )
            charset = "utf-8"
            for param in params.split(";"):
                name, _, value = param.partition("=")
                if name.strip().lower() == "charset" and value.strip():
                    charset = value.strip().strip('"')
            data = att.data if isinstance(att.data, bytes) else _b64(att.data, i, key)
            found[mime] = (charset, data)
    for mime in ("text/plain", "text/html"):
        if mime in found:
            charset, data = found[mime]
            try:
                text = data.decode(charset)
            except (LookupError, UnicodeDecodeError) as exc:
                raise _reject(
                    422,
                    "invalid",
                    f"the {mime} attachment is not valid {charset}",
                    "DocumentReference.content.attachment.data",
                    key=key,
                    reason="non_utf8" if charset.lower() in ("utf-8", "utf8") else "schema",
                ) from exc
            return html_text(text) if mime == "text/html" else text.replace("\r\n", "\n")
    raise _reject(
        422,
        "required",
        "no content.attachment of type text/plain or text/html",
        "DocumentReference.content.attachment.contentType",
        key=key,
    )


def _b64(value: str, i: int, key: bytes) -> bytes:
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise _reject(
            400,
            "invalid",
            f"content[{i}].attachment.data is not base64",
            f"DocumentReference.content[{i}].attachment.data",
            key=key,
        ) from exc


def _document(
    doc: Any, own_id: str, options: FhirOptions, refs: Mapping[str, str] | None
) -> list[tuple[str, Event]]:
    encounters = doc.context.encounter if doc.context and doc.context.encounter else []
    hadm = ""
    for ref in encounters:
        hadm = (
            reference_id(ref.reference, "Encounter", refs)
            or (ref.identifier.value if ref.identifier else "")
            or ""
        )
        if hadm:
            break
    if not hadm:
        raise _reject(
            422,
            "required",
            "DocumentReference.context.encounter names no Encounter",
            "DocumentReference.context.encounter",
            reason="missing_admission_id",
        )
    key = hadm.encode("utf-8")
    subject = reference_id(doc.subject.reference if doc.subject else None, "Patient", refs)
    if not subject:
        raise _reject(
            422,
            "required",
            "DocumentReference.subject names no Patient",
            "DocumentReference.subject",
            key=key,
        )
    replaced = ""
    for rel in doc.relatesTo or []:
        if rel.code == "replaces" and rel.target is not None:
            replaced = reference_id(rel.target.reference, "DocumentReference", refs) or replaced
    note_id = replaced or own_id
    if not note_id:
        raise _reject(422, "required", "DocumentReference.id is empty", "DocumentReference.id", key=key)
    retract = doc.status == "entered-in-error"
    updated = _when(doc.meta.lastUpdated if doc.meta else None, options.tz)
    chart = _when(doc.date, options.tz) or _when(
        doc.context.period.start if doc.context and doc.context.period else None, options.tz
    )
    revision = 0
    if replaced or retract:
        stamp = updated or _when(doc.date, options.tz)
        if stamp is None:
            raise _reject(
                422,
                "required",
                "a replacing or entered-in-error DocumentReference needs "
                "meta.lastUpdated or date (its revision)",
                "DocumentReference.meta.lastUpdated",
                key=key,
            )
        revision = revision_of(stamp)
    text = "" if retract else _text(doc, key)
    size = len(text.encode("utf-8"))
    if size > options.max_text_bytes:
        raise _reject(
            413,
            "too-costly",
            f"the note text has {size} UTF-8 bytes, over the limit of "
            f"{options.max_text_bytes} (the max_note_bytes setting)",
            "DocumentReference.content",
            key=key,
            reason="text_too_large",
        )
    coding = doc.type.coding[0] if doc.type and doc.type.coding else None
    code = (coding.code if coding else None) or ""
    values = {
        "note_id": note_id,
        "revision": revision,
        "hadm_id": hadm,
        "subject_id": subject,
        "category": options.categories.get(code, code),
        "description": (doc.type.text if doc.type else None) or (coding.display if coding else None) or "",
        "chart_time": chart,
        "chart_date": chart.date() if chart else None,
        "is_error": retract,
        "text": text,
        "source": "fhir",
    }
    return [(NOTES, _validate(NoteEvent, values, "DocumentReference", key))]


BUNDLE_TYPES = ("transaction", "batch", "collection", "searchset", "history", "subscription-notification")
"""Bundle types read: sets of resources (transaction, batch, collection, searchset), and subscription
notifications (R4B/R5 ``subscription-notification``; the R4 backport's ``history``)."""
STATUS_TYPES = ("SubscriptionStatus", "Parameters")
"""The status entry of a subscription notification (R4B/R5, and the R4 backport's Parameters)."""


@dataclass
class Mapped:
    """What one body (a resource or a Bundle) gives: events, and resources of other types skipped."""

    events: list[tuple[str, Event]] = field(default_factory=list)
    skipped: int = 0
    bundle_type: str | None = None
    """The posted Bundle's type (None for a single resource)."""
    entries: list[int] = field(default_factory=list)
    """Events per Bundle entry, in entry order (-1: a resource of another type, skipped)."""


def map_body(obj: Any, options: FhirOptions) -> Mapped:
    """The events of one posted body: a single Encounter or DocumentReference, or a Bundle of them.

    A Bundle is taken whole or not at all (also a batch): the first entry at fault rejects it, named by
    its index. Resources of other types in a Bundle (Patient, Practitioner...) are skipped and counted.
    Subscription notifications need full-resource content: an entry without its resource is refused.

    >>> map_body({"resourceType": "Bundle", "type": "subscription-notification", "entry": [
    ...     {"resource": {"resourceType": "SubscriptionStatus", "type": "heartbeat"}}]}, FhirOptions())
    Mapped(events=[], skipped=0, bundle_type='subscription-notification', entries=[0])
    """
    if not isinstance(obj, Mapping) or obj.get("resourceType") != "Bundle":
        return Mapped(map_resource(obj, options))
    kind = obj.get("type")
    if kind not in BUNDLE_TYPES:
        raise _reject(
            422,
            "not-supported",
            f"Bundle type {kind!r} is not read here ({', '.join(BUNDLE_TYPES)} are)",
            "Bundle.type",
        )
    entries = obj.get("entry") or []
    if not isinstance(entries, list):
        raise _reject(400, "structure", "Bundle.entry is not a list", "Bundle.entry")
    refs: dict[str, str] = {}
    for entry in entries:
        if isinstance(entry, Mapping) and isinstance(entry.get("resource"), Mapping):
            res, url = entry["resource"], entry.get("fullUrl")
            if isinstance(url, str) and url:
                rid = res.get("id") if isinstance(res.get("id"), str) else None
                refs[url] = rid or url.rsplit(":", 1)[-1].rsplit("/", 1)[-1]
    out = Mapped(bundle_type=kind)
    for i, entry in enumerate(entries):
        resource = entry.get("resource") if isinstance(entry, Mapping) else None
        if not isinstance(resource, Mapping):
            if kind in ("subscription-notification", "history"):
                raise _reject(
                    422,
                    "not-supported",
                    "a notification entry without its resource (id-only "
                    "content): set the subscription's content to full-resource",
                    f"Bundle.entry[{i}].resource",
                )
            raise _reject(400, "structure", "a Bundle entry holds no resource", f"Bundle.entry[{i}].resource")
        rtype = resource.get("resourceType")
        if rtype in STATUS_TYPES and kind in ("subscription-notification", "history"):
            out.entries.append(0)
            continue
        if rtype not in SUPPORTED:
            out.skipped += 1
            out.entries.append(-1)
            continue
        try:
            events = map_resource(resource, options, full_url=entry.get("fullUrl"), refs=refs)
            out.events.extend(events)
            out.entries.append(len(events))
        except FhirReject as exc:
            rest = exc.expression.partition(".")[2]
            exc.expression = f"Bundle.entry[{i}].resource" + (f".{rest}" if rest else "")
            exc.detail = f"entry {i}: {exc.detail}"
            raise
    return out
