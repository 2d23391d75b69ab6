"""A Redis that loses its data mid-replay (FLUSHALL, then a restart without persistence) is healed.

A real redis-server, the embedded broker and a real worker process: the cohort is replayed in three
time slices (so admissions span the losses); between them Redis is flushed, then restarted empty.
The worker notices the lost store (the epoch check of every write), rebuilds it from the store
changelog without running the model again, and carries on. Every admission's final risk update, and
its state in Redis, equal the offline score of all its notes, ``n_notes`` is exact, and ``seq`` never
goes backwards on the risk-updates topic.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

import pytest
import redis
from pydantic import SecretStr

from notestream.core.settings import Settings
from notestream.core.topics import RISK_UPDATES
from notestream.models.spec import ModelSpec
from notestream.stream.events import NoteEvent, RiskUpdate
from notestream.stream.replay import ReplaySource, iter_events
from notestream.stream.store.heal import read_changelog
from tests.deploy.flow import assert_matches_offline, await_final_scores, run_replay, synthetic_cohort
from tests.deploy.test_containers import _store_scores
from tests.fixtures.deploy import RedisProcess
from tests.fixtures.kafka import WorkerProcess, read_topic
from tests.stream.feed import OfflineScorer

pytestmark = pytest.mark.slow


def notes_until(source: ReplaySource, spec: ModelSpec, until: datetime | None) -> list[NoteEvent]:
    """The notes the model scores among the events before ``until`` (all when None)."""
    return [
        e
        for t, _, _, e in iter_events(source)
        if isinstance(e, NoteEvent)
        and (until is None or t < until)
        and spec.window.admits(
            admit=e.admit_time, chart_time=e.chart_time, chart_date=e.chart_date, category=e.category
        )
    ]


def live_notes(notes: list[NoteEvent]) -> dict[int, int]:
    """Notes held per admission: the latest revision of each note, retracted ones left out."""
    latest: dict[tuple[int, str], NoteEvent] = {}
    for n in notes:
        old = latest.get((n.hadm_id, n.note_id))
        if old is None or (n.revision, n.is_error) > (old.revision, old.is_error):
            latest[(n.hadm_id, n.note_id)] = n
    counts: dict[int, int] = {}
    for (hadm, _), n in latest.items():
        counts[hadm] = counts.get(hadm, 0) + (not n.is_error)
    return counts


def test_a_store_that_loses_its_data_mid_replay_is_rebuilt_exactly(
    kafka_settings: Settings,
    redis_process: RedisProcess,
    tiny_model_dir: Path,
    start_worker: Callable[..., WorkerProcess],
    tmp_path: Path,
) -> None:
    settings = kafka_settings.model_copy(
        update={
            "store": redis_process.url,
            "redis_password": SecretStr(redis_process.password),
            "redis_timeout_s": 1.0,
            "model_dir": tiny_model_dir,
        }
    )
    password = {"NOTESTREAM_REDIS_PASSWORD": redis_process.password}
    spec = ModelSpec.read(tiny_model_dir)
    source = synthetic_cohort(tmp_path / "mimic", n_patients=5, seed=11)
    times = sorted(t for t, _, _, e in iter_events(source) if isinstance(e, NoteEvent))
    cuts = [times[len(times) // 3], times[2 * len(times) // 3]]
    offline = OfflineScorer(tiny_model_dir)

    def expected(until: datetime | None) -> dict[int, float]:
        scores = offline.scores(notes_until(source, spec, until))
        return {h: s for h, s in scores.items() if s is not None}

    worker = start_worker(settings, **password)

    def alive() -> bool:
        return worker.proc.poll() is None

    run_replay(settings, source, until=cuts[0])
    assert_matches_offline(
        await_final_scores(settings, expected(cuts[0]), timeout_s=120, alive=alive), expected(cuts[0])
    )

    client = redis.Redis(host="127.0.0.1", port=redis_process.port, password=redis_process.password)
    client.flushall()  # as a failover to a replica that had not caught up would leave it
    client.close()
    run_replay(settings, source, since=cuts[0], until=cuts[1])
    assert_matches_offline(
        await_final_scores(settings, expected(cuts[1]), timeout_s=120, alive=alive), expected(cuts[1])
    )

    redis_process.stop()
    redis_process.start(appendonly=False)  # a restart without persistence: empty
    run_replay(settings, source, since=cuts[1])
    if worker.proc.poll() is not None:  # the restart policy, should the worker have ended meanwhile
        worker = start_worker(settings, **password)
    everything = expected(None)
    last = await_final_scores(settings, everything, timeout_s=120, alive=alive)
    assert_matches_offline(last, everything)
    held = live_notes(notes_until(source, spec, None))
    assert {h: last[h].n_notes for h in everything} == {h: held[h] for h in everything}
    assert asyncio.run(_store_scores(settings, list(everything))) == pytest.approx(everything, abs=1e-6)

    seqs: dict[int, list[int]] = {}
    for msg in read_topic(settings, RISK_UPDATES, until=lambda m: False, timeout_s=3):
        update = RiskUpdate.from_bytes(msg.value())
        seqs.setdefault(update.hadm_id, []).append(update.seq)
    for hadm, order in seqs.items():
        assert order == sorted(order), f"seq went backwards for admission {hadm}: {order}"
    changelog = asyncio.run(read_changelog(settings))
    assert len(changelog) >= sum(held.values()), "a record per held note"
    stored = b"".join(changelog.values()).decode()
    texts = [n.text for n in notes_until(source, spec, None) if len(n.text) > 40]
    assert texts
    assert not [t for t in texts if t[:40] in stored], "note text in the store changelog"
    output = worker.output()
    assert output.count("Store rebuilt from the changelog") >= 1, output[-4000:]
    assert worker.stop() == 0, output[-3000:]
