"""SIGKILL of a worker in the middle of a replay, then a restart: every note counted exactly once."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from notestream.core.settings import Settings
from notestream.core.topics import ADMISSIONS, NOTES, RISK_UPDATES
from notestream.stream.events import RiskUpdate, admission_key
from tests.fixtures.kafka import WorkerProcess, produce, read_topic
from tests.stream.feed import assert_store_matches_offline, discharges, feed, final_updates

pytestmark = pytest.mark.slow


async def test_sigkill_mid_replay_then_restart_counts_every_note_once(
    kafka_settings: Settings,
    redis_url: str,
    tiny_model_dir: Path,
    start_worker: Callable[..., WorkerProcess],
) -> None:
    # small batches and an engine that waits 60 ms to fill each one: the replay takes a few seconds.
    # The first worker never reaches its commit interval, so every note it applied before the kill
    # is behind the committed offset and must come back, deterministically, to the second worker.
    settings = kafka_settings.model_copy(
        update={
            "store": redis_url,
            "model_dir": tiny_model_dir,
            "take_max": 4,
            "max_wait_ms": 60.0,
            "max_batch_size": 256,
            "commit_interval_s": 1.0,
        }
    )
    never_commits = settings.model_copy(update={"commit_interval_s": 3600.0})
    admissions, notes = feed(30, 5, seed=21)
    produce(settings, ADMISSIONS, [(admission_key(a.hadm_id), a.to_bytes()) for a in admissions])
    produce(settings, NOTES, [(admission_key(n.hadm_id), n.to_bytes()) for n in notes])
    produce(settings, ADMISSIONS, [(admission_key(a.hadm_id), a.to_bytes()) for a in discharges(admissions)])
    expected_notes = 5

    first = start_worker(never_commits)
    seen = read_topic(
        settings,
        RISK_UPDATES,
        until=lambda ms: len(ms) >= 40,
        timeout_s=60,
        alive=lambda: first.proc.poll() is None,
    )
    assert len(seen) >= 40, first.output()[-3000:]
    first.kill()
    partial = final_updates(read_topic(settings, RISK_UPDATES, until=lambda ms: False, timeout_s=1.0))
    assert sum(u.n_notes for u in partial.values()) < len(notes), "the kill must land mid-replay"

    second = start_worker(settings)

    def done(msgs: list[Any]) -> bool:
        last = final_updates(msgs)
        return len(last) == len(admissions) and all(
            u.final and u.n_notes == expected_notes for u in last.values()
        )

    updates = read_topic(
        settings, RISK_UPDATES, until=done, timeout_s=120, alive=lambda: second.proc.poll() is None
    )
    assert done(updates), second.output()[-3000:]
    assert second.stop() == 0

    await assert_store_matches_offline(
        redis_url, tiny_model_dir, admissions, notes, notes_per_admission=expected_notes
    )
    # the restart replayed notes the first worker had applied but not committed
    # (nothing was committed before the kill, so each note the first worker applied comes back to the
    # second one as a duplicate: re-announced with change=None, never counted again)
    reemitted = [RiskUpdate.from_bytes(m.value()) for m in updates]
    duplicates = {u.trigger_note_id for u in reemitted if u.change is None and u.trigger_note_id is not None}
    applied_before_kill = sum(u.n_notes for u in partial.values())
    assert applied_before_kill > 0
    assert len(duplicates) >= applied_before_kill, "expected redelivered (duplicate) notes after the kill"
