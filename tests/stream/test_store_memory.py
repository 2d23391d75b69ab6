"""What only the memory store has: snapshot to and restore from a JSON file."""

from __future__ import annotations

import random
from datetime import datetime
from pathlib import Path

import pytest

from stream.errors import StoreError
from stream.events import AdmissionEvent
from stream.store import MemoryRiskStore


async def test_snapshot_round_trip_is_exact(tmp_path: Path) -> None:
    store = MemoryRiskStore()
    rng = random.Random(0)
    for hadm in (1, 2):
        await store.record_admission(
            AdmissionEvent(kind="admit", subject_id=hadm, hadm_id=hadm, admit_time=datetime(2150, 1, hadm))
        )
        for i in range(20):
            await store.apply_note(
                hadm_id=hadm,
                subject_id=hadm,
                note_id=str(i),
                revision=0,
                is_error=False,
                chunk_probs=[rng.random() for _ in range(3)],
            )
        await store.apply_note(
            hadm_id=hadm, subject_id=hadm, note_id="3", revision=1, is_error=True, chunk_probs=[]
        )
    await store.record_admission(
        AdmissionEvent(kind="discharge", subject_id=2, hadm_id=2, discharge_time=datetime(2150, 2, 1))
    )
    path = store.snapshot(tmp_path / "run" / "store.json")
    again = MemoryRiskStore.restore(path)
    assert await again.hadm_ids() == [1, 2]
    for hadm in (1, 2):
        assert await again.state(hadm) == await store.state(hadm)
        assert await again.note_probs(hadm) == await store.note_probs(hadm)
        assert await again.admission(hadm) == await store.admission(hadm)
    late = await again.apply_note(
        hadm_id=1, subject_id=1, note_id="3", revision=0, is_error=False, chunk_probs=[0.5]
    )
    assert late.reason == "stale"  # tombstones survive the snapshot


def test_restoring_a_bad_file_says_what_to_do(tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text('{"version": 99}')
    with pytest.raises(StoreError, match="snapshot"):
        MemoryRiskStore.restore(bad)
    with pytest.raises(StoreError):
        MemoryRiskStore.restore(tmp_path / "missing.json")
