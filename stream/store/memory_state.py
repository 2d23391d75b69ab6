"""The memory store's per-admission records and their JSON form (snapshots and journal compaction)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from notestream.stream.ids import Id, parse_id

SNAPSHOT_VERSION = 1


@dataclass
class Note:
    """One note of an admission: its latest revision, retracted or not, and its chunk probabilities."""

    revision: int
    is_error: bool
    top: int = 0
    probs: tuple[float, ...] = ()
    digest: str = ""  # sha256 of the note text ("" when unknown); never the text


@dataclass
class Admission:
    """Everything the memory store holds for one admission (notes include retraction tombstones)."""

    subject_id: Id | None = None
    has_record: bool = False  # the aggregate record exists (Redis: the admission hash)
    admit_time: datetime | None = None
    discharge_time: datetime | None = None
    admission_type: str | None = None
    death_time: datetime | None = None
    discharged: bool = False
    expire_at: float | None = None  # set by the first discharge
    deadline: float = 0.0
    seq: int = 0
    exact_sum: int = 0
    n_chunks: int = 0
    n_notes: int = 0
    notes: dict[str, Note] = field(default_factory=dict)
    maxima: dict[str, float] = field(default_factory=dict)
    top: tuple[float, str] | None = None  # (max, note_id) of maxima: the Redis ZREVRANGE 0 0

    def drop_max(self, note_id: str) -> None:
        if self.maxima.pop(note_id, None) is not None and self.top is not None and self.top[1] == note_id:
            self.top = max(((v, k) for k, v in self.maxima.items()), default=None)  # O(n), only for the top

    def add_max(self, note_id: str, value: float) -> None:
        self.maxima[note_id] = value
        if self.top is None or (value, note_id) > self.top:
            self.top = (value, note_id)


def dump_admissions(admissions: dict[Id, Admission]) -> dict[str, Any]:
    """The admissions as JSON-ready data (floats round-trip exactly; the exact sum as a decimal string)."""
    data: dict[str, Any] = {"version": SNAPSHOT_VERSION, "admissions": {}}
    for hadm_id, adm in admissions.items():
        record = {k: v for k, v in adm.__dict__.items() if k not in ("notes", "exact_sum", "top")}
        for key in ("admit_time", "discharge_time", "death_time"):
            record[key] = record[key].isoformat() if record[key] else None
        record["exact_sum"] = str(adm.exact_sum)
        record["notes"] = {
            k: [n.revision, n.is_error, n.top, list(n.probs), n.digest] for k, n in adm.notes.items()
        }
        data["admissions"][str(hadm_id)] = record
    return data


def load_admissions(data: dict[str, Any]) -> dict[Id, Admission]:
    """The admissions :func:`dump_admissions` wrote."""
    if data.get("version") != SNAPSHOT_VERSION:
        raise ValueError(f"snapshot version {data.get('version')!r} is not {SNAPSHOT_VERSION}")
    out: dict[Id, Admission] = {}
    for hadm_id, record in data["admissions"].items():
        record = dict(record)
        notes = {
            k: Note(n[0], bool(n[1]), n[2], tuple(n[3]), *n[4:5]) for k, n in record.pop("notes").items()
        }
        record["exact_sum"] = int(record["exact_sum"])
        for key in ("admit_time", "discharge_time", "death_time"):
            record[key] = datetime.fromisoformat(record[key]) if record[key] else None
        adm = Admission(**record, notes=notes)
        adm.top = max(((v, k) for k, v in adm.maxima.items()), default=None)
        out[parse_id(hadm_id)] = adm
    return out


def write_atomically(target: Path, text: str) -> Path:
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_suffix(target.suffix + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(target)
    return target
