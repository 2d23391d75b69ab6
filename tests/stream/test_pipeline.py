"""The pipeline without Kafka: real engine (tiny model), real in-memory store."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from notestream.models.engine import InferenceEngine
from notestream.models.spec import ModelSpec, Window
from notestream.stream.errors import StoreUnavailable
from notestream.stream.events import NoteEvent
from notestream.stream.pipeline import Pipeline, in_window
from notestream.stream.store import MemoryRiskStore, RedisRiskStore
from tests.stream.feed import ADMIT, OfflineScorer, discharges, feed


@pytest.fixture(scope="module")
def offline(tiny_model_dir: Path) -> OfflineScorer:
    return OfflineScorer(tiny_model_dir)


@pytest.fixture
async def engine(tiny_model_dir: Path) -> AsyncIterator[InferenceEngine]:
    eng = InferenceEngine(tiny_model_dir, devices=["cpu"], max_wait_ms=1.0)
    await eng.start()
    yield eng
    await eng.close()


def make_pipeline(engine: InferenceEngine, spec: ModelSpec | None = None, **kw: object) -> Pipeline:
    return Pipeline(engine, MemoryRiskStore(), spec or engine.spec, model="tiny", **kw)  # type: ignore[arg-type]


async def test_streamed_scores_equal_offline_scores(engine: InferenceEngine, offline: OfflineScorer) -> None:
    _, notes = feed(4, 5, seed=1)
    pipeline = make_pipeline(engine)
    last = {}
    for start in range(0, len(notes), 7):  # batches that mix admissions
        before = engine.stats()["requests"]
        result = await pipeline.process(notes[start : start + 7])
        assert engine.stats()["requests"] - before <= 1, "one engine call per batch"
        assert not result.rejected
        for update in result.updates:
            last[update.hadm_id] = update
    expected = offline.scores(notes)
    assert set(last) == set(expected)
    for hadm, score in expected.items():
        assert score is not None
        assert last[hadm].score == pytest.approx(score, abs=1e-6)
        state = await pipeline.store.state(hadm)
        assert state is not None
        assert state.n_notes == 5 == last[hadm].n_notes
        assert last[hadm].seq == 5, "one seq per applied note"
    assert pipeline.counters["notes"] == len(notes)
    assert pipeline.counters["new"] == len(notes)


class StoreDownAfter(MemoryRiskStore):
    """The in-memory store, whose note writes fail (as Redis going away would) after ``n`` of them."""

    def __init__(self, n: int) -> None:
        super().__init__()
        self.left = n

    async def apply_note(self, **kw: Any) -> Any:
        if self.left == 0:
            raise StoreUnavailable("Redis did not answer.")
        self.left -= 1
        return await super().apply_note(**kw)


async def test_a_retried_batch_is_counted_once(engine: InferenceEngine) -> None:
    _, notes = feed(1, 4, seed=5)
    store = StoreDownAfter(2)
    pipeline = Pipeline(engine, store, engine.spec, model="tiny")
    with pytest.raises(StoreUnavailable):
        await pipeline.process(notes)  # two notes written, then the store goes away
    assert pipeline.counters == {}, "a batch that failed counts nothing"
    store.left = -1  # back (never runs out again)
    result = await pipeline.process(notes)  # the app's retry of the same batch
    assert result.outcomes == {"duplicate": 2, "new": 2}
    assert pipeline.counters["notes"] == len(notes)
    assert pipeline.counters["new"] + pipeline.counters["duplicate"] == len(notes)
    assert (await store.state(notes[0].hadm_id)).n_notes == len(notes)  # type: ignore[union-attr]


async def test_short_notes_count_as_seen_but_do_not_score(engine: InferenceEngine) -> None:
    pipeline = make_pipeline(engine)
    short = NoteEvent(note_id="s", subject_id=1, hadm_id=7, text="pt comfortable overnight.", source="t")
    result = await pipeline.process([short])
    assert result.chunks == 0
    [update] = result.updates
    assert (update.n_notes, update.n_chunks, update.score, update.seq) == (1, 0, None, 1)
    assert (update.p_max, update.p_mean) == (None, None)  # no evidence yet, never a score of 0


async def test_duplicates_revisions_and_retractions(engine: InferenceEngine, offline: OfflineScorer) -> None:
    _, notes = feed(1, 4, seed=2)
    notes = [n for n in notes if len(n.text.split()) > 20][:3]
    assert len(notes) >= 2
    pipeline = make_pipeline(engine)
    hadm = notes[0].hadm_id
    first = await pipeline.process(notes)
    seq = first.updates[-1].seq
    # the same notes again: nothing applied, the current state re-announced with the same seq
    again = await pipeline.process(notes)
    assert {u.seq for u in again.updates} == {seq}
    assert all(u.change is None for u in again.updates)
    assert pipeline.counters["duplicate"] == len(notes)
    # a revision replaces the note's chunks
    revised = notes[0].model_copy(update={"revision": 1, "text": notes[1].text + " " + notes[0].text})
    [rev] = (await pipeline.process([revised])).updates
    assert (rev.change, rev.seq, rev.n_notes) == ("revision", seq + 1, len(notes))
    assert rev.score == pytest.approx(offline.scores([*notes, revised])[hadm], abs=1e-6)
    # a lower revision is stale: no change
    stale = (await pipeline.process([notes[0]])).updates
    assert [u.seq for u in stale] == [seq + 1]
    # a retraction removes the note
    retract = notes[1].model_copy(update={"is_error": True, "text": ""})
    [gone] = (await pipeline.process([retract])).updates
    assert (gone.change, gone.seq, gone.n_notes) == ("retracted", seq + 2, len(notes) - 1)
    assert gone.score == pytest.approx(offline.scores([*notes, revised, retract])[hadm], abs=1e-6)


async def test_same_id_and_revision_with_other_text_is_rejected_as_a_conflict(
    engine: InferenceEngine,
) -> None:
    _, notes = feed(1, 3, seed=3)
    first, other = notes[0], notes[1]
    pipeline = make_pipeline(engine)
    [update] = (await pipeline.process([first])).updates
    clash = other.model_copy(update={"note_id": first.note_id, "revision": first.revision})
    result = await pipeline.process([clash, first])
    assert [(r.note, r.reason) for r in result.rejected] == [(clash, "conflict")]
    assert first.text not in result.rejected[0].detail
    assert [u.seq for u in result.updates] == [update.seq], "only the repeat of the held note"
    assert pipeline.counters["conflict"] == pipeline.counters["rejected_conflict"] == 1
    state = await pipeline.store.state(first.hadm_id)
    assert state is not None
    assert (state.n_notes, state.seq) == (1, update.seq)


async def test_window_filter_and_admission_lookup(engine: InferenceEngine) -> None:
    spec = engine.spec.model_copy(update={"window": Window(kind="hours", value=24)})
    pipeline = make_pipeline(engine, spec, admission_wait_s=3600.0)
    admissions, notes = feed(2, 2, seed=3)
    a0, a1 = admissions
    inside = notes[0].model_copy(update={"chart_time": ADMIT + timedelta(hours=2)})
    outside = notes[1].model_copy(update={"chart_time": ADMIT + timedelta(hours=30)})
    unknown = notes[2]  # admission 1 not admitted yet, note carries no admit time: it is held
    carried = notes[3].model_copy(update={"note_id": "carried", "admit_time": a1.admit_time})
    await pipeline.admission(a0)
    result = await pipeline.process([inside, outside, unknown, carried])
    assert [u.trigger_note_id for u in result.updates] == [inside.note_id, "carried"]
    assert result.dropped == {"outside_window": 1}
    assert result.rejected == []
    assert result.outcomes["held"] == 1
    assert pipeline.counters["dropped_outside_window"] == 1
    assert await pipeline.expired(now=time.time() + 3599) == []
    [expired] = await pipeline.expired(now=time.time() + 3601)  # the admission never came
    assert (expired.note.note_id, expired.note.text) == (unknown.note_id, "")
    await pipeline.forget([expired])
    assert await pipeline.expired(now=time.time() + 3601) == []
    assert pipeline.counters["rejected_admission_unknown"] == 1


@pytest.mark.parametrize("store_kind", ["memory", "redis"])
async def test_notes_before_their_admit_count_once_when_it_arrives(
    engine: InferenceEngine, offline: OfflineScorer, store_kind: str, request: pytest.FixtureRequest
) -> None:
    """The ADT feed lags: notes come 10 minutes (event time) before their admit and still count,
    exactly once, with the streamed score equal to the offline one; nothing waits meanwhile."""
    store = (
        RedisRiskStore(request.getfixturevalue("redis_url")) if store_kind == "redis" else MemoryRiskStore()
    )
    spec = engine.spec.model_copy(update={"window": Window(kind="hours", value=24)})
    pipeline = Pipeline(engine, store, spec, model="tiny", admission_wait_s=3600.0)  # type: ignore[arg-type]
    admissions, notes = feed(2, 3, seed=5)
    late, known = admissions
    early = [n for n in notes if n.hadm_id == late.hadm_id]
    others = [n for n in notes if n.hadm_id == known.hadm_id]
    await pipeline.admission(known)
    started = time.monotonic()
    result = await pipeline.process([*early, *others, early[0]])  # one note redelivered while held
    assert time.monotonic() - started < 60  # nothing sleeps for the unknown admission
    assert result.outcomes["held"] == len(early) + 1
    assert {u.hadm_id for u in result.updates} == {known.hadm_id}  # the others' notes flowed
    assert await store.state(late.hadm_id) is None
    lag = max(n.produced_at for n in early) + timedelta(minutes=10)
    await pipeline.admission(late.model_copy(update={"produced_at": lag}))  # the admit, 10 minutes late
    released = await pipeline.release(late.hadm_id)
    assert released.outcomes == {"new": len(early), "duplicate": 1}
    assert await pipeline.release(late.hadm_id) == type(released)()  # released once
    state = await store.state(late.hadm_id)
    assert state is not None
    assert state.n_notes == len(early)
    expected = offline.scores(early)[late.hadm_id]
    assert released.updates[-1].score == pytest.approx(expected, abs=1e-6)
    assert await pipeline.expired(now=time.time() + 1e6) == []
    await store.close()


async def test_discharge_gives_one_final_update(engine: InferenceEngine) -> None:
    admissions, notes = feed(1, 2, seed=4)
    pipeline = make_pipeline(engine)
    await pipeline.admission(admissions[0])
    updates = (await pipeline.process(notes)).updates
    [dis] = discharges(admissions)
    final = await pipeline.admission(dis)
    assert final is not None
    assert final.final
    assert final.change == "discharge"
    assert final.seq == updates[-1].seq + 1
    assert final.score == updates[-1].score
    assert await pipeline.admission(dis) is None, "a repeated discharge changes nothing"


def test_windows_compare_times_in_the_source_timezone() -> None:
    zone = ZoneInfo("America/New_York")
    spec = ModelSpec(window=Window(kind="hours", value=24))
    admit = datetime(2150, 1, 1, 8, tzinfo=zone)
    # 23 h after the admit in New York's wall-clock time, but written in UTC by another feed
    inside = NoteEvent(
        note_id="1", subject_id=1, hadm_id=2, text="", chart_time=datetime(2150, 1, 2, 12, tzinfo=UTC)
    )
    outside = inside.model_copy(update={"chart_time": datetime(2150, 1, 2, 14, tzinfo=UTC)})
    assert (in_window(inside, spec, admit, zone), in_window(outside, spec, admit, zone)) == (True, False)
    # MIMIC's naive times read in that zone give the same answer as read in UTC: windows do not move
    naive = NoteEvent.model_validate(
        {"note_id": "1", "subject_id": 1, "hadm_id": 2, "text": "", "chart_time": "2150-01-02T07:00:00"},
        context={"source_timezone": zone},
    )
    assert naive.chart_time == datetime(2150, 1, 2, 7, tzinfo=zone)
    assert in_window(naive, spec, admit, zone) == in_window(
        naive.model_copy(update={"chart_time": datetime(2150, 1, 2, 7, tzinfo=UTC)}),
        spec,
        datetime(2150, 1, 1, 8, tzinfo=UTC),
    )


class PoisonedEngine:
    """The engine seam: a real engine that fails every batch holding the poison word, as a device error
    on one input would."""

    POISON = "zzpoisonzz"

    def __init__(self, engine: InferenceEngine) -> None:
        self.engine = engine
        self.calls: list[bool] = []

    async def score(self, texts: Any, *, isolated: bool = False) -> list[float]:
        from notestream.models.errors import BatchFailed

        self.calls.append(isolated)
        if any(self.POISON in t for t in texts):
            raise BatchFailed("injected device error")
        return await self.engine.score(texts, isolated=isolated)


async def test_a_note_whose_inference_fails_costs_only_itself(
    engine: InferenceEngine, offline: OfflineScorer
) -> None:
    admissions, notes = feed(3, 3, seed=11)
    long = [n for n in notes if len(n.text.split()) > 20]
    bad = long[0].model_copy(update={"note_id": "bad", "text": long[0].text + " " + PoisonedEngine.POISON})
    poisoned = PoisonedEngine(engine)
    pipeline = Pipeline(poisoned, MemoryRiskStore(), engine.spec, model="tiny")
    result = await pipeline.process([*notes, bad])
    assert [(r.note.note_id, r.reason) for r in result.rejected] == [("bad", "processing_error")]
    assert "injected device error" in result.rejected[0].detail
    assert poisoned.calls[0] is False, "one call for the batch"
    assert all(poisoned.calls[1:]), "then each note on its own"
    want = offline.scores(notes)
    for a in admissions:
        state = await pipeline.store.state(a.hadm_id)
        assert state is not None
        assert state.n_notes == 3
        assert state.score(engine.spec.c) == pytest.approx(want[a.hadm_id], abs=1e-6)


async def test_a_retraction_of_an_admission_never_seen_waits_for_it(engine: InferenceEngine) -> None:
    """Issue 11 §6: a retraction for an admission the store has never seen is held like a note (not
    applied as a tombstone): applied when the admit arrives, dead-lettered (admission_unknown) when it
    never does; a retraction for an admission the store knows, or whose notes come in the same batch,
    is applied at once."""
    pipeline = make_pipeline(engine, admission_wait_s=3600.0)
    admissions, notes = feed(4, 1, seed=6)
    late, never, seen, fresh = admissions
    by_hadm = {n.hadm_id: n for n in notes}

    def retraction(hadm: int | str) -> Any:
        return by_hadm[hadm].model_copy(update={"is_error": True, "text": ""})

    await pipeline.process([by_hadm[seen.hadm_id]])  # notes applied: the store knows this admission
    result = await pipeline.process(
        [by_hadm[fresh.hadm_id], *(retraction(a.hadm_id) for a in (late, never, seen, fresh))],
        refs=[{"topic": "notes", "partition": 0, "offset": i, "key": None} for i in range(5)],
    )
    assert result.outcomes == {"held": 2, "retracted": 2, "new": 1}
    assert sorted(u.hadm_id for u in result.updates) == sorted([seen.hadm_id, fresh.hadm_id, fresh.hadm_id])
    assert await pipeline.store.state(late.hadm_id) is None
    assert await pipeline.store.state(never.hadm_id) is None
    await pipeline.admission(late)
    released = await pipeline.release(late.hadm_id)
    assert released.outcomes == {"retracted": 1}
    [expired] = await pipeline.expired(now=time.time() + 3601)
    assert (expired.note.hadm_id, expired.note.is_error, expired.ref["offset"]) == (never.hadm_id, True, 2)
    await pipeline.forget([expired])
    assert await pipeline.expired(now=time.time() + 3601) == []
    assert pipeline.counters["rejected_admission_unknown"] == 1
