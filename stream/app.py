"""The Faust app of the worker: topics, agents, dead letters. The thin Kafka adapter of the pipeline.

Topics (``settings.topic(...)`` adds the prefix) carry raw bytes (``value_serializer="raw"``) and are
parsed here with :mod:`notestream.stream.events`, so every bad message can be dead-lettered with its original
bytes: invalid JSON, schema errors, a missing admission id, text over ``settings.max_note_bytes`` and
non-UTF-8 bytes go to ``notes-dlq`` as a :class:`~notestream.stream.events.DeadLetter` with reason, detail, topic,
partition and offset, while the good notes of the same batch keep flowing.

Delivery: Faust's ``stream.take`` turns automatic acks off and acks the events of a batch only after
the agent's body for that batch has returned; Faust's consumer commits, every
``settings.commit_interval_s``, the highest offset per partition below which every message is acked.
The body returns only after the store writes AND after every risk update and dead letter of the batch
is delivered (their producer futures are awaited). So offsets are committed only after the store write
and the emit: at-least-once delivery. A crash replays the uncommitted tail; the store dedupes it by
(note_id, revision), so aggregates count every note exactly once. For such a duplicate the worker
re-emits the admission's current state (same ``seq``): an update lost between the store write and the
emit by a crash is thus emitted on redelivery, and subscribers drop the repeat of a ``seq`` they saw.

Each batch runs through :func:`notestream.stream.guard.until_done`: transient failures (store unreachable, engine
overloaded, a failed send) are retried without acking; anything else ends the process without acking
(Faust's ``take`` would otherwise ack a failed batch in its ``finally``), so a restart redelivers it.

The engine and the store are created by :class:`~notestream.stream.runtime.Runtime` when the first agent starts
(so a model loads once per process and is shared by both agents) and closed on the app's
``on_before_shutdown``; its readiness checks, :class:`~notestream.stream.runtime.BrokerCheck` among them, live
in :mod:`notestream.stream.runtime` too (both are re-exported here).
"""

from __future__ import annotations

import asyncio
import base64
import logging
from collections.abc import Sequence
from functools import partial
from pathlib import Path
from typing import Any

import faust
from faust.types import EventT

from notestream.core.settings import Settings
from notestream.core.topics import ADMISSIONS, NOTES, NOTES_DLQ, RISK_UPDATES
from notestream.stream.errors import EventError
from notestream.stream.events import (
    AdmissionEvent,
    DeadLetter,
    NoteEvent,
    RiskUpdate,
    admission_key,
    check_key,
    parse_event,
    parse_note,
    utcnow,
)
from notestream.stream.faust_transport import App
from notestream.stream.guard import until_done
from notestream.stream.kafka import faust_broker_options
from notestream.stream.runtime import BrokerCheck, Runtime

__all__ = ["BrokerCheck", "Runtime", "create_app"]

log = logging.getLogger(__name__)


def create_app(
    settings: Settings, *, runtime: Runtime | None = None, ready_file: Path | None = None
) -> faust.App:
    """The worker's Faust app: a notes agent (batches via ``take``) and an admissions agent.

    ``ready_file`` is written once the engine and store are up and partitions are assigned, so a
    parent process (the demo, benchmarks) knows when the worker consumes.
    """
    runtime = runtime or Runtime(settings)
    app = App(
        settings.consumer_group,
        fetch_max_wait_ms=settings.fetch_max_wait_ms,
        **faust_broker_options(settings),
        store="memory://",
        autodiscover=False,
        topic_allow_declare=False,  # the mock cluster has no CreateTopics; real clusters: `notestream topics`
        topic_partitions=settings.partitions,
        web_enabled=False,
        consumer_auto_offset_reset="earliest",
        broker_session_timeout=settings.session_timeout_s,
        broker_heartbeat_interval=min(3.0, settings.session_timeout_s / 3),
        broker_commit_interval=settings.commit_interval_s,
        broker_commit_every=10_000,
        producer_acks=-1,
        stream_wait_empty=True,
        logging_config=None,
    )

    def raw_topic(name: str) -> faust.TopicT:
        return app.topic(
            settings.topic(name), key_serializer="raw", value_serializer="raw", partitions=settings.partitions
        )

    notes_topic = raw_topic(NOTES)
    admissions_topic = raw_topic(ADMISSIONS)
    updates_topic = raw_topic(RISK_UPDATES)
    dlq_topic = raw_topic(NOTES_DLQ)
    app.runtime = runtime  # type: ignore[attr-defined]
    runtime.broker_check = BrokerCheck(app)

    async def emit(updates: Sequence[RiskUpdate], letters: Sequence[DeadLetter]) -> None:
        """Send updates and dead letters and wait until the broker has them all."""
        futures = []
        for update in updates:
            stamped = update.model_copy(update={"emitted_at": utcnow()})
            futures.append(
                await updates_topic.send(key=admission_key(update.hadm_id), value=stamped.to_bytes())
            )
        for letter in letters:
            futures.append(await dlq_topic.send(key=letter.key, value=letter.to_bytes()))
        if futures:
            await asyncio.gather(*futures)
        if runtime.metrics is not None and updates:
            runtime.metrics.updates_out.inc(len(updates))
            now = utcnow()
            for update in updates:
                if update.change is not None and update.produced_at is not None:
                    runtime.metrics.observe_note_to_update(now - update.produced_at)

    def dead_letter(event: EventT, error: EventError) -> DeadLetter:
        msg = event.message
        log.warning(
            "Dead letter from %s[%s]@%s: %s (%s).",
            msg.topic,
            msg.partition,
            msg.offset,
            error.reason,
            error.detail,
        )
        return DeadLetter.from_error(
            bytes(msg.value or b""),
            error,
            topic=msg.topic,
            partition=msg.partition,
            offset=msg.offset,
            key=msg.key,
        )

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

    async def notes_batch(events: Sequence[EventT]) -> None:
        pipeline = await runtime.ready()
        letters: list[DeadLetter] = []
        notes: list[NoteEvent] = []
        refs: list[dict[str, Any]] = []
        source: dict[int, EventT] = {}
        for event in events:
            try:
                note = parse_note(
                    bytes(event.message.value or b""),
                    max_text_bytes=settings.max_note_bytes,
                    source_timezone=settings.source_zone,
                )
                check_key(event.message.key, note.hadm_id)
            except EventError as exc:
                letters.append(dead_letter(event, exc))
                continue
            notes.append(note)
            refs.append(note_ref(event))
            source[id(note)] = event
        result = await pipeline.process(notes, refs) if notes else None
        updates: list[RiskUpdate] = []
        if result is not None:
            updates = result.updates
            for rej in result.rejected:
                letters.append(dead_letter(source[id(rej.note)], EventError(rej.reason, rej.detail)))
        await emit(updates, letters)
        metrics = runtime.metrics
        if metrics is not None:
            metrics.notes_in.inc(len(events))
            for letter in letters:
                metrics.dead_letter(letter.reason)
            for reason, n in (result.dropped if result else {}).items():
                metrics.notes_dropped.labels(reason=reason).inc(n)
            record_lag(events)

    async def admission_event(event: EventT) -> None:
        pipeline = await runtime.ready()
        try:
            admission = parse_event(
                bytes(event.message.value or b""), AdmissionEvent, source_timezone=settings.source_zone
            )
            check_key(event.message.key, admission.hadm_id)
        except EventError as exc:
            letter = dead_letter(event, exc)
            await emit([], [letter])
            if runtime.metrics is not None:
                runtime.metrics.dead_letter(letter.reason)
            return
        final = await pipeline.admission(admission)
        released = await pipeline.release(admission.hadm_id)  # notes that waited for this admission
        await emit([*([final] if final is not None else []), *released.updates], [])
        record_lag([event])

    def note_ref(event: EventT) -> dict[str, Any]:
        """Where a note was read, kept with it while it waits for its admission (no text)."""
        msg = event.message
        key = base64.urlsafe_b64encode(msg.key).decode("ascii") if msg.key is not None else None
        return {"topic": msg.topic, "partition": msg.partition, "offset": msg.offset, "key": key}

    @app.timer(interval=min(30.0, max(0.5, settings.admission_wait_s / 4)))
    async def expire_held() -> None:
        """Dead-letter the held notes whose admission never came (admission_unknown), then forget them."""
        if runtime.pipeline is None:
            return
        pipeline = runtime.pipeline
        expired = await pipeline.expired()
        letters = [
            DeadLetter(
                reason="admission_unknown",
                detail=f"{item.detail}; the note is at {item.ref.get('topic')}[{item.ref.get('partition')}]"
                f"@{item.ref.get('offset')}",
                topic=str(item.ref.get("topic") or settings.topic(NOTES)),
                partition=item.ref.get("partition"),
                offset=item.ref.get("offset"),
                key=base64.urlsafe_b64decode(item.ref["key"]) if item.ref.get("key") else None,
                original=b"",  # the text was never held; the note stays on the notes topic
            )
            for item in expired
        ]
        if letters:
            await emit([], letters)
            await pipeline.forget(expired)
            if runtime.metrics is not None:
                for letter in letters:
                    runtime.metrics.dead_letter(letter.reason)

    @app.agent(notes_topic, name="notes")
    async def notes_agent(stream: faust.StreamT) -> None:
        await until_done("starting the worker", runtime.ready_step, on_state=runtime.set_healthy)
        batches = stream.take_events(settings.take_max, within=settings.take_within_s)  # type: ignore[attr-defined]
        async for events in batches:
            await until_done(
                f"a batch of {len(events)} notes", partial(notes_batch, events), on_state=runtime.set_healthy
            )

    @app.agent(admissions_topic, name="admissions")
    async def admissions_agent(stream: faust.StreamT) -> None:
        await until_done("starting the worker", runtime.ready_step, on_state=runtime.set_healthy)
        async for event in stream.events():
            await until_done(
                "an admission event", partial(admission_event, event), on_state=runtime.set_healthy
            )

    @app.timer(interval=30.0)
    async def report() -> None:
        if runtime.pipeline is not None:
            log.info("Worker counters: %s", dict(runtime.pipeline.counters))

    async def write_ready(n: int) -> None:
        await runtime.ready()
        assert ready_file is not None
        await asyncio.to_thread(ready_file.write_text, f"{n} partitions\n", "utf-8")

    async def on_assigned(sender: Any, assigned: Any = (), **kwargs: Any) -> None:
        # never block a rebalance callback (a slow one outlives the session timeout): write in a task
        if ready_file is not None and assigned:
            app.add_future(write_ready(len(assigned)))

    app.on_partitions_assigned.connect(on_assigned)  # type: ignore[arg-type]
    app.on_partitions_assigned.connect(runtime.broker_check.assigned)  # type: ignore[arg-type]
    app.on_partitions_revoked.connect(runtime.broker_check.revoked)  # type: ignore[arg-type]
    app.on_partitions_revoked.connect(forget_lag)  # type: ignore[arg-type]

    async def close_runtime(sender: Any, *args: Any, **kwargs: Any) -> None:
        await runtime.close()

    app.on_before_shutdown.connect(close_runtime)  # type: ignore[arg-type]

    return app
