"""Alerts: risk updates in, raised and cleared alerts out, with hysteresis around a threshold.

:class:`AlertTracker` is a pure state machine per ``(hadm_id, task)``: an alert is **raised** when the
score reaches the threshold and **cleared** only when it falls below ``threshold - hysteresis`` (or the
admission holds no chunk any more), so a score wobbling around the threshold does not flap. Updates
whose ``seq`` is not above the last one seen for that admission and task are stale or repeated (an
at-least-once redelivery, a late partition) and are dropped before they can reach an alert.

>>> tracker = AlertTracker(AlertPolicy(threshold=0.7, hysteresis=0.1))
>>> def update(seq, score):
...     return RiskUpdate(hadm_id=1, subject_id=2, task="readmission", model="m", score=score, p_max=score,
...                       p_mean=score, n_chunks=1, n_notes=1, seq=seq, c=2.0)
>>> [a.state if (a := tracker.observe(update(s, p))) else None
...  for s, p in [(1, 0.5), (2, 0.75), (3, 0.65), (2, 0.1), (4, 0.59), (5, 0.7)]]
[None, 'raised', None, None, 'cleared', 'raised']
>>> tracker.dropped_stale
1

Alerts go to sinks (:mod:`stream.alert_sinks`, re-exported here), async callables taking a
:class:`RiskAlert`: :func:`stdout_sink` (JSON lines),
:func:`topic_sink` (the risk-alerts topic through an injected ``send``), and :class:`WebhookSink`
(HTTP POST with retries and exponential backoff). :func:`run_alerts` wires them to a Kafka consumer of
risk-updates for ``notestream alerts``.

**Durable state: the risk-alerts topic.** The tracker lives in memory, so a restarted service would
forget which alerts are raised (and raise them again: a second page for a clinician; or never clear
one raised before the restart). At start-up, before it reads any risk update, :func:`run_alerts`
therefore rebuilds the state from the ``risk-alerts`` topic, the durable log of what was sent:
:func:`read_alert_log` reads every partition from the beginning up to its end offsets at that moment,
and :meth:`AlertTracker.restore` takes the last alert of each (hadm_id, task) as its state and seq.
The tracker stays a pure state machine; only :func:`run_alerts` touches Kafka.

>>> restored = AlertTracker(AlertPolicy(threshold=0.7, hysteresis=0.1))
>>> restored.restore([RiskAlert(hadm_id=1, task="readmission", score=0.75, threshold=0.7, state="raised", seq=2)])
1
>>> [a.state if (a := restored.observe(update(s, p))) else None for s, p in [(2, 0.9), (3, 0.8), (4, 0.5)]]
[None, None, 'cleared']

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
(:mod:`stream.metrics`; ready once the state is rebuilt and the consumer holds partitions).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from models.spec import ModelSpec
from notestream.errors import ConfigError
from notestream.settings import Settings
from stream.alert_sinks import AlertSink, WebhookSink, stdout_sink, topic_sink
from stream.errors import AlertSinkError, BrokerError, EventError
from stream.events import RISK_ALERTS, RISK_UPDATES, RiskAlert, RiskUpdate

if TYPE_CHECKING:
    from stream.metrics import Metrics

__all__ = [
    "AlertPolicy",
    "AlertService",
    "AlertSink",
    "AlertTracker",
    "WebhookSink",
    "read_alert_log",
    "run_alerts",
    "stdout_sink",
    "topic_sink",
]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class AlertPolicy:
    """Raise at ``score >= threshold``; clear at ``score < threshold - hysteresis``."""

    threshold: float
    hysteresis: float = 0.05

    def __post_init__(self) -> None:
        if not 0.0 <= self.threshold <= 1.0:
            raise ConfigError(f"The alert threshold must be in [0, 1], not {self.threshold}.")
        if not 0.0 <= self.hysteresis <= self.threshold:
            raise ConfigError(
                f"The alert hysteresis must be in [0, threshold={self.threshold}], not {self.hysteresis}."
            )

    @classmethod
    def from_settings(
        cls, settings: Settings, *, model_dir: Path | None = None, threshold: float | None = None
    ) -> AlertPolicy:
        """``threshold``, else ``settings.alert_threshold``, else the model's notestream.json threshold."""
        value = threshold if threshold is not None else settings.alert_threshold
        folder = model_dir if model_dir is not None else settings.model_dir
        if value is None and folder is not None:
            value = ModelSpec.read(folder).threshold
        if value is None:
            raise ConfigError(
                "No alert threshold: pass --threshold, set NOTESTREAM_ALERT_THRESHOLD, or point --model-dir "
                "at a model folder whose notestream.json has a threshold."
            )
        return cls(threshold=value, hysteresis=min(settings.alert_hysteresis, value))


@dataclass
class _Track:
    seq: int
    raised: bool


class AlertTracker:
    """Pure per-(hadm_id, task) alert state machine; see the module docstring."""

    def __init__(self, policy: AlertPolicy) -> None:
        self.policy = policy
        self._tracks: dict[tuple[int, str], _Track] = {}
        self.seen = 0
        self.dropped_stale = 0

    def raised(self) -> list[tuple[int, str]]:
        """The (hadm_id, task) pairs whose alert is raised now."""
        return sorted(k for k, t in self._tracks.items() if t.raised)

    def raised_count(self) -> int:
        """How many alerts are raised now."""
        return sum(t.raised for t in self._tracks.values())

    def restore(self, alerts: Iterable[RiskAlert]) -> int:
        """Seed the state from alerts already sent: the last alert of each (hadm_id, task) gives whether
        it is raised and the last seq, so updates at or below that seq are dropped as stale. "Last" is
        the highest seq (an admission's seq only grows), then the later in ``alerts``, so the order of
        alerts read from several partitions does not matter. Returns how many (hadm_id, task) were seeded.

        >>> tracker = AlertTracker(AlertPolicy(threshold=0.5, hysteresis=0.1))
        >>> def alert(hadm, state, seq):
        ...     return RiskAlert(hadm_id=hadm, task="readmission", score=0.6, threshold=0.5, state=state, seq=seq)
        >>> tracker.restore([alert(1, "raised", 3), alert(2, "raised", 1), alert(1, "cleared", 7),
        ...                  alert(2, "cleared", 0)])  # an older alert read later, from another partition
        2
        >>> tracker.raised()
        [(2, 'readmission')]
        """
        last: dict[tuple[int, str], RiskAlert] = {}
        for alert in alerts:
            key = (alert.hadm_id, alert.task)
            if key not in last or alert.seq >= last[key].seq:
                last[key] = alert
        for key, alert in last.items():
            self._tracks[key] = _Track(alert.seq, alert.state == "raised")
        return len(last)

    def observe(self, update: RiskUpdate) -> RiskAlert | None:
        """The alert this update raises or clears, or None (no change, or a stale update)."""
        self.seen += 1
        key = (update.hadm_id, update.task)
        track = self._tracks.get(key)
        if track is not None and update.seq <= track.seq:
            self.dropped_stale += 1
            return None
        if track is None:
            track = self._tracks[key] = _Track(update.seq, False)
        track.seq = update.seq
        score = update.score
        threshold = self.policy.threshold
        if not track.raised and score is not None and score >= threshold:
            track.raised = True
            state = "raised"
        elif track.raised and (score is None or score < threshold - self.policy.hysteresis):
            track.raised = False
            state = "cleared"
        else:
            return None
        return RiskAlert(
            hadm_id=update.hadm_id,
            subject_id=update.subject_id,
            task=update.task,
            model=update.model,
            score=score if score is not None else 0.0,
            threshold=threshold,
            hysteresis=self.policy.hysteresis,
            state=state,  # type: ignore[arg-type]
            seq=update.seq,
        )


class AlertService:
    """A tracker and its sinks. Failures of ``required`` sinks propagate; ``optional`` ones (webhook)
    are logged with the admission and seq and counted in ``failed``, so one outage does not stop alerts."""

    def __init__(
        self,
        tracker: AlertTracker,
        required: Sequence[AlertSink] = (),
        optional: Sequence[AlertSink] = (),
        *,
        metrics: Metrics | None = None,
    ) -> None:
        self.tracker = tracker
        self.required = list(required)
        self.optional = list(optional)
        self.alerts: list[RiskAlert] = []
        self.failed = 0
        self.metrics = metrics
        if metrics is not None:
            metrics.alerts_raised_now.set_function(lambda: float(tracker.raised_count()))

    async def handle(self, update: RiskUpdate) -> RiskAlert | None:
        stale_before = self.tracker.dropped_stale
        alert = self.tracker.observe(update)
        if self.metrics is not None:
            self.metrics.alert_updates.inc()
            if self.tracker.dropped_stale > stale_before:
                self.metrics.alert_updates_stale.inc()
        if alert is None:
            return None
        for sink in self.required:
            await sink(alert)
        for sink in self.optional:
            try:
                await sink(alert)
            except AlertSinkError as exc:
                self.failed += 1
                if self.metrics is not None:
                    self.metrics.webhook_failures.inc()
                log.error("alert of admission %s seq %s not delivered: %s", alert.hadm_id, alert.seq, exc)
        if self.metrics is not None:
            self.metrics.alerts.labels(state=alert.state).inc()
        self.alerts.append(alert)
        return alert


async def read_alert_log(settings: Settings, *, timeout_s: float = 120.0) -> list[RiskAlert]:
    """Every alert on the risk-alerts topic, from the beginning of each partition up to its end offset
    at the time of the call, in each partition's order (alerts are keyed by admission, so all alerts of
    one admission are in one partition, in the order they were sent). Unreadable messages are skipped."""
    from aiokafka import TopicPartition
    from aiokafka.errors import KafkaError

    from stream.kafka import consumer as make_consumer

    topic = settings.topic(RISK_ALERTS)
    consumer = make_consumer(settings, topic, group_id=None, enable_auto_commit=False)
    alerts: list[RiskAlert] = []
    try:
        await consumer.start()
        partitions = consumer.partitions_for_topic(topic)
        if not partitions:
            raise BrokerError(
                f"The topic {topic} does not exist, so the alert state cannot be rebuilt. Create the "
                "topics first (deploy/create_topics.py, the compose `topics` service)."
            )
        ends = await consumer.end_offsets([TopicPartition(topic, p) for p in partitions])
        left = {tp: end for tp, end in ends.items() if end > 0}
        deadline = time.monotonic() + timeout_s
        while left:
            if time.monotonic() > deadline:
                raise BrokerError(
                    f"Reading {topic} to rebuild the alert state took over {timeout_s:.0f} s "
                    f"({len(alerts)} alerts read). Check the broker, then restart the alerts service."
                )
            batches = await consumer.getmany(*left, timeout_ms=200)
            for tp, messages in batches.items():
                for message in messages:
                    if message.offset >= left.get(tp, 0):
                        continue  # written after start-up: the live loop's own alerts
                    try:
                        alerts.append(RiskAlert.from_bytes(message.value))
                    except EventError as exc:
                        log.warning("skipping an invalid alert at %s[%s]@%s: %s", tp.topic, tp.partition,
                                    message.offset, exc)  # fmt: skip
            for tp in list(left):
                if tp in consumer.assignment() and await consumer.position(tp) >= left[tp]:
                    del left[tp]
    except KafkaError as exc:
        raise BrokerError(
            f"Could not read {topic} to rebuild the alert state: {exc}. Check the broker."
        ) from exc
    finally:
        await consumer.stop()
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
) -> AlertService:
    """Rebuild the alert state from risk-alerts, then consume risk-updates and emit alerts until
    cancelled, or until ``stop_after`` updates were read or none arrived for ``idle_timeout_s`` seconds
    (tests). ``sinks`` are further required sinks, called after the topic and stdout ones. With
    ``settings.metrics_port`` set, serves /metrics, /healthz and /readyz meanwhile (``metrics``, else a
    new ``Metrics(role="alerts")``). Returns the service (alerts, counts)."""
    from aiokafka.errors import CommitFailedError

    from stream.kafka import consumer as make_consumer
    from stream.kafka import producer as make_producer
    from stream.metrics import Metrics, MetricsServer, start_http_server

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
    tracker = AlertTracker(policy)
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
        log.info("alert state rebuilt from %d alerts: %d admissions, %d raised", len(history), seeded,
                 tracker.raised_count())  # fmt: skip
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
                            message.topic, message.partition, message.offset, exc,
                        )  # fmt: skip
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
