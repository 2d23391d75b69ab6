"""The store changelog: every store change as a record of a compacted Kafka topic, to rebuild from.

As in Kafka Streams, the worker writes one record per store change to ``<prefix>store-changelog``
(``cleanup.policy=compact``) after the store write and before the batch's offsets commit, so the
topic always holds at least what the store holds. When the store loses its data (a Redis restart
without persistence, ``FLUSHALL``, a failover to an empty replica), :mod:`notestream.stream.store.heal` rebuilds
it from the topic without running the model again.

Records are keyed ``<namespace>/<hadm_id>/n/<note_id>`` (a note: its latest revision wins under
compaction) and ``<namespace>/<hadm_id>/admit`` / ``/discharge`` (the admission events). A note record
holds what the store holds of the note: revision, retraction flag, chunk probabilities, the sha256 of
the text, the note time, never the text. Every record also carries ``seq``, the admission's ``seq``
right after the change: the rebuilt admission continues from the largest, so risk updates never go
backwards; ``t`` (epoch milliseconds of the write) lets the rebuild leave out admissions that expired.

A note *held* for an admission not known yet (:meth:`notestream.stream.pipeline.Pipeline.process`) is
recorded under ``<namespace>/<hadm_id>/h/<note_id>/<revision>``: the held entry itself (the note's
metadata with empty text, chunk probabilities, content hash, deadline and where it was read). When it
leaves the store (released, or dead-lettered at expiry) a ``settled`` record replaces it, written
(with the released note's own record) before the held entry is dropped, so a rebuild holds again
exactly the notes still waiting, and never applies them. (A key of its own, not
the note's: a held revision must not replace, under compaction, a revision of the note already applied.)

>>> change = NoteChange(hadm_id=5, subject_id=7, note_id="n1", revision=2, is_error=False,
...                     probs=(0.25, 0.5), digest="ab", note_time=None, seq=3)
>>> key, value = encode_note(change, namespace="ns", model="m@1", t_ms=1000)
>>> key
b'ns/5/n/n1'
>>> decode(key, value, namespace="ns") == NoteRecord(change, model="m@1", t_ms=1000)
True
>>> held = HeldChange(hadm_id=5, note_id="n2", revision=0, record='{"probs": [0.5]}', deadline=9.5)
>>> key, value = encode_held(held, namespace="ns", model="m@1", t_ms=1000)
>>> key
b'ns/5/h/n2/0'
>>> decode(key, value, namespace="ns") == HeldRecord(held, model="m@1", t_ms=1000)
True
>>> settled = decode(*encode_held(held.settle("expired"), namespace="ns", model="m@1", t_ms=2), namespace="ns")
>>> type(settled).__name__, settled.change.settled, settled.change.record
('SettledRecord', 'expired', '')
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime

from notestream.stream.errors import StoreError, StoreModelMismatch
from notestream.stream.events import AdmissionEvent
from notestream.stream.ids import Id, id_key, parse_id

VERSION = 1


@dataclass(frozen=True)
class NoteChange:
    """A note the store now holds (applied, or a duplicate of a held one), as the pipeline saw it."""

    hadm_id: Id
    subject_id: Id
    note_id: str
    revision: int
    is_error: bool
    probs: tuple[float, ...]
    digest: str
    note_time: datetime | None
    seq: int


@dataclass(frozen=True)
class AdmissionChange:
    """An admission event the store recorded, with the admission's ``seq`` afterwards."""

    event: AdmissionEvent
    seq: int


@dataclass(frozen=True)
class HeldChange:
    """A note the store holds for an admission it does not know yet (``record`` is the store's held
    entry: JSON, no text), or, with ``settled`` set, one that left the store that way."""

    hadm_id: Id
    note_id: str
    revision: int
    record: str
    deadline: float
    settled: str | None = None
    """Why the held note left the store: ``released`` (applied or dropped at release), ``expired``."""

    @property
    def seq(self) -> int:
        return 0  # holding a note changes no admission's seq

    def settle(self, why: str) -> HeldChange:
        """The record that replaces this one once the note left the store."""
        return HeldChange(self.hadm_id, self.note_id, self.revision, "", 0.0, settled=why)


@dataclass(frozen=True)
class NoteRecord:
    change: NoteChange
    model: str
    t_ms: int


@dataclass(frozen=True)
class AdmissionRecord:
    change: AdmissionChange
    model: str
    t_ms: int


@dataclass(frozen=True)
class HeldRecord:
    change: HeldChange
    model: str
    t_ms: int


@dataclass(frozen=True)
class SettledRecord:
    change: HeldChange
    model: str
    t_ms: int


Record = NoteRecord | AdmissionRecord | HeldRecord | SettledRecord
Change = NoteChange | AdmissionChange | HeldChange


def note_key(namespace: str, hadm_id: Id, note_id: str) -> bytes:
    return f"{namespace}/{id_key(hadm_id)}/n/{id_key(note_id)}".encode()  # ids escaped: no "/" inside


def admission_key(namespace: str, hadm_id: Id, kind: str) -> bytes:
    return f"{namespace}/{id_key(hadm_id)}/{kind}".encode()


def encode_note(change: NoteChange, *, namespace: str, model: str, t_ms: int) -> tuple[bytes, bytes]:
    """Key and value of a note record (probabilities as JSON floats: they round-trip exactly)."""
    value = {
        "v": VERSION,
        "kind": "note",
        "hadm_id": change.hadm_id,
        "subject_id": change.subject_id,
        "note_id": change.note_id,
        "revision": str(change.revision),  # exact at any size, whatever reads the JSON
        "is_error": change.is_error,
        "probs": list(change.probs),
        "digest": change.digest,
        "note_time": change.note_time.isoformat() if change.note_time is not None else None,
        "seq": change.seq,
        "model": model,
        "t": t_ms,
    }
    return note_key(namespace, change.hadm_id, change.note_id), json.dumps(value).encode()


def held_key(namespace: str, hadm_id: Id, note_id: str, revision: int) -> bytes:
    return f"{namespace}/{id_key(hadm_id)}/h/{id_key(note_id)}/{revision}".encode()


def encode_held(change: HeldChange, *, namespace: str, model: str, t_ms: int) -> tuple[bytes, bytes]:
    """Key and value of a held note's record, or of its ``settled`` record (the held entry, no text)."""
    value: dict[str, object] = {
        "v": VERSION,
        "kind": "settled" if change.settled else "held",
        "hadm_id": change.hadm_id,
        "note_id": change.note_id,
        "revision": str(change.revision),
        "seq": 0,
        "model": model,
        "t": t_ms,
    }
    if change.settled:
        value["settled"] = change.settled
    else:
        value["record"] = json.loads(change.record)
        value["deadline"] = change.deadline
    key = held_key(namespace, change.hadm_id, change.note_id, change.revision)
    return key, json.dumps(value).encode()


def encode_admission(
    change: AdmissionChange, *, namespace: str, model: str, t_ms: int
) -> tuple[bytes, bytes]:
    """Key and value of an admission record (the event itself: admission events hold no note text)."""
    value = {
        "v": VERSION,
        "kind": "admission",
        "event": change.event.model_dump(mode="json"),
        "seq": change.seq,
        "model": model,
        "t": t_ms,
    }
    return admission_key(namespace, change.event.hadm_id, change.event.kind), json.dumps(value).encode()


def decode(key: bytes, value: bytes, *, namespace: str) -> Record | None:
    """The record of one changelog message; None for another namespace's records."""
    if not key.startswith(f"{namespace}/".encode()):
        return None
    try:
        data = json.loads(value)
        if data.get("v") != VERSION:
            raise ValueError(f"version {data.get('v')!r} is not {VERSION}")
        model, t_ms, seq = str(data["model"]), int(data["t"]), int(data["seq"])
        if data["kind"] == "note":
            note_time = data["note_time"]
            change = NoteChange(
                hadm_id=parse_id(data["hadm_id"]),
                subject_id=parse_id(data["subject_id"]),
                note_id=str(data["note_id"]),
                revision=int(data["revision"]),
                is_error=bool(data["is_error"]),
                probs=tuple(float(p) for p in data["probs"]),
                digest=str(data["digest"]),
                note_time=datetime.fromisoformat(note_time) if note_time else None,
                seq=seq,
            )
            return NoteRecord(change, model, t_ms)
        if data["kind"] in ("held", "settled"):
            settled = data["kind"] == "settled"
            held = HeldChange(
                hadm_id=parse_id(data["hadm_id"]),
                note_id=str(data["note_id"]),
                revision=int(data["revision"]),
                record="" if settled else json.dumps(data["record"]),
                deadline=0.0 if settled else float(data["deadline"]),
                settled=str(data["settled"]) if settled else None,
            )
            return SettledRecord(held, model, t_ms) if settled else HeldRecord(held, model, t_ms)
        event = AdmissionEvent.model_validate(data["event"])
        return AdmissionRecord(AdmissionChange(event, seq), model, t_ms)
    except (ValueError, KeyError, TypeError) as exc:
        raise StoreError(
            f"The store changelog record {key!r} cannot be read ({type(exc).__name__}); the changelog "
            "topic holds records of another notestream version or of something else."
        ) from exc


@dataclass
class AdmissionRebuild:
    """What the rebuild writes for one admission: its notes, its admission events, the seq floor."""

    hadm_id: Id
    notes: list[NoteChange] = field(default_factory=list)
    events: list[AdmissionRecord] = field(default_factory=list)
    held: list[HeldChange] = field(default_factory=list)
    """Notes that wait for the admission: held again, not applied (released when the admit comes)."""
    seq: int = 0
    last_ms: int = 0
    """The latest write of the admission (its idle TTL runs from there)."""
    expire_ms: int | None = None
    """Set by a discharge: the admission expires then (discharge time + retention)."""


def plan_rebuild(
    records: Iterable[Record], *, now_ms: int, idle_ttl_ms: int, retention_ms: int
) -> list[AdmissionRebuild]:
    """Group the (compacted) records by admission and leave out the admissions that have expired.

    >>> ch = NoteChange(1, 7, "a", 0, False, (0.5,), "", None, seq=4)
    >>> [(p.hadm_id, p.seq) for p in plan_rebuild([NoteRecord(ch, "m", 100)], now_ms=150,
    ...                                           idle_ttl_ms=100, retention_ms=10)]
    [(1, 4)]
    >>> plan_rebuild([NoteRecord(ch, "m", 100)], now_ms=250, idle_ttl_ms=100, retention_ms=10)
    []
    """
    plans: dict[Id, AdmissionRebuild] = {}
    for record in records:
        if isinstance(record, SettledRecord):
            continue  # the note left the store: nothing to rebuild
        hadm_id = (
            record.change.event.hadm_id if isinstance(record, AdmissionRecord) else record.change.hadm_id
        )
        plan = plans.setdefault(hadm_id, AdmissionRebuild(hadm_id))
        plan.seq = max(plan.seq, record.change.seq)
        plan.last_ms = max(plan.last_ms, record.t_ms)
        if isinstance(record, NoteRecord):
            plan.notes.append(record.change)
        elif isinstance(record, HeldRecord):
            plan.held.append(record.change)
        else:
            plan.events.append(record)
            if record.change.event.kind == "discharge":
                plan.expire_ms = record.t_ms + retention_ms
    alive = []
    for plan in plans.values():
        plan.held.sort(key=lambda h: (h.deadline, h.note_id, h.revision))
        plan.events.sort(key=lambda r: r.change.event.kind != "admit")  # admit first, then discharge
        expires = plan.expire_ms if plan.expire_ms is not None else plan.last_ms + idle_ttl_ms
        if expires > now_ms:
            alive.append(plan)
    return sorted(alive, key=lambda p: (isinstance(p.hadm_id, str), str(p.hadm_id).zfill(20)))


def latest(messages: Iterable[tuple[bytes, bytes | None]]) -> dict[bytes, bytes]:
    """What compaction keeps: the last value per key, a ``None`` value (tombstone) deleting the key.

    >>> latest([(b"k", b"1"), (b"j", b"2"), (b"k", b"3"), (b"j", None)])
    {b'k': b'3'}
    """
    out: dict[bytes, bytes] = {}
    for key, value in messages:
        if value is None:
            out.pop(key, None)
        else:
            out[key] = value
    return out


def decode_all(messages: Mapping[bytes, bytes], *, namespace: str, model: str | None) -> list[Record]:
    """The namespace's records of :func:`latest` messages; records of another model are refused."""
    from notestream.stream.store import same_model

    records = []
    for key, value in messages.items():
        record = decode(key, value, namespace=namespace)
        if record is None:
            continue
        if model is not None and not same_model(record.model, model):
            raise StoreModelMismatch(
                f"The store changelog holds records of model {record.model} in namespace {namespace}, "
                f"not of the model this worker serves ({model}); a namespace holds one model's "
                "probabilities (docs/operations.md, 'Upgrading a model')."
            )
        records.append(record)
    return records


def encode_changes(
    changes: Iterable[Change], *, namespace: str, model: str, t_ms: int
) -> list[tuple[bytes, bytes]]:
    """Keys and values of the records of a batch's changes."""
    out = []
    for change in changes:
        if isinstance(change, NoteChange):
            out.append(encode_note(change, namespace=namespace, model=model, t_ms=t_ms))
        elif isinstance(change, HeldChange):
            out.append(encode_held(change, namespace=namespace, model=model, t_ms=t_ms))
        else:
            out.append(encode_admission(change, namespace=namespace, model=model, t_ms=t_ms))
    return out
