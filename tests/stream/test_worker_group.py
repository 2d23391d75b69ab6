"""Two workers in one consumer group share the partitions; one leaves mid-replay and the other takes
its partitions over: every note counted exactly once, every admission's final score the offline one."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from notestream.core.settings import Settings
from notestream.core.topics import ADMISSIONS, NOTES, RISK_UPDATES
from notestream.stream.events import admission_key
from tests.fixtures.kafka import WorkerProcess, produce, read_topic
from tests.stream.feed import assert_store_matches_offline, discharges, feed, final_updates

pytestmark = pytest.mark.slow

ASSIGNED = re.compile(r"Setting newly assigned partitions \{(.*)\} for group")


def notes_partitions(worker: WorkerProcess, topic: str) -> set[int]:
    """The partitions of ``topic`` in the worker's latest assignment (from its log)."""
    found = ASSIGNED.findall(worker.output())
    if not found:
        return set()
    pattern = rf"topic='{re.escape(topic)}', partition=(\d+)"
    return {int(p) for p in re.findall(pattern, found[-1])}


STUCK = "Unexpected error from SyncGroup"


async def wait_for_split(workers: list[WorkerProcess], topic: str, *, timeout_s: float) -> list[set[int]]:
    """The workers' notes partitions once each holds some and together they cover the topic; earlier
    when a worker is stuck out of the group (see the test), or at the timeout."""
    deadline = time.monotonic() + timeout_s
    while True:
        split = [notes_partitions(w, topic) for w in workers]
        if all(split) and len(split[0] | split[1]) == 4:
            return split
        if time.monotonic() > deadline or any(STUCK in w.output() for w in workers):
            return split
        assert all(w.proc.poll() is None for w in workers), workers[0].output()[-2000:]
        await asyncio.sleep(0.2)


async def test_two_workers_share_the_group_and_hand_over(
    kafka_settings: Settings,
    redis_url: str,
    tiny_model_dir: Path,
    start_worker: Callable[..., WorkerProcess],
) -> None:
    settings = kafka_settings.model_copy(
        update={"store": redis_url, "model_dir": tiny_model_dir, "take_max": 4, "max_wait_ms": 30.0}
    )
    notes_topic = settings.topic(NOTES)
    workers = [start_worker(settings), start_worker(settings)]
    split = await wait_for_split(workers, notes_topic, timeout_s=60)
    for _ in range(4):
        stuck = [i for i, w in enumerate(workers) if STUCK in w.output()]
        if not stuck:
            break
        # librdkafka's mock coordinator completes a rebalance as soon as the leader's SyncGroup arrives,
        # and answers a follower whose SyncGroup comes after it with INVALID_REQUEST (a real broker
        # holds it until the leader has synced); aiokafka then never rejoins: the worker stays up
        # without partitions and never ready, as an orchestrator's readiness probe would see. Restart
        # it, as one would.
        for i in stuck:
            workers[i].kill()
            workers[i] = start_worker(settings)
        split = await wait_for_split(workers, notes_topic, timeout_s=60)
    assert all(split), f"the group never split the notes partitions: {split}"
    assert not split[0] & split[1], "a partition went to both workers"

    admissions, notes = feed(24, 5, seed=8)
    produce(settings, ADMISSIONS, [(admission_key(a.hadm_id), a.to_bytes()) for a in admissions])
    produce(settings, NOTES, [(admission_key(n.hadm_id), n.to_bytes()) for n in notes])
    seen = read_topic(settings, RISK_UPDATES, until=lambda ms: len(ms) >= 30, timeout_s=90)
    assert len(seen) >= 30
    assert workers[1].stop() == 0  # leaves the group cleanly; the other worker takes its partitions
    produce(settings, ADMISSIONS, [(admission_key(a.hadm_id), a.to_bytes()) for a in discharges(admissions)])

    def done(msgs: list[Any]) -> bool:
        last = final_updates(msgs)
        return len(last) == len(admissions) and all(u.final and u.n_notes == 5 for u in last.values())

    updates = read_topic(
        settings, RISK_UPDATES, until=done, timeout_s=150, alive=lambda: workers[0].proc.poll() is None
    )
    assert done(updates), workers[0].output()[-3000:]
    assert notes_partitions(workers[0], notes_topic) == {0, 1, 2, 3}, "the remaining worker took over"

    await assert_store_matches_offline(
        redis_url, tiny_model_dir, admissions, notes, notes_per_admission=5, discharged=True
    )
    assert workers[0].stop() == 0
