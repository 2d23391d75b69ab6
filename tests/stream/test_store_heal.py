"""Lost Redis state is detected (the store epoch) and rebuilt from the changelog (notestream.stream.store.heal).

A real redis-server; the changelog topic is the one seam (a list of records, read back compacted):
the worker path's Kafka round trip is covered by tests/deploy/test_store_heal_worker.py.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import AsyncIterator
from datetime import datetime
from functools import partial
from pathlib import Path
from typing import Any

import pytest

from notestream.core.settings import Settings
from notestream.core.topics import STORE_CHANGELOG
from notestream.models.engine import InferenceEngine
from notestream.models.spec import Window
from notestream.stream import kafka
from notestream.stream.errors import StoreLost, StoreModelMismatch, StoreRebuilding
from notestream.stream.events import AdmissionEvent, admission_key
from notestream.stream.note_path import NotePath, Origin
from notestream.stream.pipeline import CHANGELOG_REASONS, Pipeline
from notestream.stream.store import MemoryRiskStore, RedisRiskStore
from notestream.stream.store.changelog import AdmissionChange, NoteChange, decode_all, encode_changes, latest
from notestream.stream.store.heal import StoreHealer, read_changelog
from notestream.stream.store.records import content_hash
from tests.stream.feed import OfflineScorer, feed


class ListTopic:
    """The changelog topic as a list: ``send`` appends (delivered at once), ``read`` compacts."""

    def __init__(self) -> None:
        self.messages: list[tuple[bytes, bytes | None]] = []

    async def send(self, *, key: bytes, value: bytes) -> asyncio.Future[None]:
        self.messages.append((key, value))
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        done.set_result(None)
        return done

    async def read(self) -> dict[bytes, bytes]:
        return latest(self.messages)


@pytest.fixture(params=["redis", "sentinel", "cluster"])
def redis_url(request: pytest.FixtureRequest) -> str:
    """A flushed standalone Redis, Sentinel-managed primary or Redis Cluster (store URL)."""
    name = {"redis": "redis_server", "sentinel": "redis_sentinel", "cluster": "redis_cluster"}[request.param]
    server = request.getfixturevalue(name)
    url = server if isinstance(server, str) else server.url
    asyncio.run(flushall(url))
    return str(url)


async def flushall(url: str) -> None:
    """FLUSHALL on every primary behind ``url`` (as a restart without persistence would leave them)."""
    store = RedisRiskStore(url)
    client: Any = store._redis
    try:
        if store.cluster:
            await client.flushall(target_nodes=client.get_primaries())
        else:
            await client.flushall()
    finally:
        await store.close()


@pytest.fixture
async def store(redis_url: str) -> AsyncIterator[RedisRiskStore]:
    made = RedisRiskStore(redis_url, pool_size=8)
    yield made
    await made.close()


def healer(store: RedisRiskStore, topic: ListTopic, **kwargs: Any) -> StoreHealer:
    return StoreHealer(store, topic.read, namespace="ns", model="m@1", **kwargs)


@pytest.fixture
async def engine(tiny_model_dir: Path) -> AsyncIterator[InferenceEngine]:
    started = InferenceEngine(tiny_model_dir, devices=["cpu"], max_wait_ms=1.0)
    await started.start()
    yield started
    await started.close()


def waiting_pipeline(engine: InferenceEngine, store: RedisRiskStore) -> Pipeline:
    """A pipeline whose model scores the first 24 hours, so its notes wait for their admit (an hour)."""
    spec = engine.spec.model_copy(update={"window": Window(kind="hours", value=24)})
    return Pipeline(engine, store, spec, model="m@1", admission_wait_s=3600.0)  # type: ignore[arg-type]


async def apply(store: Any, hadm: int, note_id: str, rev: int = 0, probs: tuple[float, ...] = (0.5,)) -> Any:
    return await store.apply_note(
        hadm_id=hadm,
        subject_id=7,
        note_id=note_id,
        revision=rev,
        is_error=False,
        chunk_probs=probs,
        content_hash=content_hash(f"{note_id}/{rev}"),
    )


async def test_a_flushed_store_refuses_every_admission_call(store: RedisRiskStore, redis_url: str) -> None:
    await apply(store, 1, "a")  # before require_epoch: no check (tools, explain, tests)
    store.require_epoch()
    with pytest.raises(StoreLost):
        await apply(store, 1, "b")  # never bound: no epoch yet
    assert await store.begin_rebuild("t1", 5_000)
    assert not await store.begin_rebuild("t2", 5_000), "one rebuilder at a time"
    with pytest.raises(StoreRebuilding):
        await apply(store, 1, "b")
    await store.finish_rebuild("t1")
    assert await store.epoch() == "ready:t1"
    assert (await apply(store, 1, "b")).reason == "new"
    await flushall(redis_url)
    admit = AdmissionEvent(kind="admit", subject_id=7, hadm_id=1, admit_time=datetime(2150, 1, 1))
    for call in (
        apply(store, 1, "c"),
        store.state(1),
        store.admission(1),
        store.record_admission(admit),
    ):
        with pytest.raises(StoreLost, match="lost its data"):
            await call
    assert await store.epoch() is None


async def test_a_store_flushed_mid_stream_is_rebuilt_exactly(store: RedisRiskStore, redis_url: str) -> None:
    """Batches through the healer as the worker runs them; FLUSHALL twice in the middle. The store ends
    equal to one that never lost anything, seq never goes backwards, the model binding is back."""
    topic = ListTopic()
    counted: list[int] = []
    heal = healer(store, topic, on_rebuild=lambda: counted.append(1))
    await heal.start()  # a new store: built from the empty changelog
    assert heal.rebuilds == 1
    reference = MemoryRiskStore()
    rng = random.Random(3)
    emitted: dict[int, list[int]] = {}
    for batch in range(24):
        if batch in (8, 17):
            await flushall(redis_url)
        notes = [(rng.randrange(12), f"n{rng.randrange(6)}", rng.choice((0, 1, 2**60))) for _ in range(8)]

        async def run(notes: list[tuple[int, str, int]] = notes) -> list[Any]:
            out = []
            for hadm, note_id, rev in notes:
                probs = tuple(random.Random(f"{hadm}{note_id}{rev}").random() for _ in range(3))
                out.append((hadm, note_id, rev, probs, await apply(store, hadm, note_id, rev, probs)))
            return out

        results = await heal.guard(run)
        changes: list[NoteChange | AdmissionChange] = []
        for hadm, note_id, rev, probs, result in results:
            await apply(reference, hadm, note_id, rev, probs)
            if result.reason in CHANGELOG_REASONS:
                changes.append(
                    NoteChange(
                        hadm,
                        7,
                        note_id,
                        rev,
                        False,
                        probs,
                        content_hash(f"{note_id}/{rev}"),
                        None,
                        result.state.seq,
                    )
                )
            emitted.setdefault(hadm, []).append(result.state.seq)
        await heal.record(topic.send, changes)
    assert heal.rebuilds == len(counted) == 3
    for hadm, seqs in emitted.items():
        assert seqs == sorted(seqs), f"seq went backwards for admission {hadm}: {seqs}"
        expected = await reference.state(hadm)
        assert await store.state(hadm) == expected
        assert await store.note_probs(hadm) == await reference.note_probs(hadm)
    assert await store.claim("other@2") == "m@1", "the model binding was claimed again"


@pytest.mark.parametrize("redis_url", ["redis"], indirect=True)
async def test_two_workers_meeting_a_lost_store_rebuild_it_once(
    store: RedisRiskStore, redis_url: str
) -> None:
    topic = ListTopic()
    first = healer(store, topic)
    await first.start()
    await apply(store, 5, "a")
    await first.record(topic.send, [NoteChange(5, 7, "a", 0, False, (0.5,), content_hash("a/0"), None, 1)])
    other_store = RedisRiskStore(redis_url, pool_size=4)
    second = healer(other_store, topic)
    await second.start()
    assert second.rebuilds == 0, "the epoch is there: nothing to rebuild"
    await flushall(redis_url)
    rebuilt = await asyncio.gather(first.heal(), second.heal())
    assert sorted(rebuilt) == [0, 1]
    state = await other_store.state(5)
    assert state is not None
    assert (state.n_notes, state.seq) == (1, 1)
    assert (await apply(other_store, 5, "b")).state.seq == 2
    await other_store.close()


@pytest.mark.parametrize("redis_url", ["redis"], indirect=True)
async def test_the_changelog_is_read_back_compacted_from_the_broker(
    kafka_settings: Settings, redis_url: str
) -> None:
    """read_changelog over the real broker: every partition to its end, the last value per key."""
    topic = kafka_settings.topic(STORE_CHANGELOG)
    assert await read_changelog(kafka_settings) == {}
    producer = kafka.producer(kafka_settings)
    await producer.start()
    try:
        for i in range(40):
            await producer.send_and_wait(topic, key=f"ns/{i % 10}/n/a".encode(), value=str(i).encode())
        await producer.send_and_wait(topic, key=b"ns/3/n/a", value=None)  # a tombstone
    finally:
        await producer.stop()
    read = await read_changelog(kafka_settings)
    assert read == {f"ns/{i}/n/a".encode(): str(30 + i).encode() for i in range(10) if i != 3}


def test_a_changelog_of_another_model_is_refused() -> None:
    """A namespace holds one model's probabilities: records of another stop the rebuild (exit 78)."""
    change = NoteChange(1, 7, "a", 0, False, (0.5,), "", None, 1)
    messages = dict(encode_changes([change], namespace="ns", model="old@1111", t_ms=0))
    assert decode_all(messages, namespace="other", model="new@2222") == []  # another namespace's
    with pytest.raises(StoreModelMismatch, match="old@1111"):
        decode_all(messages, namespace="ns", model="new@2222")


@pytest.mark.parametrize("redis_url", ["redis"], indirect=True)
async def test_held_notes_survive_a_lost_store(
    store: RedisRiskStore, redis_url: str, engine: InferenceEngine, tiny_model_dir: Path
) -> None:
    """Notes held for an admission not known yet are in the changelog: after a FLUSHALL the rebuild
    holds them again (not applied), the late admit releases them and the admission ends equal to the
    offline score, n_notes exact; released and expired ones leave records so no rebuild holds them
    again, and the orphan is still dead-lettered after the wait."""
    topic = ListTopic()
    heal = healer(store, topic)
    await heal.start()
    pipeline = waiting_pipeline(engine, store)
    (late, orphan), notes = feed(2, 3, seed=8)
    early = [n for n in notes if n.hadm_id == late.hadm_id]
    result = await heal.guard(partial(pipeline.process, notes))
    assert result.outcomes == {"held": len(notes)}
    await heal.record(topic.send, result.changes)
    assert all(n.text.encode() not in value for _, value in topic.messages for n in notes if value)

    await flushall(redis_url)  # the held notes are gone from Redis, not from the changelog
    changes: list[Any] = []
    assert await heal.guard(partial(pipeline.admission, late, changes)) is None  # heals, then admits
    assert heal.rebuilds == 2
    assert len(await store.held_notes(late.hadm_id)) == len(early), "held again, not applied"
    assert getattr(await store.state(late.hadm_id), "n_notes", 0) == 0
    released = await heal.guard(partial(pipeline.release, late.hadm_id))
    await heal.record(topic.send, [*changes, *released.changes])
    state = await store.state(late.hadm_id)
    assert state is not None
    assert state.n_notes == len(early)
    want = OfflineScorer(tiny_model_dir).scores(early)[late.hadm_id]
    assert released.updates[-1].score == pytest.approx(want, abs=1e-6)

    [*expired] = await pipeline.expired(now=time.time() + 3601)  # the orphan's admit never came
    assert {e.note.hadm_id for e in expired} == {orphan.hadm_id}
    await heal.record(topic.send, [e.settled for e in expired])
    await pipeline.forget(expired)

    await flushall(redis_url)
    await heal.heal()  # released and expired notes are not held again; applied ones stay applied
    assert await store.held_notes(late.hadm_id) == await store.held_notes(orphan.hadm_id) == []
    assert await pipeline.expired(now=time.time() + 3601) == []
    assert await store.state(late.hadm_id) == state


class Crash(Exception):
    """The worker process dying at that point (nothing after it runs; the offsets stay uncommitted)."""


@pytest.mark.parametrize("redis_url", ["redis"], indirect=True)
async def test_a_crash_between_a_release_and_its_changelog_loses_no_note(
    store: RedisRiskStore, redis_url: str, engine: InferenceEngine, tiny_model_dir: Path
) -> None:
    """The worker dies after the late admit's release applied the held notes and before their
    changelog records reached the broker; the admit is delivered again. A later store loss must still
    rebuild the admission with every note (n_notes exact, the offline score), none held again."""
    changelog = ListTopic()
    heal = healer(store, changelog)
    await heal.start()
    pipeline = waiting_pipeline(engine, store)
    crash_on_notes = False

    async def send(topic: str, key: bytes | None, value: bytes) -> Any:
        if topic == STORE_CHANGELOG:
            assert key is not None
            if crash_on_notes and b"/n/" in key:
                raise Crash
            return await changelog.send(key=key, value=value)
        return await ListTopic().send(key=key or b"", value=value)

    async def ready() -> Pipeline:
        return pipeline

    path = NotePath(Settings(max_note_bytes=1_000_000), ready, send, healer=lambda: heal)
    [late], notes = feed(1, 4, seed=11)
    origins = [
        Origin("notes", 0, i, key=admission_key(n.hadm_id), value=n.to_bytes()) for i, n in enumerate(notes)
    ]
    assert (await path.notes(origins)).updates == 0  # all held: the admit has not come
    assert len(await store.held_notes(late.hadm_id)) == len(notes)
    admit = Origin("admissions", 0, 0, key=admission_key(late.hadm_id), value=late.to_bytes())

    crash_on_notes = True
    with pytest.raises(Crash):
        await path.admission(admit)
    crash_on_notes = False
    await path.admission(admit)  # delivered again: its offset was never committed
    state = await store.state(late.hadm_id)
    assert state is not None
    assert state.n_notes == len(notes)
    assert await store.held_notes(late.hadm_id) == []

    await flushall(redis_url)
    await heal.heal()
    assert await store.held_notes(late.hadm_id) == [], "a released note is not held again"
    rebuilt = await store.state(late.hadm_id)
    assert rebuilt is not None
    assert rebuilt.n_notes == len(notes)
    assert rebuilt.score(pipeline.spec.c) == pytest.approx(
        OfflineScorer(tiny_model_dir).scores(notes)[late.hadm_id], abs=1e-6
    )


@pytest.mark.parametrize("redis_url", ["redis"], indirect=True)
async def test_notes_released_in_their_own_batch_are_recorded_as_released(
    redis_url: str, engine: InferenceEngine, tiny_model_dir: Path
) -> None:
    """The admit lands (another worker records it) while the batch holds the admission's notes, so
    the batch releases them itself: the changelog must end with each note applied and its held record
    settled (the held records written first), and a rebuild holds none of them again."""
    [late], notes = feed(1, 3, seed=12)

    class AdmitLandsMeanwhile(RedisRiskStore):
        landed = False

        async def hold_note(self, hadm_id: Any, record: str, deadline: float) -> int:
            held = await super().hold_note(hadm_id, record, deadline)
            if not self.landed:  # once, as the first note is held
                self.landed = True
                await self.record_admission(late)
            return held

    store = AdmitLandsMeanwhile(redis_url)
    changelog = ListTopic()
    heal = healer(store, changelog)
    await heal.start()
    pipeline = waiting_pipeline(engine, store)

    async def record(changes: Any) -> None:
        await heal.record(changelog.send, changes)

    try:
        result = await heal.guard(partial(pipeline.process, notes, record=record))
        await heal.record(changelog.send, result.changes)  # what the worker records after the batch
        assert result.outcomes["held"] == len(notes)
        assert (await store.state(late.hadm_id)).n_notes == len(notes)  # type: ignore[union-attr]

        await flushall(redis_url)
        await heal.heal()
        assert await store.held_notes(late.hadm_id) == []
        rebuilt = await store.state(late.hadm_id)
        assert rebuilt is not None
        assert rebuilt.n_notes == len(notes)
        assert rebuilt.score(pipeline.spec.c) == pytest.approx(
            OfflineScorer(tiny_model_dir).scores(notes)[late.hadm_id], abs=1e-6
        )
    finally:
        await store.close()
