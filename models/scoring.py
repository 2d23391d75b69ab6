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
score missing a note would be silently wrong), and scoring goes on. :func:`read_notes` / :func:`read_admit_times` read MIMIC-III NOTEEVENTS and
MIMIC-IV-Note discharge / radiology files through :mod:`notestream.mimic.tables`.
"""

from __future__ import annotations

import asyncio
import csv
import itertools
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from notestream.models.aggregate import AggregateState
from notestream.models.errors import BatchFailed, ModelsError
from notestream.models.prep import note_chunks
from notestream.models.spec import DISCHARGE_CATEGORY

if TYPE_CHECKING:
    import pandas as pd
    from transformers import PreTrainedTokenizerBase

    from notestream.models.engine import InferenceEngine
    from notestream.models.spec import ModelSpec

SCORE_COLUMNS = ("HADM_ID", "SUBJECT_ID", "score", "p_max", "p_mean", "n_chunks", "n_notes")
MIMIC_IV_CATEGORIES = {
    "DS": DISCHARGE_CATEGORY,
    "AD": DISCHARGE_CATEGORY,
    "RR": "Radiology",
    "AR": "Radiology",
}


@dataclass(frozen=True)
class NoteRecord:
    """One note as the scorer needs it (text is PHI: never logged)."""

    subject_id: int
    hadm_id: int | None
    category: str | None
    chart_date: date | None
    chart_time: datetime | None
    text: str | None
    is_error: bool = False


@dataclass(frozen=True)
class AdmissionScore:
    hadm_id: int
    subject_id: int
    score: float
    p_max: float
    p_mean: float
    n_chunks: int
    n_notes: int


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
class _Admission:
    subject_id: int
    state: AggregateState = field(default_factory=AggregateState)
    n_notes: int = 0


def _skip_reason(note: NoteRecord, spec: ModelSpec, admit_times: Mapping[int, datetime] | None) -> str | None:
    if note.is_error:
        return "is_error"
    if note.hadm_id is None:
        return "no_admission"
    admit = admit_times.get(note.hadm_id) if admit_times is not None else None
    if spec.window.kind in ("days", "hours") and admit is None:
        return "admission_unknown"
    if not spec.window.admits(
        admit=admit, chart_time=note.chart_time, chart_date=note.chart_date, category=note.category
    ):
        return "outside_window"
    return None


async def score_notes(
    engine: InferenceEngine,
    notes: Iterable[NoteRecord],
    *,
    spec: ModelSpec | None = None,
    admit_times: Mapping[int, datetime] | None = None,
    tokenizer: PreTrainedTokenizerBase | None = None,
    notes_in_flight: int = 64,
    on_note: Callable[[int], None] | None = None,
    retry_delay_s: float = 0.1,
) -> ScoreRun:
    """Score ``notes`` (any order) per admission. ``on_note(n_chunks)`` is called after each note read.

    The notes iterator is advanced in a worker thread (it may read files), cleaning and chunking run in
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
    admissions: dict[int, _Admission] = {}
    run = ScoreRun(scores=[])
    gate = asyncio.Semaphore(notes_in_flight)

    async def infer(chunks: list[str]) -> list[float]:
        try:
            return list(await engine.score(chunks))
        except BatchFailed:
            # the batch may have failed for another note's sake: once more, in batches of its own
            await asyncio.sleep(retry_delay_s)
            return list(await engine.score(chunks, isolated=True))

    async def one(note: NoteRecord, hadm_id: int) -> None:
        try:
            chunks = await asyncio.to_thread(note_chunks, note.text, spec, tokenizer)
            probs = await infer(chunks) if chunks else []
        except BatchFailed as exc:
            failure = run.failed.setdefault(hadm_id, AdmissionFailure(note.subject_id, 0, ""))
            failure.notes_failed += 1
            failure.error = str(exc)
            run.skipped["inference_failed"] = run.skipped.get("inference_failed", 0) + 1
            if on_note is not None:
                on_note(0)
            return
        finally:
            gate.release()
        if probs:
            adm = admissions.setdefault(hadm_id, _Admission(note.subject_id))
            for p in probs:
                adm.state.add(p)
            adm.n_notes += 1
            run.notes_scored += 1
            run.chunks += len(probs)
        else:
            run.skipped["no_chunks"] = run.skipped.get("no_chunks", 0) + 1
        if on_note is not None:
            on_note(len(probs))

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
                    if reason is not None:
                        run.skipped[reason] = run.skipped.get(reason, 0) + 1
                        if on_note is not None:
                            on_note(0)
                        continue
                    assert note.hadm_id is not None
                    await gate.acquire()
                    group.create_task(one(note, note.hadm_id))
    except ExceptionGroup as group_error:  # the first failure (a BatchFailed, a TableError) is the story
        raise group_error.exceptions[0] from None
    for hadm_id in sorted(admissions.keys() - run.failed.keys()):
        adm = admissions[hadm_id]
        score, p_max, p_mean = adm.state.score(spec.c), adm.state.p_max, adm.state.p_mean
        if score is None or p_max is None or p_mean is None:  # pragma: no cover - held chunks
            continue
        run.scores.append(
            AdmissionScore(hadm_id, adm.subject_id, score, p_max, p_mean, adm.state.n, adm.n_notes)
        )
    return run


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
                [s.hadm_id, s.subject_id, repr(s.score), repr(s.p_max), repr(s.p_mean), s.n_chunks, s.n_notes]
            )
    return out


# --- MIMIC files ------------------------------------------------------------------------------------
def _value(x: Any) -> Any:
    """pandas missing values (NaN, NaT, NA) -> None."""
    from notestream.models.text import is_missing

    return None if is_missing(x) else x


def _when(x: Any) -> datetime | None:
    value = _value(x)
    return value.to_pydatetime() if hasattr(value, "to_pydatetime") else value


def _records(frame: pd.DataFrame, mimic_iv: bool) -> Iterator[NoteRecord]:
    row: Any
    for row in frame.itertuples(index=False):
        chart_time = _when(row.CHARTTIME)
        hadm = _value(row.HADM_ID)
        if mimic_iv:
            category = MIMIC_IV_CATEGORIES.get(str(row.NOTE_TYPE).strip().upper(), "Radiology")
            chart_date = chart_time.date() if chart_time is not None else None
            is_error = False
        else:
            category = _value(row.CATEGORY)
            day = _when(row.CHARTDATE)
            chart_date = day.date() if isinstance(day, datetime) else day
            is_error = str(_value(row.ISERROR) or "").strip() in {"1", "1.0"}
        yield NoteRecord(
            subject_id=int(row.SUBJECT_ID),
            hadm_id=int(hadm) if hadm is not None else None,
            category=category,
            chart_date=chart_date,
            chart_time=chart_time,
            text=_value(row.TEXT),
            is_error=is_error,
        )


def read_notes(path: str | Path, *, batch_rows: int = 2048) -> Iterator[NoteRecord]:
    """Notes of a MIMIC-III NOTEEVENTS or MIMIC-IV-Note discharge / radiology CSV(.gz), in file order."""
    from notestream.mimic.tables import iter_table, read_header

    header = {c.upper() for c in read_header(path)}
    mimic_iv = "NOTE_TYPE" in header
    columns = ["SUBJECT_ID", "HADM_ID", "CHARTTIME", "TEXT"]
    columns += ["NOTE_TYPE"] if mimic_iv else ["CHARTDATE", "CATEGORY", "ISERROR"]
    for frame in iter_table(path, columns, batch_rows=batch_rows):
        yield from _records(frame, mimic_iv)


def read_admit_times(path: str | Path) -> dict[int, datetime]:
    """HADM_ID -> ADMITTIME from a MIMIC-III or MIMIC-IV admissions CSV(.gz)."""
    from notestream.mimic.tables import iter_table

    out: dict[int, datetime] = {}
    for frame in iter_table(
        path, ["HADM_ID", "ADMITTIME"], where="HADM_ID IS NOT NULL AND ADMITTIME IS NOT NULL"
    ):
        row: Any
        for row in frame.itertuples(index=False):
            admit = _when(row.ADMITTIME)
            if admit is not None:
                out[int(row.HADM_ID)] = admit
    return out
