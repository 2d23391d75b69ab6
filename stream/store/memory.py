"""The in-process risk store of the embedded mode: the same semantics as the Redis store.

State lives in a dict per admission. It can be saved to / restored from a JSON file (:meth:`snapshot`,
:meth:`restore`), so that a finished embedded run can be explained later (``notestream explain``). With
``journal=PATH`` (store URL ``memory:///PATH``) every change is also appended to a JSON-lines journal,
flushed before the call returns, so a worker killed with SIGKILL restarts with every acknowledged
change (the journal is replayed, then compacted into one snapshot line). Expiry follows the Redis
store: a sliding idle TTL, and ``retention`` after a discharge, checked lazily against ``clock``
(seconds); a replayed journal applies each change at the time it was recorded.

>>> import asyncio
>>> store = MemoryRiskStore()
>>> r = asyncio.run(store.apply_note(hadm_id=1, subject_id=7, note_id="a", revision=0, is_error=False,
...                                  chunk_probs=[0.9, 0.1, 0.2]))
>>> r.applied, r.reason, r.state.seq, r.state.n_chunks, round(r.state.score(), 6)
(True, 'new', 1, 3, 0.6)
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Sequence
from datetime import datetime
from pathlib import Path
from typing import IO, Any

from notestream.models.ledger import note_outcome
from notestream.stream.errors import StoreError
from notestream.stream.events import AdmissionEvent
from notestream.stream.ids import Id, parse_id
from notestream.stream.store.changelog import AdmissionRebuild
from notestream.stream.store.memory_state import (
    Admission,
    Note,
    dump_admissions,
    load_admissions,
    write_atomically,
)
from notestream.stream.store.records import (
    MAX_HELD,
    AdmissionInfo,
    AdmissionState,
    ApplyReason,
    ApplyResult,
    NoteProbs,
    check_digest,
    check_probs,
    check_revision,
    exact_add,
    exact_to_float,
)


class MemoryRiskStore:
    """:class:`~notestream.stream.store.records.RiskStore` in process memory (thread-safe)."""

    def __init__(
        self,
        *,
        idle_ttl_s: float = 30 * 24 * 3600.0,
        retention_s: float = 72 * 3600.0,
        clock: Callable[[], float] = time.time,
        journal: str | Path | None = None,
    ) -> None:
        self.idle_ttl_s = idle_ttl_s
        self.retention_s = retention_s
        self._clock = clock
        self._now: float | None = None  # the recorded time while a journal is replayed
        self._lock = threading.Lock()
        self._admissions: dict[Id, Admission] = {}
        self._model: str | None = None  # the model whose probabilities the store holds (claim)
        self._held: dict[Id, list[tuple[float, str]]] = {}  # notes waiting for their admission
        self._journal: IO[str] | None = None
        self.journal_path = Path(journal) if journal is not None else None
        if self.journal_path is not None:
            self._open_journal(self.journal_path)

    def _time(self) -> float:
        return self._now if self._now is not None else self._clock()

    # --- helpers -----------------------------------------------------------------------------------
    def _get(self, hadm_id: Id) -> Admission | None:
        adm = self._admissions.get(hadm_id)
        if adm is not None and adm.deadline <= self._time():
            del self._admissions[hadm_id]
            return None
        return adm

    def _touch(self, adm: Admission) -> None:
        adm.deadline = adm.expire_at if adm.expire_at is not None else self._time() + self.idle_ttl_s

    def _state(self, hadm_id: Id, adm: Admission) -> AdmissionState | None:
        if not adm.has_record:
            return None
        top_note = (adm.top[1], adm.top[0]) if adm.top else None
        return AdmissionState(
            hadm_id=hadm_id,
            subject_id=adm.subject_id,
            p_max=top_note[1] if top_note else None,
            p_sum=exact_to_float(adm.exact_sum),
            n_chunks=adm.n_chunks,
            n_notes=adm.n_notes,
            seq=adm.seq,
            top_note_id=top_note[0] if top_note else None,
            top_chunk=adm.notes[top_note[0]].top if top_note else None,
            discharged=adm.discharged,
        )

    @staticmethod
    def _info(hadm_id: Id, adm: Admission, applied: bool) -> AdmissionInfo:
        return AdmissionInfo(
            hadm_id=hadm_id,
            subject_id=adm.subject_id,
            admit_time=adm.admit_time,
            discharge_time=adm.discharge_time,
            admission_type=adm.admission_type,
            death_time=adm.death_time,
            discharged=adm.discharged,
            applied=applied,
        )

    # --- RiskStore ---------------------------------------------------------------------------------
    async def record_admission(self, event: AdmissionEvent) -> AdmissionInfo:
        with self._lock:
            info = self._record(event)
            self._log({"op": "admission", "t": self._time(), "event": event.model_dump(mode="json")})
            return info

    def _record(self, event: AdmissionEvent) -> AdmissionInfo:
        adm = self._get(event.hadm_id)
        if adm is None:
            adm = self._admissions[event.hadm_id] = Admission()
        adm.has_record = True
        if adm.subject_id is None:
            adm.subject_id = event.subject_id
        applied = False
        if event.kind == "admit":
            if adm.admit_time != event.admit_time:
                adm.admit_time, applied = event.admit_time, True
            if event.admission_type:
                adm.admission_type = event.admission_type
        else:
            if event.admit_time is not None and adm.admit_time is None:
                adm.admit_time = event.admit_time
            adm.discharge_time = event.discharge_time or adm.discharge_time
            adm.death_time = event.death_time or adm.death_time
            if not adm.discharged:
                adm.discharged, applied = True, True
                adm.seq += 1
                adm.expire_at = self._time() + self.retention_s
        self._touch(adm)
        info = self._info(event.hadm_id, adm, applied)
        self._get(event.hadm_id)  # a zero retention ends the admission at once, as in Redis
        return info

    async def admission(self, hadm_id: Id) -> AdmissionInfo | None:
        with self._lock:
            adm = self._get(hadm_id)
            if adm is None or (adm.admit_time is None and not adm.discharged):
                return None
            return self._info(hadm_id, adm, False)

    async def apply_note(
        self,
        *,
        hadm_id: Id,
        subject_id: Id,
        note_id: str,
        revision: int,
        is_error: bool,
        chunk_probs: Sequence[float],
        note_time: datetime | None = None,
        content_hash: str | None = None,
    ) -> ApplyResult:
        probs = () if is_error else tuple(check_probs(chunk_probs))
        revision = check_revision(revision)
        digest = "" if is_error else check_digest(content_hash)
        with self._lock:
            result = self._apply(hadm_id, subject_id, note_id, revision, is_error, probs, digest)
            if result.applied or result.reason == "retracted":
                self._log(
                    {
                        "op": "note",
                        "t": self._time(),
                        "hadm_id": hadm_id,
                        "subject_id": subject_id,
                        "note_id": note_id,
                        "revision": revision,
                        "is_error": is_error,
                        "probs": list(probs),
                        "digest": digest,
                    }
                )
            return result

    def _apply(
        self,
        hadm_id: Id,
        subject_id: Id,
        note_id: str,
        revision: int,
        is_error: bool,
        probs: tuple[float, ...],
        digest: str = "",
    ) -> ApplyResult:
        adm = self._get(hadm_id)
        if adm is None:
            adm = self._admissions[hadm_id] = Admission()
        old = adm.notes.get(note_id)
        outcome = note_outcome(None if old is None else (old.revision, old.is_error), revision, is_error)
        if old is not None and outcome in ("duplicate", "stale"):  # only a held note can be either
            reason: ApplyReason = outcome
            if reason == "duplicate" and not is_error and digest and old.digest and digest != old.digest:
                reason = "conflict"
            self._touch(adm)
            return ApplyResult(False, reason, self._state(hadm_id, adm))
        live_old = old is not None and not old.is_error
        if old is not None and live_old:
            for p in old.probs:
                adm.exact_sum = exact_add(adm.exact_sum, p, -1)
            adm.n_chunks -= len(old.probs)
            adm.n_notes -= 1
            adm.drop_max(note_id)
        if is_error:
            adm.notes[note_id] = Note(revision, True)
            if not live_old:
                self._touch(adm)
                return ApplyResult(False, "retracted", self._state(hadm_id, adm))
            reason = "retracted"
        else:
            top = max(range(len(probs)), key=lambda i: (probs[i], -i), default=0)
            for p in probs:
                adm.exact_sum = exact_add(adm.exact_sum, p)
            adm.n_chunks += len(probs)
            adm.n_notes += 1
            if probs:
                adm.add_max(note_id, probs[top])
            adm.notes[note_id] = Note(revision, False, top, probs, digest)
            reason = outcome
        adm.seq += 1
        adm.has_record = True
        if adm.subject_id is None:
            adm.subject_id = subject_id
        self._touch(adm)
        return ApplyResult(True, reason, self._state(hadm_id, adm))

    async def state(self, hadm_id: Id) -> AdmissionState | None:
        with self._lock:
            adm = self._get(hadm_id)
            return None if adm is None else self._state(hadm_id, adm)

    async def note_probs(self, hadm_id: Id) -> dict[str, NoteProbs]:
        with self._lock:
            adm = self._get(hadm_id)
            if adm is None:
                return {}
            return {k: NoteProbs(n.revision, n.probs) for k, n in adm.notes.items() if not n.is_error}

    async def hadm_ids(self) -> list[Id]:
        """Admissions held now (memory store only: for explain and the demo summary)."""
        with self._lock:
            return sorted((h for h in list(self._admissions) if self._get(h) is not None), key=_order)

    async def hold_note(self, hadm_id: Id, record: str, deadline: float) -> int:
        with self._lock:
            held = self._held.setdefault(hadm_id, [])
            if len(held) >= MAX_HELD:
                raise StoreError(f"admission {hadm_id} already holds {MAX_HELD} notes waiting for it")
            held.append((deadline, record))
            self._log(
                {"op": "hold", "t": self._time(), "hadm_id": hadm_id, "deadline": deadline, "record": record}
            )
            return len(held)

    async def held_notes(self, hadm_id: Id) -> list[str]:
        with self._lock:
            return [record for _, record in self._held.get(hadm_id, [])]

    async def drop_held(self, hadm_id: Id, records: Sequence[str]) -> None:
        with self._lock:
            self._drop_held(hadm_id, list(records))
            self._log({"op": "drop", "t": self._time(), "hadm_id": hadm_id, "records": list(records)})

    async def due_held(self, now: float, limit: int = 100) -> list[tuple[Id, str]]:
        with self._lock:
            due = [(h, r) for h, held in self._held.items() for d, r in held if d <= now]
            return due[:limit]

    def _drop_held(self, hadm_id: Id, records: list[str]) -> None:
        left = list(records)
        kept = []
        for deadline, record in self._held.get(hadm_id, []):
            if record in left:
                left.remove(record)
            else:
                kept.append((deadline, record))
        if kept:
            self._held[hadm_id] = kept
        else:
            self._held.pop(hadm_id, None)

    async def claim(self, model: str) -> str:
        with self._lock:
            if self._model is None:
                self._model = model
                self._log({"op": "model", "t": self._time(), "model": model})
            return self._model

    async def restore_admissions(
        self, plans: Sequence[AdmissionRebuild], *, now_ms: int | None = None
    ) -> int:
        """Write the admissions a changelog rebuild planned, as :meth:`RedisRiskStore.restore` does
        (a merge: notes at their recorded times, admission events, then the ``seq`` floor)."""
        written = 0
        with self._lock:
            try:
                for plan in plans:
                    self._now = plan.last_ms / 1000.0
                    for n in plan.notes:
                        probs = () if n.is_error else tuple(check_probs(n.probs))
                        self._apply(
                            plan.hadm_id,
                            n.subject_id,
                            n.note_id,
                            n.revision,
                            n.is_error,
                            probs,
                            "" if n.is_error else n.digest,
                        )
                        written += 1
                    for record in plan.events:
                        self._now = record.t_ms / 1000.0
                        self._record(record.change.event)
                    self._now = None
                    adm = self._get(plan.hadm_id)
                    if adm is not None and adm.has_record and adm.seq < plan.seq:
                        adm.seq = plan.seq
                for plan in plans:
                    present = self._held.get(plan.hadm_id, [])
                    for h in plan.held:
                        if (h.deadline, h.record) not in present:
                            self._held.setdefault(plan.hadm_id, []).append((h.deadline, h.record))
                            op = {"op": "hold", "hadm_id": plan.hadm_id, "deadline": h.deadline}
                            self._log({**op, "t": self._time(), "record": h.record})
            finally:
                self._now = None
        return written

    async def ping(self) -> bool:
        return True

    async def close(self) -> None:
        with self._lock:
            if self._journal is not None:
                self._journal.close()
                self._journal = None

    # --- snapshot and journal -------------------------------------------------------------------------
    def snapshot(self, path: str | Path) -> Path:
        """Write every admission to a JSON file (floats round-trip exactly); returns the path."""
        with self._lock:
            data = {**dump_admissions(self._admissions), "model": self._model}
        return write_atomically(Path(path), json.dumps(data))

    @classmethod
    def restore(cls, path: str | Path, **kwargs: Any) -> MemoryRiskStore:
        """A store holding what a :meth:`snapshot` file or a journal (``journal=``) at ``path`` holds."""
        store = cls(**kwargs)
        try:
            text = Path(path).read_text(encoding="utf-8")
            head = json.loads(text.split("\n", 1)[0] or "{}")
            if isinstance(head, dict) and "op" in head:
                store._replay(text)
            else:
                data = json.loads(text)
                store._admissions = load_admissions(data)
                store._model = data.get("model")
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise StoreError(
                f"Cannot restore the risk store from {path}: {exc}. Pass a file written by a memory store "
                "snapshot or journal."
            ) from exc
        return store

    def _replay(self, text: str) -> None:
        """Apply the operations of a journal, each at the time it was recorded."""
        lines = text.splitlines()
        try:
            for number, line in enumerate(lines, start=1):
                try:
                    op = json.loads(line)
                except json.JSONDecodeError:
                    if number == len(lines):
                        break  # a line cut short by a crash: its operation was never acknowledged
                    raise ValueError(f"line {number} of the journal is not JSON") from None
                self._now = op.get("t")
                if op["op"] == "snapshot":
                    self._admissions = load_admissions(op["data"])
                    self._model = op["data"].get("model")
                elif op["op"] == "model":
                    self._model = op["model"]
                elif op["op"] == "note":
                    self._apply(
                        parse_id(op["hadm_id"]),
                        parse_id(op["subject_id"]),
                        op["note_id"],
                        op["revision"],
                        op["is_error"],
                        tuple(op["probs"]),
                        op.get("digest", ""),
                    )
                elif op["op"] == "hold":
                    self._held.setdefault(parse_id(op["hadm_id"]), []).append((op["deadline"], op["record"]))
                elif op["op"] == "drop":
                    self._drop_held(parse_id(op["hadm_id"]), op["records"])
                elif op["op"] == "admission":
                    self._record(AdmissionEvent.model_validate(op["event"]))
                else:
                    raise ValueError(f"line {number} of the journal has an unknown operation {op['op']!r}")
        finally:
            self._now = None

    def _open_journal(self, path: Path) -> None:
        """Replay an existing journal, compact it into one snapshot line, and append from there."""
        try:
            if path.exists():
                self._replay(path.read_text(encoding="utf-8"))
            snapshot = {**dump_admissions(self._admissions), "model": self._model}
            lines = [json.dumps({"op": "snapshot", "t": self._time(), "data": snapshot})]
            lines += [
                json.dumps({"op": "hold", "t": self._time(), "hadm_id": h, "deadline": d, "record": r})
                for h, held in self._held.items()
                for d, r in held
            ]  # notes still waiting for their admission survive the compaction
            write_atomically(path, "\n".join(lines) + "\n")
            self._journal = path.open("a", encoding="utf-8")
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise StoreError(
                f"Cannot open the memory store journal {path}: {exc}. Move the file away to start empty."
            ) from exc

    def _log(self, record: dict[str, Any]) -> None:
        """Append one applied operation to the journal (flushed: it survives a SIGKILL of the process)."""
        if self._journal is not None:
            self._journal.write(json.dumps(record) + "\n")
            self._journal.flush()


def _order(hadm_id: Id) -> tuple[int, int, str]:
    """Integer ids first, by value, then string ids: a total order over mixed ids."""
    return (0, hadm_id, "") if isinstance(hadm_id, int) else (1, 0, hadm_id)
