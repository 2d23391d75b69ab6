"""One batch of notes -> risk updates: window, clean + chunk, ONE engine call, store, updates.

No Kafka here: :mod:`notestream.stream.app` is the thin adapter that feeds batches in and sends the results out,
and tests drive :class:`Pipeline` directly. The steps for a batch:

1. Retractions (``is_error``) skip everything but the store: they carry no text worth scoring. A
   retraction for an admission the store has never seen (no admission event, no note) is held as in
   step 2, whatever the window: applied on release, dead-lettered as ``admission_unknown`` on expiry.
2. Window and task filter: ``spec.window.admits`` with the admit time of the note itself, else of the
   store's admission record (from the admissions topic). Notes outside the window are *dropped* and
   counted by reason in :attr:`Pipeline.counters`. ``days``/``hours`` windows need that time; a note
   whose admission is not known yet (the ADT feed lags the notes) is scored with the batch and
   *held* in the store (its chunk probabilities and metadata, never its text), and nothing waits:
   :meth:`Pipeline.release` applies the held notes when the admission's admit event arrives (window
   test then), and a note still held after ``admission_wait_s`` is returned by
   :meth:`Pipeline.expired` for the app to dead-letter as ``admission_unknown``.
3. Each note is cleaned and chunked by :func:`notestream.models.prep.note_chunks`, the same function training and
   offline scoring use, so a streamed score equals the offline score of the same notes. This runs in a
   thread, off the event loop (a long note must not stop the consumer's heartbeats), and a note whose
   cleaning or chunking fails is rejected as ``processing_error`` (:func:`notestream.stream.fate.decide`).
4. The chunks of all notes of the batch go to the engine in ONE call. If that call fails for a reason
   of the messages (not the store, broker or device), the notes are scored one by one and a note that
   fails alone is rejected; a fixed canary text tells a broken engine from a broken note.
5. The store applies each note atomically (dedupe by (note_id, revision), revisions, retractions);
   notes of one admission in batch order, admissions concurrently. The store keeps the sha256 of each
   note's text (never the text): a note with the id and revision of a held one but other content is
   rejected as ``conflict`` (the app dead-letters it) and the held one stays.
6. One :class:`~notestream.stream.events.RiskUpdate` per applied change (``change`` = new | revision |
   retracted), plus, by default, a repeat of the current state (same ``seq``, ``change`` None) for a
   duplicate or stale note: redelivery after a crash then re-announces what the crash left unsent.

Notes with no chunk (10 words or fewer after cleaning, docs/reference.md §4) are still applied to the store
with no chunk probabilities: they count in ``n_notes`` and take part in dedupe and revisions (a later,
longer revision replaces them), but do not move the score. An admission without any chunk has score
None (and p_max, p_mean None): no evidence yet, which subscribers must not read as a low risk.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from datetime import UTC, datetime, tzinfo
from typing import TYPE_CHECKING, Any, Protocol

from notestream.models.calibration import calibrated_risk
from notestream.models.isolation import Scorer, score_isolating
from notestream.models.ledger import window_verdict
from notestream.models.prep import note_chunks
from notestream.models.spec import ModelSpec
from notestream.stream.errors import StoreError, StoreUnavailable
from notestream.stream.events import AdmissionEvent, NoteEvent, RiskUpdate, utcnow
from notestream.stream.fate import decide, failure_detail
from notestream.stream.ids import Id
from notestream.stream.store.changelog import AdmissionChange, Change, HeldChange, NoteChange
from notestream.stream.store.records import content_hash

if TYPE_CHECKING:
    from notestream.stream.store import AdmissionState, RiskStore

log = logging.getLogger(__name__)

Record = Callable[[Sequence[Change]], Awaitable[None]]
"""Writes store changes to the changelog and returns once the broker has them
(:meth:`notestream.stream.store.heal.StoreHealer.record` with the worker's send)."""


class StoreTimer(Protocol):
    """What the pipeline needs of :class:`notestream.stream.metrics.Metrics`: a timer around each store call."""

    def store_timer(self, op: str) -> AbstractContextManager[None]: ...


@dataclass(frozen=True)
class Rejected:
    """A valid note the pipeline could not process; the worker dead-letters it with this reason.

    ``index`` is the note's position in the batch given to :meth:`Pipeline.process`, so the caller
    finds the message it came from."""

    note: NoteEvent
    reason: str
    detail: str
    index: int


@dataclass
class BatchResult:
    """What one batch produced."""

    updates: list[RiskUpdate] = field(default_factory=list)
    rejected: list[Rejected] = field(default_factory=list)
    dropped: Counter[str] = field(default_factory=Counter)
    outcomes: Counter[str] = field(default_factory=Counter)
    """Store outcomes of the batch's notes: new, revision, retracted, duplicate, stale, ..."""
    chunks: int = 0
    engine_s: float = 0.0
    changes: list[Change] = field(default_factory=list)
    """What the store now holds of each note of the batch, held notes included, and the held notes
    that left it (for the store changelog, notestream.stream.store.heal)."""


@dataclass(frozen=True)
class Expired:
    """A held note whose admission never came within the wait: the app dead-letters it as
    ``admission_unknown`` with ``ref`` (where the note was read: topic, partition, offset, key)."""

    note: NoteEvent
    ref: dict[str, Any]
    detail: str
    record: str

    @property
    def settled(self) -> HeldChange:
        """The changelog record that says the note left the store (a rebuild does not hold it again)."""
        note = self.note
        return HeldChange(note.hadm_id, note.note_id, note.revision, "", 0.0, settled="expired")


@dataclass
class _Work:
    note: NoteEvent
    index: int
    chunks: list[str] = field(default_factory=list)
    probs: list[float] = field(default_factory=list)
    hold: bool = False
    ref: dict[str, Any] = field(default_factory=dict)
    digest: str | None = None
    """The text's content hash when the text is gone (a held note): conflicts are told by it."""


CANARY = (
    "Patient admitted with shortness of breath, treated with diuretics and oxygen, improved, and "
    "discharged home in stable condition with follow up in clinic."
)
"""A plain text the engine must always score: if it fails too, the engine is broken, not the note."""


def update_from_state(
    state: AdmissionState,
    *,
    spec: ModelSpec,
    model: str,
    trigger: NoteEvent | None = None,
    change: str | None = None,
    produced_at: datetime | None = None,
    subject_id: Id | None = None,
    fingerprint: str | None = None,
) -> RiskUpdate:
    """The risk update that announces ``state`` (score by ``notestream.models.aggregate`` with the spec's c).

    An admission that holds no chunk (only short or retracted notes) has score, p_max and p_mean
    None: "no evidence yet", never a score of 0 (docs/events.md); and no ``risk``. ``risk`` is the score under the model's calibrator (:func:`notestream.models.calibration.calibrated_risk`).
    """
    score = state.score(spec.c)
    n = state.n_chunks
    subject = state.subject_id if state.subject_id is not None else subject_id
    if subject is None and trigger is not None:
        subject = trigger.subject_id
    return RiskUpdate(
        hadm_id=state.hadm_id,
        subject_id=subject if subject is not None else 0,
        task=spec.task,
        model=model,
        model_fingerprint=fingerprint,
        score=float(score) if score is not None else None,
        risk=calibrated_risk(spec.calibration, float(score) if score is not None else None),
        p_max=float(state.p_max) if n > 0 and state.p_max is not None else None,
        p_mean=float(state.p_sum) / n if n > 0 else None,
        n_chunks=n,
        n_notes=state.n_notes,
        seq=state.seq,
        c=spec.c,
        trigger_note_id=trigger.note_id if trigger is not None else None,
        top_note_id=state.top_note_id,
        top_chunk=state.top_chunk,
        change=change,  # type: ignore[arg-type]
        note_time=trigger.event_time() if trigger is not None else None,
        produced_at=produced_at if produced_at is not None else (trigger.produced_at if trigger else None),
        final=bool(state.discharged),
    )


class Pipeline:
    """Turns batches of valid notes into risk updates, through the engine and the store."""

    def __init__(
        self,
        engine: Scorer,
        store: RiskStore,
        spec: ModelSpec,
        *,
        model: str = "model",
        admission_wait_s: float = 6 * 3600.0,
        tokenizer: Any = None,
        reemit_unchanged: bool = True,
        metrics: StoreTimer | None = None,
        source_timezone: tzinfo = UTC,
        fingerprint: str | None = None,
    ) -> None:
        self.engine = engine
        self.store = store
        self.spec = spec
        self.model = model
        self.fingerprint = fingerprint
        """The model's fingerprint (:func:`notestream.models.fingerprint.model_fingerprint`), put on every update."""
        self.admission_wait_s = admission_wait_s
        self.tokenizer = tokenizer
        self.reemit_unchanged = reemit_unchanged
        """Emit the current state (same seq) for a duplicate or stale note too: see notestream.stream.app."""
        self.metrics = metrics
        """Optional: times every store call (``notestream_store_seconds{op}``); None records nothing."""
        self.source_timezone = source_timezone
        """The zone of the source's naive times: windows compare times as wall-clock times there."""
        self.counters: Counter[str] = Counter()
        """Running totals of completed batches: notes, the store outcomes (new, revision, duplicate, ...),
        chunks, dropped_<reason>, rejected_<reason>. A batch that raises (and is retried by the app)
        adds nothing, so a retry never counts a note twice."""

    # --- notes ------------------------------------------------------------------------------------
    async def process(
        self,
        notes: Sequence[NoteEvent],
        refs: Sequence[dict[str, Any]] | None = None,
        *,
        record: Record | None = None,
    ) -> BatchResult:
        """Process one batch; every note ends up applied, held, dropped (counted) or rejected.

        ``refs`` (one per note, optional): where each note was read (topic, partition, offset, key),
        kept with a held note so that its dead letter can point at it if its admission never comes.
        ``record`` (optional, the store changelog): when held notes are released within the batch
        (their admit came meanwhile), the changes so far and the release's are written with it before
        the held entries leave the store (:meth:`release`); :attr:`BatchResult.changes` keeps the rest.
        """
        result = BatchResult()
        work: list[_Work] = []
        pending: list[tuple[int, NoteEvent]] = []
        retractions: list[tuple[int, NoteEvent]] = []
        for index, note in enumerate(notes):
            if note.is_error:
                retractions.append((index, note))
            elif not self._needs_admit(note):
                self._admit_or_drop(note, index, None, work, result)
            else:
                pending.append((index, note))
        if pending:
            admits = await self._admit_times([note for _, note in pending])
            for index, note in pending:
                admit = admits.get(note.hadm_id)
                if admit is None:  # scored now, held in the store until its admission arrives
                    ref = dict(refs[index]) if refs is not None else {}
                    work.append(_Work(note, index, hold=True, ref=ref))
                else:
                    self._admit_or_drop(note, index, admit, work, result)
        if retractions:  # of an admission the store has never seen: held like a note (issue 11 §6)
            known = await self._known([note.hadm_id for _, note in retractions])
            known |= {w.note.hadm_id for w in work if not w.hold}  # its notes come in this batch
            for index, note in retractions:
                hold = note.hadm_id not in known
                ref = dict(refs[index]) if refs is not None and hold else {}
                work.append(_Work(note, index, hold=hold, ref=ref))
        work.sort(key=lambda w: w.index)  # batch order: revisions of a note stay ordered
        work = await self._chunk(work, result)
        await self._score(work, result)
        await self._apply([w for w in work if not w.hold], result)
        await self._hold([w for w in work if w.hold], result, record)
        # counted once the whole batch is through: a batch that raised is retried and counted then
        self.counters["notes"] += len(notes)
        self.counters.update(result.outcomes)
        for reason, n in result.dropped.items():
            self.counters[f"dropped_{reason}"] += n
        for rej in result.rejected:
            self.counters[f"rejected_{rej.reason}"] += 1
        self.counters["chunks"] += result.chunks
        return result

    def _needs_admit(self, note: NoteEvent) -> bool:
        return self.spec.window.kind in ("days", "hours") and note.admit_time is None

    def _admit_or_drop(
        self, note: NoteEvent, index: int, admit: datetime | None, work: list[_Work], result: BatchResult
    ) -> None:
        if not in_window(note, self.spec, admit, self.source_timezone):
            result.dropped["outside_window"] += 1
            return
        work.append(_Work(note, index))

    async def _chunk(self, work: list[_Work], result: BatchResult) -> list[_Work]:
        """Clean and chunk the notes in a thread; a note whose cleaning or chunking fails is rejected."""

        def chunk_all() -> list[BaseException | None]:
            failures: list[BaseException | None] = []
            for w in work:
                try:
                    if not w.note.is_error:
                        w.chunks = note_chunks(w.note.text, self.spec, self.tokenizer)
                    failures.append(None)
                except Exception as exc:  # the failure table decides below, on the event loop
                    failures.append(exc)
            return failures

        if not any(not w.note.is_error for w in work):
            return work
        failures = await asyncio.to_thread(chunk_all)
        kept = []
        for w, exc in zip(work, failures, strict=True):
            if exc is None:
                kept.append(w)
                continue
            decision = decide(exc, step="process")
            if decision.fate != "dead_letter":
                raise exc
            detail = failure_detail(exc, step="process").replace("processing", "cleaning or chunking")
            result.rejected.append(Rejected(w.note, str(decision.reason), detail, w.index))
        return kept

    async def _admit_times(self, notes: Sequence[NoteEvent]) -> dict[Id, datetime]:
        """Admit times of the notes' admissions that the store knows (one look: nothing waits)."""
        wanted = list({n.hadm_id: None for n in notes})
        with self._timed("admission"):
            infos = await asyncio.gather(*(self.store.admission(h) for h in wanted))
        return {
            hadm: info.admit_time
            for hadm, info in zip(wanted, infos, strict=True)
            if info is not None and info.admit_time is not None
        }

    async def _known(self, hadm_ids: Sequence[Id]) -> set[Id]:
        """The admissions the store knows: an admission event, or notes applied."""
        wanted = list(dict.fromkeys(hadm_ids))
        with self._timed("admission"):
            infos = await asyncio.gather(*(self.store.admission(h) for h in wanted))
        unknown = [h for h, info in zip(wanted, infos, strict=True) if info is None]
        with self._timed("state"):
            states = await asyncio.gather(*(self.store.state(h) for h in unknown))
        seen = {h for h, state in zip(unknown, states, strict=True) if state is not None}
        return {h for h in wanted if h not in unknown} | seen

    async def _hold(self, work: list[_Work], result: BatchResult, record: Record | None = None) -> None:
        """Hold scored notes of unknown admissions in the store (probabilities and metadata, no text),
        then release those whose admission arrived meanwhile."""
        deadline = time.time() + self.admission_wait_s
        for w in work:
            entry = json.dumps(
                {
                    "note": w.note.model_copy(update={"text": ""}).model_dump(mode="json"),
                    "probs": w.probs,
                    "digest": content_hash(w.note.text),
                    "ref": w.ref,
                    "deadline": deadline,
                }
            )
            try:
                with self._timed("hold_note"):
                    await self.store.hold_note(w.note.hadm_id, entry, deadline)
            except StoreError as exc:
                if isinstance(exc, StoreUnavailable):
                    raise
                result.rejected.append(
                    Rejected(w.note, "admission_unknown", f"the note cannot wait: {exc}", w.index)
                )
                continue
            result.outcomes["held"] += 1
            result.changes.append(
                HeldChange(w.note.hadm_id, w.note.note_id, w.note.revision, entry, deadline)
            )
        for hadm in {w.note.hadm_id: None for w in work}:  # an admit recorded while these were held
            if record is not None and result.changes:
                await record(result.changes)  # the held records first: the release's settle them
                result.changes.clear()
            released = await self.release(hadm, record=record)
            result.updates.extend(released.updates)
            if record is None:
                result.changes.extend(released.changes)  # recorded in the changelog with the batch

    async def release(self, hadm_id: Id, *, record: Record | None = None) -> BatchResult:
        """Apply the notes held for ``hadm_id`` once its admit time is known (window test with it;
        outside: dropped and counted). Each held note is applied before it is dropped from the store,
        so a crash in between applies it again, which the store dedupes: counted exactly once.

        ``record`` (the store changelog) gets the release's changes (the notes as applied, and the
        ``settled`` records of the held ones) before the held entries are dropped: a crash in between
        leaves them held, so the redelivered admit releases and records them again, and the changelog
        never holds a released note as still waiting while it lacks the note itself."""
        result = BatchResult()
        with self._timed("admission"):
            info = await self.store.admission(hadm_id)
        if info is None or info.admit_time is None:
            return result
        with self._timed("held_notes"):
            records = await self.store.held_notes(hadm_id)
        if not records:
            return result
        work: list[_Work] = []
        for entry in records:
            data = json.loads(entry)
            note = NoteEvent.model_validate(data["note"], context={"source_timezone": self.source_timezone})
            settled = HeldChange(note.hadm_id, note.note_id, note.revision, "", 0.0, settled="released")
            if settled not in result.changes:
                result.changes.append(settled)  # the held record's key: a rebuild won't hold it again
            if note.is_error or in_window(note, self.spec, info.admit_time, self.source_timezone):
                held = _Work(
                    note, len(work), probs=[float(p) for p in data["probs"]], digest=data.get("digest")
                )
                work.append(held)
            else:
                result.dropped["outside_window"] += 1
        await self._apply(work, result)
        if record is not None:
            await record(result.changes)
        with self._timed("drop_held"):
            await self.store.drop_held(hadm_id, records)
        self.counters["released"] += len(records)
        self.counters.update({f"released_{k}": v for k, v in result.outcomes.items()})
        for reason, n in result.dropped.items():
            self.counters[f"dropped_{reason}"] += n
        return result

    async def expired(self, now: float | None = None, limit: int = 100) -> list[Expired]:
        """Held notes whose admission did not come within ``admission_wait_s``. The caller dead-letters
        each, then calls :meth:`forget` with it (so a crash in between dead-letters it again)."""
        with self._timed("due_held"):
            due = await self.store.due_held(time.time() if now is None else now, limit)
        out = []
        for hadm, record in due:
            data = json.loads(record)
            note = NoteEvent.model_validate(data["note"], context={"source_timezone": self.source_timezone})
            detail = (
                f"no admit event for admission {hadm} arrived within {self.admission_wait_s:g} s "
                "(settings.admission_wait_s); the note waited, scored, and was not counted"
            )
            out.append(Expired(note, dict(data.get("ref") or {}), detail, record))
        return out

    async def forget(self, expired: Sequence[Expired]) -> None:
        """Drop dead-lettered held notes from the store (see :meth:`expired`; the caller records their
        :attr:`Expired.settled` in the changelog first)."""
        for item in expired:
            await self.store.drop_held(item.note.hadm_id, [item.record])
            self.counters["rejected_admission_unknown"] += 1

    async def _score(self, work: list[_Work], result: BatchResult) -> None:
        if not any(w.chunks for w in work):
            return
        start = time.perf_counter()
        outcomes = await score_isolating(
            self.engine, [w.chunks for w in work], note_failure=_one_notes_failure, canary=CANARY
        )
        result.engine_s += time.perf_counter() - start
        for w, outcome in zip(list(work), outcomes, strict=True):
            if isinstance(outcome, Exception):
                work.remove(w)
                detail = failure_detail(outcome, step="process").replace("processing", "scoring")
                reason = str(decide(outcome, step="process").reason)
                result.rejected.append(Rejected(w.note, reason, detail, w.index))
            else:
                w.probs = outcome
                result.chunks += len(outcome)

    async def _apply(self, work: list[_Work], result: BatchResult) -> None:
        by_admission: dict[Id, list[_Work]] = {}
        for w in work:
            by_admission.setdefault(w.note.hadm_id, []).append(w)

        async def apply_admission(items: list[_Work]) -> list[RiskUpdate]:
            out = []
            for w in items:  # batch order within one admission: revisions stay ordered
                note = w.note
                digest = None if note.is_error else (w.digest or content_hash(note.text))
                with self._timed("apply_note"):
                    res = await self.store.apply_note(
                        hadm_id=note.hadm_id,
                        subject_id=note.subject_id,
                        note_id=note.note_id,
                        revision=note.revision,
                        is_error=note.is_error,
                        chunk_probs=w.probs,
                        note_time=note.event_time(),
                        content_hash=digest,
                    )
                result.outcomes[res.reason] += 1
                if res.reason in CHANGELOG_REASONS:
                    result.changes.append(
                        note_change(note, w.probs, digest, res.state.seq if res.state else 0)
                    )
                if res.reason == "conflict":
                    result.rejected.append(Rejected(note, "conflict", conflict_detail(note), w.index))
                    continue
                if res.state is None:
                    continue
                # not applied: a redelivered note (after a crash between store write and emit) announces
                # the current state again, same seq and no change, so no applied change goes unannounced
                if res.applied or self.reemit_unchanged:
                    out.append(
                        update_from_state(
                            res.state,
                            spec=self.spec,
                            model=self.model,
                            trigger=note,
                            change=res.reason if res.applied else None,
                            fingerprint=self.fingerprint,
                        )
                    )
            return out

        for updates in await asyncio.gather(*(apply_admission(items) for items in by_admission.values())):
            result.updates.extend(updates)

    def _timed(self, op: str) -> AbstractContextManager[None]:
        return self.metrics.store_timer(op) if self.metrics is not None else contextlib.nullcontext()

    # --- admissions -------------------------------------------------------------------------------
    async def admission(
        self, event: AdmissionEvent, changes: list[NoteChange | AdmissionChange] | None = None
    ) -> RiskUpdate | None:
        """Record an admit or discharge; the first discharge of an admission with notes gives its final
        update (the store raised its ``seq``); a repeated discharge gives nothing. ``changes``, when
        given, receives the :class:`~notestream.stream.store.changelog.AdmissionChange` for the store changelog.

        The kinds EHR feeds add: an ``update`` that carries an admit time is recorded as an admit (the
        corrected time replaces the stored one), one without is counted only; ``cancel_admit`` and
        ``cancel_discharge`` are counted (``admission_<kind>``) and logged, and the store is left as it
        is: a store never takes back a discharge or an admission's probabilities."""
        if event.kind in ("cancel_admit", "cancel_discharge") or (
            event.kind == "update" and event.admit_time is None
        ):
            self.counters[f"admission_{event.kind}"] += 1
            if event.kind != "update":
                log.warning(
                    "Admission %s: %s recorded but not applied (the store keeps its admission record)",
                    event.hadm_id,
                    event.kind,
                )
            return None
        if event.kind == "update":
            self.counters["admission_update"] += 1
            event = event.model_copy(update={"kind": "admit", "discharge_time": None})
            with self._timed("record_admission"):
                await self.store.record_admission(event)
            if changes is not None:
                changes.append(AdmissionChange(event, 0))  # an admit leaves seq alone
            return None
        with self._timed("record_admission"):
            info = await self.store.record_admission(event)
        self.counters[f"admission_{event.kind}"] += 1
        if event.kind != "discharge" or (not info.applied and changes is None):
            if changes is not None:
                changes.append(AdmissionChange(event, 0))  # an admit leaves seq alone
            return None
        with self._timed("state"):
            state = await self.store.state(event.hadm_id)
        if changes is not None:
            changes.append(AdmissionChange(event, state.seq if state is not None else 0))
        if not info.applied:
            return None
        if state is None or state.n_notes == 0:
            return None
        return update_from_state(
            state,
            spec=self.spec,
            model=self.model,
            change="discharge",
            produced_at=event.produced_at,
            subject_id=event.subject_id,
            fingerprint=self.fingerprint,
        )


def _one_notes_failure(exc: Exception) -> bool:
    """Whether an engine failure may be one note's (the failure table says dead letter), not the
    engine's, the device's or the queue's."""
    return decide(exc, step="process").fate == "dead_letter"


CHANGELOG_REASONS = frozenset({"new", "revision", "retracted", "duplicate"})
"""Store outcomes after which the store holds the note as it came: each gives a changelog record."""


def note_change(note: NoteEvent, probs: Sequence[float], digest: str | None, seq: int) -> NoteChange:
    """The changelog's view of a note the store holds (probabilities and content hash, never text)."""
    return NoteChange(
        hadm_id=note.hadm_id,
        subject_id=note.subject_id,
        note_id=note.note_id,
        revision=note.revision,
        is_error=note.is_error,
        probs=() if note.is_error else tuple(probs),
        digest=digest or "",
        note_time=note.event_time(),
        seq=seq,
    )


def conflict_detail(note: NoteEvent) -> str:
    """The dead-letter detail of a note whose id and revision the store holds with other content
    (ids and the revision only, never text).

    >>> conflict_detail(NoteEvent(note_id="7", subject_id=1, hadm_id=2, revision=3, text="x"))
    'admission 2 already holds note 7 revision 3 with different content; send a higher revision to replace it'
    """
    return (
        f"admission {note.hadm_id} already holds note {note.note_id} revision {note.revision} with "
        "different content; send a higher revision to replace it"
    )


def in_window(note: NoteEvent, spec: ModelSpec, admit: datetime | None = None, tz: tzinfo = UTC) -> bool:
    """Whether the model scores this note: :func:`notestream.models.ledger.window_verdict` with the
    note's own admit time, else ``admit`` (the store's admission record); naive times are read in ``tz``.

    >>> from notestream.models.spec import Window
    >>> note = NoteEvent(note_id="1", subject_id=1, hadm_id=2, text="", chart_time=datetime(2150, 1, 2))
    >>> spec = ModelSpec(window=Window(kind="hours", value=24))
    >>> in_window(note, spec, datetime(2150, 1, 1, 1)), in_window(note, spec, datetime(2150, 1, 1))
    (True, False)
    """
    verdict = window_verdict(
        spec,
        admit=note.admit_time if note.admit_time is not None else admit,
        chart_time=note.chart_time,
        chart_date=note.chart_date,
        category=note.category,
        tz=tz,
    )
    return verdict is None


def latency_ms(update: RiskUpdate, *, now: datetime | None = None) -> float | None:
    """Milliseconds from the triggering event's production to ``now`` (default: the emit time)."""
    if update.produced_at is None:
        return None
    end = now if now is not None else (update.emitted_at or utcnow())
    return (end - update.produced_at).total_seconds() * 1000.0
