"""What only the memory store has: snapshot, restore, and the crash-safe journal."""

from __future__ import annotations

import asyncio
import math
import random
import signal
import subprocess
import sys
from datetime import datetime
from pathlib import Path

import pytest

from notestream.core.settings import Settings
from notestream.stream.errors import StoreError
from notestream.stream.events import AdmissionEvent
from notestream.stream.store import MemoryRiskStore, open_store


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


async def fill(store: MemoryRiskStore) -> None:
    rng = random.Random(1)
    await store.record_admission(
        AdmissionEvent(
            kind="admit", subject_id=5, hadm_id=9, admit_time=datetime(2150, 1, 1), admission_type="URGENT"
        )
    )
    for i in range(30):
        await store.apply_note(
            hadm_id=9 + i % 3,
            subject_id=5,
            note_id=str(i % 12),
            revision=i // 12,
            is_error=i % 7 == 6,
            chunk_probs=[rng.random() for _ in range(i % 4)],
        )
    await store.record_admission(
        AdmissionEvent(kind="discharge", subject_id=5, hadm_id=9, discharge_time=datetime(2150, 1, 9))
    )


async def same(a: MemoryRiskStore, b: MemoryRiskStore) -> None:
    assert await a.hadm_ids() == await b.hadm_ids()
    for hadm in await a.hadm_ids():
        assert await a.state(hadm) == await b.state(hadm)
        assert await a.note_probs(hadm) == await b.note_probs(hadm)
        assert await a.admission(hadm) == await b.admission(hadm)


async def test_journal_survives_a_restart_and_is_compacted(tmp_path: Path) -> None:
    path = tmp_path / "state" / "store.jsonl"
    store = MemoryRiskStore(journal=path)
    await fill(store)
    reference = MemoryRiskStore()
    await fill(reference)
    await same(store, reference)
    await store.close()
    assert len(path.read_text().splitlines()) > 30
    again = MemoryRiskStore(journal=path)
    await same(again, reference)
    assert len(path.read_text().splitlines()) == 1  # compacted into one snapshot line
    late = await again.apply_note(
        hadm_id=9, subject_id=5, note_id="0", revision=0, is_error=False, chunk_probs=[0.5]
    )
    assert late.reason == "stale"
    await again.close()
    await same(MemoryRiskStore.restore(path), again)


async def test_the_model_claim_survives_journal_snapshot_and_restore(tmp_path: Path) -> None:
    path = tmp_path / "store.jsonl"
    store = MemoryRiskStore(journal=path)
    await store.claim("v1@aaaa")
    await fill(store)
    await store.close()
    again = MemoryRiskStore(journal=path)  # replayed from the journal, then compacted
    assert await again.claim("v2@bbbb") == "v1@aaaa"
    await again.close()
    again = MemoryRiskStore(journal=path)  # from the compacted snapshot line
    assert await again.claim("v2@bbbb") == "v1@aaaa"
    snapshot = again.snapshot(tmp_path / "snap.json")
    assert await MemoryRiskStore.restore(snapshot).claim("v2@bbbb") == "v1@aaaa"
    assert await MemoryRiskStore.restore(path).claim("v2@bbbb") == "v1@aaaa"
    await again.close()


def test_journal_keeps_every_change_through_sigkill(tmp_path: Path) -> None:
    path = tmp_path / "store.jsonl"
    code = f"""
import asyncio, os, signal
from notestream.core.settings import Settings
from notestream.stream.store import MemoryRiskStore, open_store
async def main():
    store = MemoryRiskStore(journal={str(path)!r})
    for i in range(200):
        await store.apply_note(hadm_id=1, subject_id=2, note_id=str(i), revision=0, is_error=False, chunk_probs=[i / 200])
    os.kill(os.getpid(), signal.SIGKILL)
asyncio.run(main())
"""
    proc = subprocess.run([sys.executable, "-c", code], cwd=Path(__file__).parents[2], capture_output=True)
    assert proc.returncode == -signal.SIGKILL
    with path.open("a") as fh:
        fh.write('{"op": "note", "t": 1, "hadm_id": 1, "subj')  # a write cut short by the kill
    store = MemoryRiskStore(journal=path)
    state = asyncio.run(store.state(1))
    assert state is not None
    assert (state.n_notes, state.seq, state.p_sum) == (200, 200, math.fsum(i / 200 for i in range(200)))


def test_a_corrupt_journal_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "store.jsonl"
    path.write_text(
        '{"op": "snapshot", "data": {"version": 1, "admissions": {}}}\nnot json\n{"op": "note"}\n'
    )
    with pytest.raises(StoreError, match="line 2"):
        MemoryRiskStore(journal=path)


def test_open_store_gives_a_journaled_memory_store(tmp_path: Path) -> None:
    store = open_store(Settings(store=f"memory://{tmp_path}/s.jsonl"))
    assert isinstance(store, MemoryRiskStore)
    assert store.journal_path == tmp_path / "s.jsonl"
    assert (tmp_path / "s.jsonl").exists()


async def test_held_notes_survive_a_restart_from_the_journal(tmp_path: Path) -> None:
    path = tmp_path / "store.jsonl"
    store = MemoryRiskStore(journal=path)
    await store.hold_note("V-1", '{"n": 1}', deadline=10.0)
    await store.hold_note("V-1", '{"n": 2}', deadline=20.0)
    await store.drop_held("V-1", ['{"n": 1}'])
    await store.close()
    again = MemoryRiskStore(journal=path)  # replays, then compacts into a snapshot and hold lines
    assert await again.held_notes("V-1") == ['{"n": 2}']
    await again.close()
    third = MemoryRiskStore(journal=path)
    assert await third.due_held(now=30.0) == [("V-1", '{"n": 2}')]
    await third.close()
