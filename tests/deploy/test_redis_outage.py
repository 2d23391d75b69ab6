"""A Redis server stopped and restarted during a replay loses nothing.

A real redis-server (password, AOF fsynced on every write) and the librdkafka mock cluster: a worker
scores the first half of a synthetic MIMIC-III cohort; Redis is stopped (SIGTERM, as a crash of its
container or host would look to the worker) while the second half is replayed, then started again on
the same port and data. The worker retries the batch it could not store (nothing acked) until Redis
answers; a worker that ended instead is started again, as the compose restart policy would. Offsets
are committed only after the store write, so no note taken during the outage is lost: every
admission's final risk update, and its state in the restarted Redis, must equal the offline score of
all its notes.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from pydantic import SecretStr

from notestream.core.settings import Settings
from notestream.stream.events import AdmissionEvent
from notestream.stream.replay import iter_events
from tests.deploy.flow import (
    assert_matches_offline,
    await_final_scores,
    expected_scores,
    run_replay,
    synthetic_cohort,
)
from tests.deploy.test_containers import _store_scores
from tests.fixtures.deploy import RedisProcess, free_port
from tests.fixtures.kafka import WorkerProcess

pytestmark = pytest.mark.slow


def readyz(settings: Settings) -> tuple[int, dict[str, bool]]:
    """The worker's /readyz: status and the result of each check."""
    reply = httpx.get(f"http://127.0.0.1:{settings.metrics_port}/readyz", timeout=10)
    return reply.status_code, reply.json()["checks"]


STALLED = "Restarting dead <Agent"  # Faust restarted a crashed agent: its taken batch is not redelivered


def test_redis_stopped_and_restarted_during_a_replay_loses_nothing(
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
            "metrics_port": free_port(),
            "metrics_host": "127.0.0.1",
        }
    )
    source = synthetic_cohort(tmp_path / "mimic", n_patients=5, seed=11)
    admitted = sorted(
        {
            e.hadm_id
            for _, _, _, e in iter_events(source)
            if isinstance(e, AdmissionEvent) and e.kind == "admit"
        }
    )
    first, second = admitted[: len(admitted) // 2], admitted[len(admitted) // 2 :]
    expected = expected_scores(source, tiny_model_dir)
    assert {h for h in expected if h in second}, "the outage half of the cohort has nothing to score"
    password = {"NOTESTREAM_REDIS_PASSWORD": redis_process.password}

    worker = start_worker(settings, **password)
    run_replay(settings, source, hadm_ids=first)
    before = {h: s for h, s in expected.items() if h in first}
    assert_matches_offline(
        await_final_scores(settings, before, timeout_s=120, alive=lambda: worker.proc.poll() is None), before
    )

    assert readyz(settings) == (200, {"store": True, "engine": True, "batches": True, "broker": True})

    redis_process.stop()
    run_replay(settings, source, hadm_ids=second)  # Kafka keeps taking notes while Redis is down
    time.sleep(4 * settings.take_within_s + 3.0)  # the worker takes them and fails to store them
    if worker.proc.poll() is None:
        status, checks = readyz(settings)
        assert status == 503  # an orchestrator takes the worker out of rotation meanwhile
        assert checks["store"] is False
    redis_process.start()
    outage_worker = worker
    restarts = 0
    if worker.proc.poll() is not None:  # the restart policy of docker-compose / Kubernetes
        restarts += 1
        worker = start_worker(settings, **password)

    alive = worker.proc.poll
    last = await_final_scores(
        settings, expected, timeout_s=120, alive=lambda: alive() is None and STALLED not in worker.output()
    )
    assert STALLED not in worker.output(), (
        "The worker's agent crashed on the Redis outage and Faust restarted it without redelivering the "
        "notes it had taken (see the outage contract in docs/architecture.md)."
    )
    missing = sorted(set(expected) - set(last))
    assert not missing, f"no update for {missing} after the outage; worker log:\n{worker.output()[-6000:]}"
    assert_matches_offline(last, expected)
    stored = asyncio.run(_store_scores(settings, list(expected)))
    assert stored == pytest.approx(expected, abs=1e-6)
    assert readyz(settings)[0] == 200
    assert worker.stop() == 0, worker.output()[-3000:]
    # the outage was met: the worker retried a batch without acking it, or ended and was restarted
    assert restarts == 1 or "nothing acked" in outage_worker.output(), outage_worker.output()[-3000:]
