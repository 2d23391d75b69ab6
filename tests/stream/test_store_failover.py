"""A replay through a primary failover ends exact: Sentinel FAILOVER and CLUSTER FAILOVER mid-stream.

The pipeline driven in-process (tiny model, real engine) against the store on real servers
(tests/fixtures/redis_ha.py). Batches that meet the failover fail with StoreUnavailable and are run
again, as the worker's guard does (nothing acked meanwhile). Every admission ends with its offline
score and its exact note count.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from functools import partial
from pathlib import Path

import pytest
from redis.crc import key_slot

from notestream.models.engine import InferenceEngine
from notestream.stream.errors import StoreUnavailable
from notestream.stream.pipeline import Pipeline
from notestream.stream.store import RedisRiskStore
from tests.fixtures.redis_ha import HaRedis, cluster_failover, sentinel_failover
from tests.stream.feed import OfflineScorer, feed


@pytest.fixture(scope="module")
def offline(tiny_model_dir: Path) -> OfflineScorer:
    return OfflineScorer(tiny_model_dir)


@pytest.fixture
async def engine(tiny_model_dir: Path) -> AsyncIterator[InferenceEngine]:
    eng = InferenceEngine(tiny_model_dir, devices=["cpu"], max_wait_ms=1.0)
    await eng.start()
    yield eng
    await eng.close()


async def retried(step: Callable[[], Awaitable[object]]) -> int:
    """Run ``step`` until the store answers (notestream.stream.guard.until_done's transient branch); returns retries."""
    for attempt in range(600):
        try:
            await step()
            return attempt
        except StoreUnavailable:
            await asyncio.sleep(0.1)
    raise AssertionError("the store did not come back within a minute")


@pytest.mark.parametrize("kind", ["sentinel", "cluster"])
async def test_a_replay_through_a_primary_failover_ends_exact(
    kind: str, request: pytest.FixtureRequest, engine: InferenceEngine, offline: OfflineScorer
) -> None:
    ha: HaRedis = request.getfixturevalue(f"redis_{kind}")
    ha.flush()
    _, notes = feed(6, 5, seed=8)
    store = RedisRiskStore(ha.url, pool_size=8, timeout_s=1.0, min_replicas=1 if kind == "sentinel" else 0)
    pipeline = Pipeline(engine, store, engine.spec, model="tiny")
    batches = [notes[i : i + 3] for i in range(0, len(notes), 3)]
    first = notes[0].hadm_id
    if kind == "sentinel":
        failover: Callable[[], int] = lambda: sentinel_failover(ha)  # noqa: E731
    else:
        failover = lambda: cluster_failover(ha, key_slot(str(first).encode()))  # noqa: E731
    try:
        for batch in batches[:3]:
            await retried(partial(pipeline.process, batch))
        switching = asyncio.create_task(asyncio.to_thread(failover))  # writes keep coming meanwhile
        for batch in batches[3:6]:
            await retried(partial(pipeline.process, batch))
        await switching
        for batch in batches[6:]:
            await retried(partial(pipeline.process, batch))
        expected = offline.scores(notes)
        counts = Counter(n.hadm_id for n in notes)
        for hadm, count in counts.items():
            state = await store.state(hadm)
            assert state is not None
            assert state.n_notes == count, f"admission {hadm}"
            assert state.seq == count, "each note applied once"
            if expected[hadm] is None:
                assert state.score() is None
            else:
                assert state.score(engine.spec.c) == pytest.approx(expected[hadm], abs=1e-6)
    finally:
        await store.close()
