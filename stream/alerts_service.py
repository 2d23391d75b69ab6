"""The alerts service: the Kafka loop of ``notestream alerts`` around :class:`notestream.stream.alerts.AlertService`.

:func:`run_alerts` rebuilds the tracker's state from the ``risk-alerts`` topic (:func:`read_alert_log`:
every partition from the beginning up to its end offsets at start-up; :meth:`AlertTracker.restore`),
then consumes risk-updates and sends each raised or cleared alert to its sinks. Only this module touches
Kafka; :mod:`notestream.stream.alerts` holds the pure tracker, the policy and the service.

Why the topic and not Redis: the topic *is* what downstream saw, so the rebuilt state is exactly
what was sent. A Redis copy would be a second truth that can disagree with the topic (writing Redis and
producing to Kafka are not atomic, so a crash between them loses or duplicates an alert), would make
the alerts service depend on the store's availability and retention, and would still need the same
ordering rules. The cost is reading the topic at start, which is small (one message per raise or
clear). The state reaches back only as far as the topic's retention (``topic_retention_hours``, 7 days
by default): an alert raised before that and still open is forgotten, so keep risk-alerts' retention
above the longest admission you alert on.

**Delivery.** The consumer commits its offsets itself (no auto-commit), after each batch of updates is
handled, i.e. after every alert of the batch was acknowledged by the broker (``send_and_wait``,
``acks=all``). A crash before the write redelivers the update and the alert is raised then (not lost);
a crash after the write but before the commit redelivers updates whose seq the rebuilt state already
holds, so they are dropped as stale (no duplicate). The webhook is called after the topic write, so it
is at most once across such a crash.

With ``settings.metrics_port`` set, :func:`run_alerts` serves /metrics, /healthz and /readyz
(:mod:`notestream.stream.metrics`; ready once the state is rebuilt and the consumer holds partitions).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from datetime import timedelta
from typing import TYPE_CHECKING

from notestream.core.settings import Settings
from notestream.core.topics import RISK_ALERTS, RISK_UPDATES
from notestream.stream.alert_sinks import AlertSink, WebhookSink, stdout_sink, topic_sink
from notestream.stream.alerts import AlertPolicy, AlertService, AlertTracker
from notestream.stream.errors import EventError
from notestream.stream.events import RiskAlert, RiskUpdate

if TYPE_CHECKING:
    from notestream.stream.metrics import Metrics

__all__ = ["read_alert_log", "retire_alerts", "run_alerts"]

log = logging.getLogger(__name__)


async def read_alert_log(settings: Settings, *, timeout_s: float = 120.0) -> list[RiskAlert]:
    """Every alert on the risk-alerts topic, from the beginning of each partition up to its end offset
    at the time of the call, in each partition's order (alerts are keyed by admission, so all alerts of
    one admission are in one partition, in the order they were sent). Unreadable messages are skipped."""
    from notestream.stream.kafka import read_to_end

    alerts: list[RiskAlert] = []
    for message in await read_to_end(settings, settings.topic(RISK_ALERTS), timeout_s=timeout_s):
        try:
            alerts.append(RiskAlert.from_bytes(message.value))
        except EventError as exc:
            log.warning(
                "skipping an invalid alert at %s[%s]@%s: %s",
                message.topic,
                message.partition,
                message.offset,
                exc,
            )
    return alerts


async def run_alerts(
    settings: Settings,
    *,
    policy: AlertPolicy,
    to_stdout: bool = True,
    group_id: str | None = "notestream-alerts",
    stop_after: int | None = None,
    idle_timeout_s: float | None = None,
    sinks: Sequence[AlertSink] = (),
    metrics: Metrics | None = None,
    model: str | None = None,
) -> AlertService:
    """Rebuild the alert state from risk-alerts, then consume risk-updates and emit alerts until
    cancelled, or until ``stop_after`` updates were read or none arrived for ``idle_timeout_s`` seconds
    (tests). ``sinks`` are further required sinks, called after the topic and stdout ones. With
    ``settings.metrics_port`` set, serves /metrics, /healthz and /readyz meanwhile (``metrics``, else a
    new ``Metrics(role="alerts")``). ``model`` keeps one model's updates and alerts only (a fingerprint
    or a folder name, :func:`notestream.stream.alerts.matches`). A discharged admission's state is kept
    ``settings.retention_hours`` (as long as the store keeps it and may still emit for it), then evicted.
    Returns the service (alerts, counts)."""
    from aiokafka.errors import CommitFailedError

    from notestream.stream.kafka import consumer as make_consumer
    from notestream.stream.kafka import producer as make_producer
    from notestream.stream.metrics import Metrics, MetricsServer, start_http_server

    if metrics is None and settings.metrics_port is not None:
        metrics = Metrics(role="alerts")
    producer = make_producer(settings)
    # No auto-commit: offsets are committed by hand once the batch's alerts are on the topic.
    consumer = make_consumer(
        settings, settings.topic(RISK_UPDATES), group_id=group_id, enable_auto_commit=False
    )
    webhook = (
        WebhookSink(settings.webhook_url, retries=settings.webhook_retries) if settings.webhook_url else None
    )
    required: list[AlertSink] = [topic_sink(producer.send_and_wait, settings.topic(RISK_ALERTS))]
    if to_stdout:
        required.append(stdout_sink())
    required.extend(sinks)
    tracker = AlertTracker(policy, model=model, retention=timedelta(hours=settings.retention_hours))
    service = AlertService(tracker, required, [webhook] if webhook else [], metrics=metrics)
    restored = False
    consumer_started = False
    server: MetricsServer | None = None
    checks: dict[str, Callable[[], bool]] = {
        "state": lambda: restored,
        "consumer": lambda: consumer_started and bool(consumer.assignment()),
    }
    read = 0
    try:
        if metrics is not None:
            server = await start_http_server(settings, metrics, checks)
        history = await read_alert_log(settings)
        seeded = tracker.restore(history)
        restored = True
        if metrics is not None:
            metrics.alerts_restored.inc(len(history))
        log.info(
            "alert state rebuilt from %d alerts: %d admissions, %d raised (model %s, policy %s)",
            len(history),
            seeded,
            tracker.raised_count(),
            model or "any",
            policy.source,
        )
        await producer.start()
        await consumer.start()
        consumer_started = True
        while stop_after is None or read < stop_after:
            batches = await consumer.getmany(timeout_ms=200)
            if not batches:
                if idle_timeout_s is not None:
                    idle_timeout_s -= 0.2
                    if idle_timeout_s <= 0:
                        break
                continue
            for messages in batches.values():
                for message in messages:
                    read += 1
                    try:
                        update = RiskUpdate.from_bytes(message.value)
                    except EventError as exc:
                        log.warning(
                            "skipping an invalid risk update at %s[%s]@%s: %s",
                            message.topic,
                            message.partition,
                            message.offset,
                            exc,
                        )
                        continue
                    await service.handle(update)
            if group_id is not None:
                try:
                    await consumer.commit()  # every alert of this batch is on the topic by now
                except CommitFailedError as exc:  # a rebalance: the batch is redelivered, the state dedupes
                    log.warning("offsets not committed (the group rebalanced): %s", exc)
    finally:
        await consumer.stop()
        await producer.stop()
        if webhook is not None:
            await webhook.close()
        if server is not None:
            await server.close()
    return service


async def retire_alerts(settings: Settings, *, model: str, to_stdout: bool = True) -> list[RiskAlert]:
    """Clear, with reason ``retired``, every alert of ``model`` (a fingerprint or a folder name) still
    raised on the risk-alerts topic, and return the clears sent. Run it at the cut-over of an upgrade,
    once the old model's workers and alerts service are stopped (docs/operations.md): without it their
    open alerts would stay raised for ever. Running it again sends nothing (the clears are on the topic)."""
    from notestream.stream.kafka import producer as make_producer

    # retire() looks at no score: the policy is never consulted, any valid one will do
    tracker = AlertTracker(AlertPolicy(threshold=1.0, hysteresis=0.0), model=model)
    tracker.restore(await read_alert_log(settings))
    cleared = tracker.retire()
    producer = make_producer(settings)
    sinks: list[AlertSink] = [topic_sink(producer.send_and_wait, settings.topic(RISK_ALERTS))]
    if to_stdout:
        sinks.append(stdout_sink())
    await producer.start()
    try:
        for alert in cleared:
            for sink in sinks:
                await sink(alert)
    finally:
        await producer.stop()
    log.info("retired model %s: %d raised alerts cleared", model, len(cleared))
    return cleared
