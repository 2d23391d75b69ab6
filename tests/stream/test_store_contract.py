"""The RiskStore contract: the in-memory store and the Redis store (real redis-servers: standalone,
Sentinel, Cluster) must agree.

Every test here runs against both implementations; aggregates are compared with the batch reference
(``notestream.models.aggregate.admission_score`` over the live notes' probabilities), bit for bit.
"""

from __future__ import annotations

import asyncio
import math
import random
import time
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from typing import Any

import pytest

from notestream.models.aggregate import admission_score
from notestream.stream.errors import StoreError
from notestream.stream.events import AdmissionEvent
from notestream.stream.pipeline import CHANGELOG_REASONS
from notestream.stream.store import AdmissionState, MemoryRiskStore, RedisRiskStore, RiskStore
from notestream.stream.store.changelog import (
    AdmissionChange,
    NoteChange,
    decode_all,
    encode_changes,
    latest,
    plan_rebuild,
)
from notestream.stream.store.records import content_hash

StoreFactory = Callable[..., RiskStore]


STANDALONE = pytest.mark.parametrize("make_store", ["memory", "redis"], indirect=True)
URL_FIXTURES = {"redis": "redis_url", "sentinel": "redis_sentinel_url", "cluster": "redis_cluster_url"}


@pytest.fixture(params=["memory", "redis", "sentinel", "cluster"])
async def make_store(request: pytest.FixtureRequest) -> AsyncIterator[StoreFactory]:
    """A factory of fresh stores of one kind (keyword arguments: TTLs, pool size): in memory, or on a
    standalone Redis, a Sentinel-managed primary or a Redis Cluster (tests/fixtures/redis_ha.py)."""
    made: list[RiskStore] = []
    url = request.getfixturevalue(URL_FIXTURES[request.param]) if request.param in URL_FIXTURES else None

    def factory(*, pool_size: int = 8, namespace: str = "notestream", **kwargs: Any) -> RiskStore:
        if url:
            kwargs["namespace"] = namespace  # memory stores are apart anyway
        store: RiskStore = (
            RedisRiskStore(url, pool_size=pool_size, **kwargs) if url else MemoryRiskStore(**kwargs)
        )
        made.append(store)
        return store

    yield factory
    for store in made:
        await store.close()


@pytest.fixture
def store(make_store: StoreFactory) -> RiskStore:
    return make_store()


async def note(
    store: RiskStore, note_id: str, probs: list[float], *, hadm: int = 100, rev: int = 0, error: bool = False
) -> Any:
    return await store.apply_note(
        hadm_id=hadm, subject_id=7, note_id=note_id, revision=rev, is_error=error, chunk_probs=probs
    )


async def current(store: RiskStore, hadm: int = 100) -> AdmissionState:
    state = await store.state(hadm)
    assert state is not None
    return state


def assert_matches(state: Any, live: dict[str, list[float]]) -> None:
    """The state equals the batch aggregate of the live notes, bit for bit."""
    probs = [p for ps in live.values() for p in ps]
    assert state.n_chunks == len(probs)
    assert state.n_notes == len(live)
    if probs:
        assert state.p_max == max(probs)
        assert state.p_sum == math.fsum(probs)
        assert state.score(2.0) == admission_score(probs, 2.0)
        assert live[state.top_note_id][state.top_chunk] == state.p_max
    else:
        assert state.p_max is None
        assert state.score() is None


async def test_new_note_gives_the_batch_aggregate(store: RiskStore) -> None:
    result = await note(store, "a", [0.25, 0.9, 0.125])
    assert (result.applied, result.reason, result.state.seq) == (True, "new", 1)
    assert result.state.subject_id == 7
    assert (result.state.top_note_id, result.state.top_chunk) == ("a", 1)
    assert_matches(result.state, {"a": [0.25, 0.9, 0.125]})
    assert await store.state(100) == result.state
    assert await store.state(101) is None


async def test_duplicates_and_lower_revisions_change_nothing(store: RiskStore) -> None:
    await note(store, "a", [0.3], rev=2)
    again = await note(store, "a", [0.99], rev=2)
    older = await note(store, "a", [0.99], rev=1)
    assert (again.applied, again.reason) == (False, "duplicate")
    assert (older.applied, older.reason) == (False, "stale")
    assert again.state.seq == older.state.seq == 1
    assert_matches(await store.state(100), {"a": [0.3]})


async def test_higher_revision_replaces_and_max_is_recomputed(store: RiskStore) -> None:
    await note(store, "a", [0.95, 0.1])
    await note(store, "b", [0.4, 0.6])
    result = await note(store, "a", [0.2, 0.3, 0.05], rev=1)
    assert (result.applied, result.reason, result.state.seq) == (True, "revision", 3)
    assert (result.state.top_note_id, result.state.top_chunk) == ("b", 1)
    assert_matches(result.state, {"a": [0.2, 0.3, 0.05], "b": [0.4, 0.6]})
    probs = await store.note_probs(100)
    assert probs["a"].revision == 1
    assert probs["a"].probs == (0.2, 0.3, 0.05)


async def test_retraction_removes_the_note_once(store: RiskStore) -> None:
    await note(store, "a", [0.95])
    await note(store, "b", [0.5, 0.7])
    gone = await note(store, "a", [], error=True)
    assert (gone.applied, gone.reason, gone.state.seq) == (True, "retracted", 3)
    assert_matches(gone.state, {"b": [0.5, 0.7]})
    again = await note(store, "a", [], error=True)
    late = await note(store, "a", [0.95])
    assert (again.applied, again.reason, late.applied, late.reason) == (False, "duplicate", False, "stale")
    back = await note(store, "a", [0.8], rev=1)
    assert (back.applied, back.reason, back.state.seq) == (True, "revision", 4)
    assert_matches(back.state, {"a": [0.8], "b": [0.5, 0.7]})
    assert set(await store.note_probs(100)) == {"a", "b"}


async def test_retracting_everything_leaves_no_score(store: RiskStore) -> None:
    await note(store, "a", [0.4, 0.6])
    result = await note(store, "a", [], error=True)
    assert result.state.n_chunks == 0
    assert result.state.p_sum == 0.0
    assert_matches(result.state, {})
    assert await store.note_probs(100) == {}


async def test_retraction_of_an_unknown_note_keeps_earlier_revisions_out(store: RiskStore) -> None:
    first = await note(store, "x", [], rev=3, error=True)
    assert (first.applied, first.reason) == (False, "retracted")
    late = await note(store, "x", [0.9], rev=2)
    assert (late.applied, late.reason) == (False, "stale")
    assert await store.state(100) is None


async def test_random_histories_match_the_reference(store: RiskStore) -> None:
    """Seq rises by exactly one per applied change and the aggregate always equals the batch one."""
    rng = random.Random(4)
    held: dict[str, tuple[int, bool, list[float]]] = {}
    seq = 0
    for _ in range(300):
        note_id = f"n{rng.randrange(25)}"
        rev = rng.randrange(4)
        error = rng.random() < 0.2
        probs = [rng.random() ** 3 for _ in range(rng.randrange(0, 6))]
        old = held.get(note_id)
        applies = old is None or (rev, error) > (old[0], old[1])
        changes = applies and not (error and (old is None or old[1]))
        result = await note(store, note_id, probs, rev=rev, error=error)
        if applies:
            held[note_id] = (rev, error, [] if error else probs)
        seq += changes
        assert result.applied == changes
        live = {k: v[2] for k, v in held.items() if not v[1]}
        if result.state is not None:
            assert result.state.seq == seq
            assert_matches(result.state, live)
    assert {k: (v.revision, list(v.probs)) for k, v in (await store.note_probs(100)).items()} == {
        k: (v[0], v[2]) for k, v in held.items() if not v[1]
    }


async def test_admit_and_discharge(store: RiskStore) -> None:
    admit = datetime(2150, 1, 1, 8, 30, tzinfo=UTC)  # every event time is aware
    assert await store.admission(100) is None
    info = await store.record_admission(
        AdmissionEvent(kind="admit", subject_id=7, hadm_id=100, admit_time=admit, admission_type="EMERGENCY")
    )
    assert (info.applied, info.admit_time, info.admission_type, info.discharged) == (
        True,
        admit,
        "EMERGENCY",
        False,
    )
    assert (await store.admission(100)) == info.__class__(**{**info.__dict__, "applied": False})
    await note(store, "a", [0.5])
    out = datetime(2150, 1, 5, 12, 0, tzinfo=UTC)
    first = await store.record_admission(
        AdmissionEvent(kind="discharge", subject_id=7, hadm_id=100, discharge_time=out)
    )
    second = await store.record_admission(
        AdmissionEvent(kind="discharge", subject_id=7, hadm_id=100, discharge_time=out)
    )
    assert (first.applied, second.applied, first.discharged, first.discharge_time) == (True, False, True, out)
    state = await current(store)
    assert (state.seq, state.discharged) == (2, True)
    assert_matches(state, {"a": [0.5]})


@STANDALONE  # the same scripts on Sentinel and Cluster; spare their sleeps
async def test_idle_ttl_slides_with_each_write(make_store: StoreFactory) -> None:
    store = make_store(idle_ttl_s=3.0)
    await note(store, "a", [0.5])
    await asyncio.sleep(1.8)
    await note(store, "b", [0.5])
    await asyncio.sleep(1.8)
    assert (await store.state(100)) is not None  # 3.6 s after the first write, 1.8 s after the last
    await asyncio.sleep(3.6)
    assert await store.state(100) is None
    assert await store.note_probs(100) == {}


@STANDALONE  # the same scripts on Sentinel and Cluster; spare their sleeps
async def test_discharge_expires_after_retention_even_with_later_notes(make_store: StoreFactory) -> None:
    store = make_store(idle_ttl_s=3600, retention_s=0.8)
    await note(store, "a", [0.5])
    await store.record_admission(
        AdmissionEvent(kind="discharge", subject_id=7, hadm_id=100, discharge_time=datetime(2150, 1, 2))
    )
    await note(store, "b", [0.5])  # a late note does not extend the retention
    assert (await current(store)).n_notes == 2
    await asyncio.sleep(1.3)
    assert await store.state(100) is None
    assert await store.admission(100) is None


async def test_concurrent_updates_of_one_admission_are_exact(make_store: StoreFactory) -> None:
    store = make_store(pool_size=4)
    rng = random.Random(1)
    notes = {f"c{i}": [rng.random() for _ in range(rng.randrange(1, 5))] for i in range(150)}
    calls = [note(store, k, v) for k, v in notes.items()] + [
        note(store, k, v) for k, v in list(notes.items())[:50]
    ]
    rng.shuffle(calls)
    results = await asyncio.gather(*calls)
    assert sum(r.applied for r in results) == 150
    assert sorted(r.state.seq for r in results if r.applied) == list(range(1, 151))
    assert_matches(await store.state(100), notes)


async def test_an_admission_holding_a_thousand_notes(store: RiskStore) -> None:
    rng = random.Random(2)
    notes = {f"k{i:04d}": [rng.random() for _ in range(3)] for i in range(1000)}
    for start in range(0, 1000, 100):
        await asyncio.gather(*(note(store, k, notes[k]) for k in list(notes)[start : start + 100]))
    state = await current(store)
    assert state.seq == 1000
    assert_matches(state, notes)
    top = str(state.top_note_id)
    result = await note(store, top, [], error=True)
    del notes[top]
    assert_matches(result.state, notes)


async def test_admissions_are_independent(store: RiskStore) -> None:
    await note(store, "a", [0.9], hadm=1)
    await note(store, "a", [0.1], hadm=2)
    assert_matches(await store.state(1), {"a": [0.9]})
    assert_matches(await store.state(2), {"a": [0.1]})


@pytest.mark.parametrize("bad", [math.nan, -0.1, 1.5, math.inf])
async def test_bad_probabilities_are_refused(store: RiskStore, bad: float) -> None:
    with pytest.raises(StoreError, match="probability"):
        await note(store, "a", [0.5, bad])
    assert await store.state(100) is None


async def test_ping(store: RiskStore) -> None:
    assert await store.ping()


async def test_ties_on_the_maximum_are_broken_the_same_way(store: RiskStore) -> None:
    await note(store, "b", [0.5, 0.8, 0.8])
    await note(store, "c", [0.8])
    result = await note(store, "a", [0.8, 0.1])
    assert result.state is not None
    assert (result.state.top_note_id, result.state.top_chunk) == ("c", 0)  # the greatest note_id
    gone = await note(store, "c", [], error=True)
    assert (gone.state.top_note_id, gone.state.top_chunk) == ("b", 1)  # then its first top chunk


async def test_the_first_claim_binds_the_store_to_its_model(make_store: StoreFactory) -> None:
    store = make_store()
    assert await store.claim("v1@aaaa") == "v1@aaaa"
    assert await store.claim("v1@aaaa") == "v1@aaaa"
    assert await store.claim("v2@bbbb") == "v1@aaaa", "a later model never takes the store over"
    await note(store, "a", [0.5])
    assert await store.claim("v2@bbbb") == "v1@aaaa"


async def test_held_notes_wait_in_order_until_dropped(store: RiskStore) -> None:
    assert await store.held_notes("V-1") == []
    assert await store.hold_note("V-1", '{"n": 1}', deadline=100.0) == 1
    assert await store.hold_note("V-1", '{"n": 2}', deadline=50.0) == 2
    assert await store.hold_note("{x}:2", '{"n": 3}', deadline=200.0) == 1
    assert await store.held_notes("V-1") == ['{"n": 1}', '{"n": 2}']
    assert await store.due_held(now=10.0) == []
    assert await store.due_held(now=60.0) == [("V-1", '{"n": 2}')]
    assert sorted(await store.due_held(now=1e9), key=str) == sorted(
        [("V-1", '{"n": 1}'), ("V-1", '{"n": 2}'), ("{x}:2", '{"n": 3}')], key=str
    )
    await store.drop_held("V-1", ['{"n": 2}', '{"n": 9}'])  # an absent record is ignored
    assert await store.held_notes("V-1") == ['{"n": 1}']
    assert await store.due_held(now=60.0) == []
    await store.drop_held("V-1", ['{"n": 1}'])
    assert await store.held_notes("V-1") == []
    assert await store.due_held(now=1e9) == [("{x}:2", '{"n": 3}')]
    assert await store.state("V-1") is None  # holding notes creates no admission


async def test_an_admission_holds_a_bounded_number_of_notes(store: RiskStore) -> None:
    from notestream.stream.store.records import MAX_HELD

    for i in range(MAX_HELD):
        await store.hold_note(1, f"r{i}", deadline=1.0)
    with pytest.raises(StoreError):
        await store.hold_note(1, "one too many", deadline=1.0)
    assert len(await store.held_notes(1)) == MAX_HELD


@pytest.mark.parametrize("base", [2**53, 2**63, 10**40])
async def test_revisions_compare_exactly_at_any_size(store: RiskStore, base: int) -> None:
    """Revisions above 2**53 differ by one where doubles cannot tell them apart."""
    await note(store, "a", [0.1], rev=base)
    newer = await note(store, "a", [0.9], rev=base + 1)
    assert (newer.applied, newer.reason) == (True, "revision")
    again = await note(store, "a", [0.3], rev=base + 1)
    older = await note(store, "a", [0.3], rev=base)
    assert (again.reason, older.reason) == ("duplicate", "stale")
    shorter = await note(store, "a", [0.3], rev=9)
    assert shorter.reason == "stale"  # fewer digits is smaller, whatever the digits
    assert_matches(await current(store), {"a": [0.9]})
    assert (await store.note_probs(100))["a"].revision == base + 1


async def test_same_revision_with_other_content_is_a_conflict(store: RiskStore) -> None:
    async def hashed(note_id: str, probs: list[float], digest: str | None, rev: int = 0) -> Any:
        return await store.apply_note(
            hadm_id=100,
            subject_id=7,
            note_id=note_id,
            revision=rev,
            is_error=False,
            chunk_probs=probs,
            content_hash=digest,
        )

    first = await hashed("a", [0.4], content_hash("the first text"))
    same = await hashed("a", [0.4], content_hash("the first text"))
    other = await hashed("a", [0.8], content_hash("another text"))
    assert (first.reason, same.reason, other.reason) == ("new", "duplicate", "conflict")
    assert not other.applied
    assert other.state.seq == 1
    assert_matches(await current(store), {"a": [0.4]})  # the held note stays
    unknown = await hashed("a", [0.8], None)  # a caller that knows no hash cannot tell: duplicate
    assert unknown.reason == "duplicate"
    newer = await hashed("a", [0.8], content_hash("another text"), rev=1)
    assert (newer.applied, newer.reason) == (True, "revision")
    assert_matches(await current(store), {"a": [0.8]})
    assert (await hashed("a", [0.8], content_hash("a third text"), rev=0)).reason == "stale"
    with pytest.raises(StoreError, match="hex digest"):
        await hashed("b", [0.2], "not hex")


async def test_a_store_rebuilt_from_its_changelog_equals_the_original(make_store: StoreFactory) -> None:
    """Every change recorded as the worker records it (notestream.stream.store.heal), then replayed into an empty
    store: the same aggregates, notes and maxima, and seq continuing from the largest recorded."""
    original, rebuilt = make_store(), make_store(namespace="rebuilt")
    rng = random.Random(9)
    changes: list[NoteChange | AdmissionChange] = []
    for hadm in (1, 2, 3):
        admit = AdmissionEvent(kind="admit", subject_id=7, hadm_id=hadm, admit_time=datetime(2150, 1, hadm))
        await original.record_admission(admit)
        changes.append(AdmissionChange(admit, 0))
    for _ in range(120):
        hadm, note_id = rng.choice((1, 2, 3)), f"n{rng.randrange(8)}"
        rev, error = rng.choice((0, 1, 2, 2**70)), rng.random() < 0.15
        same = random.Random(f"{hadm}/{note_id}/{rev}")  # one content per note and revision
        probs = [same.random() ** 2 for _ in range(same.randrange(0, 4))]
        digest = content_hash(f"{hadm}/{note_id}/{rev}")
        result = await original.apply_note(
            hadm_id=hadm,
            subject_id=7,
            note_id=note_id,
            revision=rev,
            is_error=error,
            chunk_probs=probs,
            content_hash=digest,
        )
        if result.reason in CHANGELOG_REASONS:
            seq = result.state.seq if result.state else 0
            changes.append(
                NoteChange(
                    hadm,
                    7,
                    note_id,
                    rev,
                    error,
                    () if error else tuple(probs),
                    "" if error else digest,
                    None,
                    seq,
                )
            )
    out = AdmissionEvent(kind="discharge", subject_id=7, hadm_id=2, discharge_time=datetime(2150, 2, 1))
    await original.record_admission(out)
    changes.append(AdmissionChange(out, (await current(original, 2)).seq))
    topic = latest(encode_changes(changes, namespace="ns", model="m@1", t_ms=int(time.time() * 1000)))
    records = decode_all(topic, namespace="ns", model="m@1")
    plans = plan_rebuild(
        records, now_ms=int(time.time() * 1000), idle_ttl_ms=3_600_000, retention_ms=3_600_000
    )
    assert await rebuilt.restore_admissions(plans) == sum(len(p.notes) for p in plans)  # type: ignore[attr-defined]
    for hadm in (1, 2, 3):
        assert await rebuilt.state(hadm) == await original.state(hadm)
        assert await rebuilt.note_probs(hadm) == await original.note_probs(hadm)
        assert await rebuilt.admission(hadm) == await original.admission(hadm)
    again = await rebuilt.apply_note(
        hadm_id=1, subject_id=7, note_id="new", revision=0, is_error=False, chunk_probs=[0.5]
    )
    assert again.state is not None
    assert again.state.seq == (await current(original, 1)).seq + 1, "seq continues above every recorded one"
