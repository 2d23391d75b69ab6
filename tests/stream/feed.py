"""A small synthetic feed for the stream tests, and the offline score it must stream to."""

from __future__ import annotations

import random
from collections.abc import Iterable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from notestream.models.aggregate import admission_score
from notestream.models.build import clinical_corpus
from notestream.models.ledger import AdmissionLedger
from notestream.models.prep import note_chunks
from notestream.models.spec import ModelSpec
from notestream.stream.events import AdmissionEvent, NoteEvent, RiskUpdate
from notestream.stream.ids import Id
from notestream.stream.pipeline import in_window
from notestream.stream.store import RedisRiskStore

ADMIT = datetime(2150, 1, 1, 8, 0)


def feed(
    n_admissions: int, notes_per_admission: int, *, seed: int = 0, first_hadm: int = 100_000
) -> tuple[list[AdmissionEvent], list[NoteEvent]]:
    """Admit events and notes (one in five notes shorter than 11 words: no chunk)."""
    rng = random.Random(seed)
    texts = clinical_corpus(n_admissions * notes_per_admission, seed=seed, sentences=(2, 60))
    admissions, notes = [], []
    for a in range(n_admissions):
        hadm, subject = first_hadm + a, 10_000 + a
        admit = ADMIT + timedelta(days=a)
        admissions.append(AdmissionEvent(kind="admit", subject_id=subject, hadm_id=hadm, admit_time=admit))
        for k in range(notes_per_admission):
            text = texts[a * notes_per_admission + k]
            if rng.random() < 0.2:
                text = " ".join(text.split()[:8])
            notes.append(
                NoteEvent(
                    note_id=f"{hadm}-{k}",
                    subject_id=subject,
                    hadm_id=hadm,
                    category="Nursing",
                    chart_time=admit + timedelta(hours=3 * k + 1),
                    text=text,
                    source="test",
                )
            )
    return admissions, notes


def discharges(admissions: Iterable[AdmissionEvent]) -> list[AdmissionEvent]:
    return [
        AdmissionEvent(
            kind="discharge",
            subject_id=a.subject_id,
            hadm_id=a.hadm_id,
            admit_time=a.admit_time,
            discharge_time=(a.admit_time or ADMIT) + timedelta(days=5),
        )
        for a in admissions
    ]


class OfflineScorer:
    """The offline reference: each note's chunks through the classifier directly, then aggregated."""

    def __init__(self, model_dir: Path) -> None:
        from notestream.models.checkpoint import load_model_folder
        from notestream.models.classifier import ChunkClassifier

        loaded = load_model_folder(model_dir)
        self.spec: ModelSpec = loaded.spec
        self.classifier = ChunkClassifier(loaded, "cpu")
        self.tokenizer = loaded.tokenizer

    def note_probs(self, text: str) -> list[float]:
        chunks = note_chunks(text, self.spec, self.tokenizer)
        return [float(p) for p in self.classifier.predict(chunks)] if chunks else []

    def scores(self, notes: Iterable[NoteEvent]) -> dict[int | str, float | None]:
        """Final score per admission of the live notes (the ledger's rule: latest revision, retractions
        removed, the model's window)."""
        ledger = AdmissionLedger[int | str, NoteEvent]()
        for note in notes:
            if note.is_error or in_window(note, self.spec):
                ledger.apply(note.hadm_id, note.note_id, note.revision, note.is_error, note)
        out: dict[int | str, float | None] = {}
        for hadm in ledger.admissions():
            probs = [p for note in ledger.live(hadm).values() for p in self.note_probs(note.text)]
            out[hadm] = admission_score(probs, self.spec.c) if probs else None
        return out


def final_updates(messages: list[Any]) -> dict[Id, RiskUpdate]:
    """The last update (highest seq) of each admission among confluent-kafka messages."""
    last: dict[Id, RiskUpdate] = {}
    for msg in messages:
        update = RiskUpdate.from_bytes(msg.value())
        if update.hadm_id not in last or update.seq >= last[update.hadm_id].seq:
            last[update.hadm_id] = update
    return last


async def assert_store_matches_offline(
    redis_url: str,
    model_dir: Path,
    admissions: list[AdmissionEvent],
    notes: list[NoteEvent],
    *,
    notes_per_admission: int,
    discharged: bool = False,
) -> None:
    """Exactly once in the aggregates: every admission's Redis state counts each of its notes once and
    its score is the offline score of those notes."""
    offline = OfflineScorer(model_dir).scores(notes)
    store = RedisRiskStore(redis_url)
    try:
        for a in admissions:
            state = await store.state(a.hadm_id)
            assert state is not None, f"admission {a.hadm_id} is missing"
            assert state.n_notes == notes_per_admission
            assert len(await store.note_probs(a.hadm_id)) == notes_per_admission
            if discharged:
                assert state.discharged
            score, expect = state.score(2.0), offline[a.hadm_id]
            assert (score is None) == (expect is None)
            if score is not None and expect is not None:
                assert score == pytest.approx(expect, abs=1e-6)
    finally:
        await store.close()
