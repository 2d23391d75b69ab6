"""Events of EHR ingest to Kafka: acknowledged writes, dead letters for rejected source messages.

:class:`EventSink` wraps one aiokafka producer (``acks=all``). :meth:`EventSink.deliver` returns only
once Kafka acknowledged every event of one source message, which is when the listener may answer AA
(HL7) or 2xx (FHIR); a Kafka failure raises :class:`~notestream.stream.errors.BrokerError` and the sender is told
to resend. Events are keyed by their admission id (one admission, one partition) and stamped with
``produced_at`` as they are sent. A rejected source message is written to the dead-letter topic with
its reason (:meth:`EventSink.dead_letter`): its bytes there may hold PHI and are never logged.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import TYPE_CHECKING, Any

from aiokafka.errors import KafkaError

from notestream.core.settings import Settings
from notestream.core.topics import NOTES_DLQ
from notestream.stream.errors import BrokerError
from notestream.stream.events import DeadLetter, Event, admission_key, utcnow
from notestream.stream.ingest.errors import IngestError

if TYPE_CHECKING:
    from notestream.stream.metrics import Metrics


@dataclass
class IngestCounts:
    """What one ingest process received, produced and rejected (by dead-letter reason).

    ``ignored``: source messages accepted that give no event (an ORU without text, a Patient line of
    a bulk export); ``skipped``: resources of other types inside accepted FHIR Bundles."""

    received: int = 0
    accepted: int = 0
    ignored: int = 0
    skipped: int = 0
    events: dict[str, int] = field(default_factory=dict)
    rejected: dict[str, int] = field(default_factory=dict)
    failed: int = 0

    def as_dict(self) -> dict[str, Any]:
        return {
            "received": self.received,
            "accepted": self.accepted,
            "ignored": self.ignored,
            "skipped": self.skipped,
            "events": dict(self.events),
            "rejected": dict(self.rejected),
            "failed": self.failed,
        }


class EventSink:
    """Produces events and dead letters; use ``async with EventSink(settings) as sink``.

    ``linger_ms`` is 0 by default: an MLLP sender waits for each ACK, so batching gains nothing and
    would add its wait to every message. ``overrides`` go to the aiokafka producer.
    """

    def __init__(
        self, settings: Settings, *, linger_ms: int = 0, metrics: Metrics | None = None, **overrides: Any
    ) -> None:
        from notestream.stream.kafka import producer

        self.settings = settings
        self.counts = IngestCounts()
        self.metrics = metrics
        self._producer = producer(settings, linger_ms=linger_ms, **overrides)

    async def __aenter__(self) -> EventSink:
        try:
            await self._producer.start()
        except (KafkaError, OSError) as exc:
            await self._producer.stop()
            raise BrokerError(
                f"Ingest cannot reach the broker {self.settings.broker} ({exc}); check --broker and that "
                "Kafka is up."
            ) from exc
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self._producer.stop()

    async def send(self, items: Sequence[tuple[str, Event]]) -> list[asyncio.Future[Any]]:
        """Hand the events to the producer; the futures resolve once Kafka acknowledged each."""
        futures = []
        try:
            for topic, event in items:
                stamped = event.model_copy(update={"produced_at": utcnow()})
                key = admission_key(stamped.hadm_id)  # type: ignore[attr-defined]
                futures.append(
                    await self._producer.send(self.settings.topic(topic), value=stamped.to_bytes(), key=key)
                )
        except (KafkaError, OSError) as exc:
            raise BrokerError(f"Kafka did not take the events ({type(exc).__name__}); resend later.") from exc
        return futures

    async def wait(self, futures: Sequence[asyncio.Future[Any]]) -> None:
        """Wait for Kafka's acknowledgement of every future; a failure raises BrokerError."""
        try:
            await asyncio.gather(*futures)
        except (KafkaError, OSError) as exc:
            raise BrokerError(
                f"Kafka did not acknowledge the events ({type(exc).__name__}); resend later."
            ) from exc

    async def deliver(self, items: Sequence[tuple[str, Event]]) -> None:
        """Produce the events of one source message and wait until Kafka holds them all."""
        await self.wait(await self.send(items))
        self.count(items)

    def count(self, items: Sequence[tuple[str, Event]]) -> None:
        """Count one accepted source message and its events (:meth:`deliver` does this itself)."""
        self.counts.accepted += 1
        if not items:
            self.counts.ignored += 1
        for topic, _ in items:
            self.counts.events[topic] = self.counts.events.get(topic, 0) + 1
            if self.metrics is not None:
                self.metrics.ingest_events.labels(topic=topic).inc()

    def answered(self, source: str, answer: str) -> None:
        """Count the answer a source message got (``AA``, ``AE``, ``AR``, ``CA``...; ``200``, ``422``...)."""
        if self.metrics is not None:
            self.metrics.ingest_answers.labels(source=source, answer=answer).inc()

    async def dead_letter(self, raw: bytes, error: IngestError, *, source: str) -> None:
        """File a rejected source message on the dead-letter topic and wait for Kafka to hold it.

        ``source`` is where it came from (``hl7``, ``fhir``): the letter's ``topic``, so a re-drive can
        tell ingest letters from those of the notes topic.
        """
        letter = DeadLetter(
            reason=error.reason, detail=error.detail, topic=source, key=error.key, original=raw
        )  # type: ignore[arg-type]
        try:
            future = await self._producer.send(
                self.settings.topic(NOTES_DLQ), value=letter.to_bytes(), key=error.key
            )
            await future
        except (KafkaError, OSError) as exc:
            raise BrokerError(
                f"Kafka did not take the dead letter ({type(exc).__name__}); resend later."
            ) from exc
        self.counts.rejected[error.reason] = self.counts.rejected.get(error.reason, 0) + 1
        if self.metrics is not None:
            self.metrics.dead_letter(error.reason)


async def serve_ingest_metrics(settings: Settings, role: str) -> tuple[Metrics | None, Any]:
    """With ``metrics_port`` set: the process's metrics and its /metrics, /healthz, /readyz server
    (``await server.close()`` stops it); else (None, None)."""
    if settings.metrics_port is None:
        return None, None
    from notestream.stream.metrics import Metrics, start_http_server

    metrics = Metrics(role=role)
    return metrics, await start_http_server(settings, metrics, {})
