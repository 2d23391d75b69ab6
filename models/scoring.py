"""Offline scoring: MIMIC-format notes -> one score per admission, through the inference engine.

This is the stream's computation without Kafka: every note the model's window admits (ISERROR notes and
notes without an admission are skipped) is cleaned and chunked on its own with
:func:`notestream.models.prep.note_chunks`, its chunks are scored by the engine, and an admission's chunk
probabilities are aggregated with :class:`notestream.models.aggregate.AggregateState`, exactly as the worker
applies notes to the store. So the final streamed score of an admission equals its offline score.

Windows: ``all`` and ``discharge`` need only the notes (``discharge`` takes every discharge summary of
the admission, as the stream does; the reference training data keeps only the last one). ``days`` and
``hours`` windows need each admission's ADMITTIME, from the admissions table.

Admissions whose admitted notes give no chunk (10 words or fewer) have no score and are left out, as in
the reference task. A note whose inference fails (its engine batch failed) is tried again on its own;
when it fails again its admission is reported in :attr:`ScoreRun.failed` and left out of the scores (a
score missing a note would be silently wrong), and scoring goes on. MIMIC files are read into
:class:`NoteRecord` by :mod:`notestream.mimic.notes`.
"""

from __future__ import annotations

import asyncio
import csv
import itertools
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from notestream.models.aggregate import AggregateState
from notestream.models.calibration import calibrated_risk
from notestream.models.errors import ModelsError
from notestream.models.isolation import score_isolating
from notestream.models.ledger import AdmissionLedger, window_verdict
from notestream.models.prep import note_chunks

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

    from notestream.models.engine import InferenceEngine
    from notestream.models.spec import ModelSpec

SCORE_COLUMNS = ("HADM_ID", "SUBJECT_ID", "score", "p_max", "p_mean", "n_chunks", "n_notes", "risk")


@dataclass(frozen=True)
class NoteRecord:
    """One note as the scorer needs it (text is PHI: never logged). ``note_id`` and ``revision`` follow
    :mod:`notestream.models.ledger`; a record without a note id is a note of its own."""

    subject_id: int
    hadm_id: int | None
    category: str | None
    chart_date: date | None
    chart_time: datetime | None
    text: str | None
    is_error: bool = False
    note_id: str | None = None
    revision: int = 0


@dataclass(frozen=True)
class AdmissionScore:
    hadm_id: int
    subject_id: int
    score: float
    p_max: float
    p_mean: float
    n_chunks: int
    n_notes: int
    risk: float | None = None
    """The calibrated probability (:func:`notestream.models.calibration.calibrated_risk`); None without a calibrator."""


@dataclass
class ScoreRun:
    """Per-admission scores and what was skipped on the way."""

    scores: list[AdmissionScore]
    notes_read: int = 0
    notes_scored: int = 0
    skipped: dict[str, int] = field(default_factory=dict)
    chunks: int = 0
    failed: dict[int, AdmissionFailure] = field(default_factory=dict)
    """Admissions left out because the inference of one of their notes failed twice."""


@dataclass
class AdmissionFailure:
    """Why an admission has no score: its notes whose inference failed, and the last error (no text)."""

    subject_id: int
    notes_failed: int
    error: str


@dataclass
class _Slot:
    """A live note of the ledger: its subject, and its chunk probabilities once scored (or its error)."""

    subject_id: int
    probs: list[float] = field(default_factory=list)
    error: str | None = None


def _skip_reason(note: NoteRecord, spec: ModelSpec, admit_times: Mapping[int, datetime] | None) -> str | None:
    if note.hadm_id is None:
        return "no_admission"
    if note.is_error:
        return None  # a retraction: it goes to the ledger
    admit = admit_times.get(note.hadm_id) if admit_times is not None else None
    return window_verdict(
        spec, admit=admit, chart_time=note.chart_time, chart_date=note.chart_date, category=note.category
    )


async def score_notes(
    engine: InferenceEngine,
    notes: Iterable[NoteRecord],
    *,
    spec: ModelSpec | None = None,
    admit_times: Mapping[int, datetime] | None = None,
    tokenizer: PreTrainedTokenizerBase | None = None,
    notes_in_flight: int = 64,
    on_note: Callable[[int], None] | None = None,
) -> ScoreRun:
    """Score ``notes`` per admission. ``on_note(n_chunks)`` is called after each note read.

    Which notes count follows :mod:`notestream.models.ledger`, as in the stream: the model's window,
    the latest revision of each note, retractions (``is_error``) removing their note; a note without an
    admission is skipped. Notes are applied in the order given. The notes iterator is advanced in a worker thread (it may read files), cleaning and chunking run in
    threads too, and at most ``notes_in_flight`` notes wait on the engine at once (bounded memory).
    """
    spec = spec if spec is not None else engine.spec
    if tokenizer is None and spec.chunking.kind == "tokens":
        tokenizer = engine.classifiers[0].tokenizer
    if spec.window.kind in ("days", "hours") and admit_times is None:
        raise ModelsError(
            f"This model scores notes in a {spec.window.kind} window after admission; pass the admissions "
            "table (--admissions) so that each admission's ADMITTIME is known."
        )
    ledger = AdmissionLedger[int, _Slot]()
    run = ScoreRun(scores=[])
    gate = asyncio.Semaphore(notes_in_flight)

    def skip(reason: str) -> None:
        run.skipped[reason] = run.skipped.get(reason, 0) + 1

    async def one(note: NoteRecord, slot: _Slot) -> None:
        try:
            chunks = await asyncio.to_thread(note_chunks, note.text, spec, tokenizer)
            (outcome,) = await score_isolating(engine, [chunks])
        finally:
            gate.release()
        if isinstance(outcome, Exception):
            slot.error = str(outcome)
            skip("inference_failed")
            if on_note is not None:
                on_note(0)
            return
        slot.probs = outcome
        if slot.probs:
            run.notes_scored += 1
            run.chunks += len(slot.probs)
        else:
            skip("no_chunks")
        if on_note is not None:
            on_note(len(slot.probs))

    iterator = iter(notes)
    try:
        async with asyncio.TaskGroup() as group:
            while True:
                block = await asyncio.to_thread(lambda: list(itertools.islice(iterator, 256)))
                if not block:
                    break
                for note in block:
                    run.notes_read += 1
                    reason = _skip_reason(note, spec, admit_times)
                    slot = _Slot(note.subject_id)
                    if reason is None:
                        assert note.hadm_id is not None
                        note_id = note.note_id if note.note_id is not None else f"#{run.notes_read}"
                        outcome = ledger.apply(note.hadm_id, note_id, note.revision, note.is_error, slot)
                        reason = "is_error" if note.is_error else _UNCHANGED.get(outcome)
                    if reason is not None:
                        skip(reason)
                        if on_note is not None:
                            on_note(0)
                        continue
                    await gate.acquire()
                    group.create_task(one(note, slot))
    except ExceptionGroup as group_error:  # the first failure (a BatchFailed, a TableError) is the story
        raise group_error.exceptions[0] from None
    for hadm_id in sorted(ledger.admissions()):
        live = list(ledger.live(hadm_id).values())
        failed = [slot for slot in live if slot.error is not None]
        if failed:
            run.failed[hadm_id] = AdmissionFailure(failed[0].subject_id, len(failed), failed[-1].error or "")
            continue
        scored = [slot for slot in live if slot.probs]
        state = AggregateState()
        for slot in scored:
            for p in slot.probs:
                state.add(p)
        score, p_max, p_mean = state.score(spec.c), state.p_max, state.p_mean
        if score is None or p_max is None or p_mean is None:  # no chunk: no score, as in the reference
            continue
        run.scores.append(
            AdmissionScore(
                hadm_id,
                scored[0].subject_id,
                score,
                p_max,
                p_mean,
                state.n,
                len(scored),
                calibrated_risk(spec.calibration, score),
            )
        )
    return run


_UNCHANGED = {"duplicate": "duplicate", "stale": "stale"}
"""Ledger outcomes that change nothing, counted as skipped."""


def write_failures(failed: Mapping[int, AdmissionFailure], path: str | Path) -> Path:
    """Write the admissions left out for failed inference (HADM_ID, SUBJECT_ID, notes_failed, error)."""
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(("HADM_ID", "SUBJECT_ID", "notes_failed", "error"))
        for hadm_id in sorted(failed):
            f = failed[hadm_id]
            writer.writerow([hadm_id, f.subject_id, f.notes_failed, f.error])
    return out


def write_scores(scores: Iterable[AdmissionScore], path: str | Path) -> Path:
    """Write the per-admission scores CSV (columns :data:`SCORE_COLUMNS`)."""
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(SCORE_COLUMNS)
        for s in scores:
            writer.writerow(
                [
                    s.hadm_id,
                    s.subject_id,
                    repr(s.score),
                    repr(s.p_max),
                    repr(s.p_mean),
                    s.n_chunks,
                    s.n_notes,
                    "" if s.risk is None else repr(s.risk),
                ]
            )
    return out
