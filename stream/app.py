"""The worker's Faust app: topics, two agents and the readiness wiring. The thin Kafka adapter.

Read the note's path in :mod:`notestream.stream.note_path`; this module only connects it to Faust:

- the ``notes`` agent takes batches (``stream.take_events``) and calls :meth:`NotePath.notes` once per
  batch; the ``admissions`` agent calls :meth:`NotePath.admission` once per event;
- each call runs through :func:`notestream.stream.guard.until_done`, which retries infrastructure failures and ends
  the process on anything else (failures of one message never reach it: the path dead-letters them);
- the producer accepts records up to ``settings.dead_letter_max_bytes`` plus 64 KiB, so every dead
  letter the path builds can be sent.

Topics (``settings.topic(...)`` adds the prefix) carry raw bytes (``value_serializer="raw"``) and are
parsed by the path, so every bad message can be dead-lettered with its original bytes.

Delivery: Faust's ``stream.take`` turns automatic acks off and acks the events of a batch only after
the agent's body for that batch has returned; Faust's consumer commits, every
``settings.commit_interval_s``, the highest offset per partition below which every message is acked.
The body returns only after the store writes AND after every risk update and dead letter of the batch
is delivered (their producer futures are awaited). So offsets are committed only after the store write
and the emit: at-least-once delivery. A crash replays the uncommitted tail; the store dedupes it by
(note_id, revision), so aggregates count every note exactly once. For such a duplicate the worker
re-emits the admission's current state (same ``seq``): an update lost between the store write and the
emit by a crash is thus emitted on redelivery, and subscribers drop the repeat of a ``seq`` they saw.

The engine and the store are created by :class:`~notestream.stream.runtime.Runtime` when the first agent starts
(so a model loads once per process and is shared by both agents) and closed on the app's
``on_before_shutdown``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import faust
from faust.types import EventT

from notestream.core.settings import Settings
from notestream.core.topics import ADMISSIONS, NOTES, NOTES_DLQ, RISK_UPDATES, STORE_CHANGELOG
from notestream.stream.faust_transport import App
from notestream.stream.guard import until_done
from notestream.stream.kafka import faust_broker_options
from notestream.stream.note_path import PRODUCER_HEADROOM_BYTES, NotePath, Origin
from notestream.stream.runtime import BrokerCheck, Runtime

__all__ = ["WorkerApp", "create_app"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class WorkerApp:
    """The worker's parts: the Faust app, the runtime (engine, store), the path and the broker check."""

    app: faust.App
    runtime: Runtime
    path: NotePath
    broker_check: BrokerCheck
    consuming: asyncio.Event
    """Set once the runtime is ready and the group assigned this worker its partitions."""


def create_app(
    settings: Settings, *, runtime: Runtime | None = None, ready_file: Path | None = None
) -> WorkerApp:
    """The worker: a notes agent (batches via ``take``) and an admissions agent, around one path.

    ``ready_file`` is written once the engine and store are up and partitions are assigned, so a
    parent process (the demo, benchmarks) knows when the worker consumes.
    """
    runtime = runtime or Runtime(settings)
    app = App(
        settings.consumer_group,
        fetch_max_wait_ms=settings.fetch_max_wait_ms,
        idempotent=settings.kafka_idempotence,
        **faust_broker_options(settings),
        store="memory://",
        autodiscover=False,
        topic_allow_declare=False,  # topics come from `notestream topics` (auto-creation off in production)
        # no `<group>-__assignor-__leader` topic: it elects a leader for Faust tables and on_leader
        # timers, which the worker has none of; so it subscribes only to the topics `topics` creates
        topic_disable_leader=True,
        topic_partitions=settings.partitions,
        web_enabled=False,
        consumer_auto_offset_reset="earliest",
        broker_session_timeout=settings.session_timeout_s,
        broker_heartbeat_interval=min(3.0, settings.session_timeout_s / 3),
        broker_commit_interval=settings.commit_interval_s,
        broker_commit_every=10_000,
        producer_acks=-1,
        producer_max_request_size=settings.dead_letter_max_bytes + PRODUCER_HEADROOM_BYTES,
        stream_wait_empty=True,
        logging_config=None,
    )
    topics = {
        kind: app.topic(
            settings.topic(kind), key_serializer="raw", value_serializer="raw", partitions=settings.partitions
        )
        for kind in (NOTES, ADMISSIONS, RISK_UPDATES, NOTES_DLQ, STORE_CHANGELOG)
    }

    async def send(topic: str, key: bytes | None, value: bytes) -> Any:
        return await topics[topic].send(key=key, value=value)

    path = NotePath(settings, runtime.ready, send, metrics=runtime.metrics, healer=lambda: runtime.healer)
    broker_check = BrokerCheck(app)
    runtime.add_check("broker", broker_check)
    consuming = asyncio.Event()

    def record_lag(events: Sequence[EventT]) -> None:
        """This worker's lag per partition after a batch: high watermark minus the next offset."""
        metrics = runtime.metrics
        if metrics is None:
            return
        last: dict[Any, int] = {}
        for event in events:
            msg = event.message
            last[msg.tp] = max(last.get(msg.tp, -1), msg.offset)
        for tp, offset in last.items():
            highwater = app.consumer.highwater(tp)
            if highwater is not None:
                metrics.observe_consumer_lag(tp.topic, tp.partition, highwater - offset - 1)

    async def forget_lag(sender: Any, revoked: Any = (), **kwargs: Any) -> None:
        if runtime.metrics is not None:
            for tp in revoked:
                runtime.metrics.forget_partition(tp.topic, tp.partition)

    @app.agent(topics[NOTES], name="notes")
    async def notes_agent(stream: faust.StreamT) -> None:
        await until_done("starting the worker", runtime.ready_step, on_state=runtime.set_healthy)
        batches = stream.take_events(settings.take_max, within=settings.take_within_s)  # type: ignore[attr-defined]
        async for events in batches:
            origins = [Origin.of(event.message) for event in events]

            async def batch(origins: list[Origin] = origins, events: list[EventT] = events) -> None:
                await path.notes(origins)
                record_lag(events)

            await until_done(f"a batch of {len(origins)} notes", batch, on_state=runtime.set_healthy)

    @app.agent(topics[ADMISSIONS], name="admissions")
    async def admissions_agent(stream: faust.StreamT) -> None:
        await until_done("starting the worker", runtime.ready_step, on_state=runtime.set_healthy)
        async for event in stream.events():
            origin = Origin.of(event.message)

            async def one(origin: Origin = origin, event: EventT = event) -> None:
                await path.admission(origin)
                record_lag([event])

            await until_done("an admission event", one, on_state=runtime.set_healthy)

    @app.timer(interval=min(30.0, max(0.5, settings.admission_wait_s / 4)))
    async def expire_held() -> None:
        """Notes held for an admission that never came: dead letters once admission_wait_s is over."""
        if runtime.pipeline is not None:

            async def expire() -> None:
                await path.expire()

            await until_done("expiring held notes", expire, on_state=runtime.set_healthy)

    @app.timer(interval=30.0)
    async def report() -> None:
        if runtime.pipeline is not None:
            log.info("Worker counters: %s", dict(runtime.pipeline.counters))

    async def announce(n: int) -> None:
        await runtime.wait_ready()  # waits while the agents retry the start-up; never raises
        consuming.set()
        if ready_file is not None and n:
            await asyncio.to_thread(ready_file.write_text, f"{n} partitions\n", "utf-8")

    async def on_assigned(sender: Any, assigned: Any = (), **kwargs: Any) -> None:
        # never block a rebalance callback (a slow one outlives the session timeout): write in a task
        app.add_future(announce(len(assigned)))

    app.on_partitions_assigned.connect(on_assigned)  # type: ignore[arg-type]
    app.on_partitions_assigned.connect(broker_check.assigned)  # type: ignore[arg-type]
    app.on_partitions_revoked.connect(broker_check.revoked)  # type: ignore[arg-type]
    app.on_partitions_revoked.connect(forget_lag)  # type: ignore[arg-type]

    async def close_runtime(sender: Any, *args: Any, **kwargs: Any) -> None:
        await runtime.close()

    app.on_before_shutdown.connect(close_runtime)  # type: ignore[arg-type]

    return WorkerApp(app, runtime, path, broker_check, consuming)
