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

Alerts go to sinks, async callables taking a :class:`RiskAlert`: :func:`stdout_sink` (JSON lines),
:func:`topic_sink` (the risk-alerts topic through an injected ``send``), and :class:`WebhookSink`
(HTTP POST with retries and exponential backoff). :func:`run_alerts` wires them to a Kafka consumer of
risk-updates for ``notestream alerts``.
"""

from __future__ import annotations

import asyncio
import logging
import sys
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import httpx

from models.spec import ModelSpec
from notestream.errors import ConfigError
from notestream.settings import Settings
from stream.errors import AlertSinkError, EventError
from stream.events import RISK_ALERTS, RISK_UPDATES, RiskAlert, RiskUpdate, admission_key

log = logging.getLogger(__name__)

AlertSink = Callable[[RiskAlert], Awaitable[None]]


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


# --- sinks ---------------------------------------------------------------------------------------------
def stdout_sink(stream: TextIO | None = None) -> AlertSink:
    """A sink writing each alert as one JSON line (to stdout by default)."""

    async def write(alert: RiskAlert) -> None:
        out = stream if stream is not None else sys.stdout
        out.write(alert.model_dump_json() + "\n")
        out.flush()

    return write


def topic_sink(send: Callable[..., Awaitable[Any]], topic: str) -> AlertSink:
    """A sink producing each alert to ``topic`` through ``send(topic, key=..., value=...)`` (e.g. an
    aiokafka producer's ``send_and_wait``), keyed by admission id."""

    async def produce(alert: RiskAlert) -> None:
        try:
            await send(topic, key=admission_key(alert.hadm_id), value=alert.to_bytes())
        except Exception as exc:
            raise AlertSinkError(
                f"Could not produce the alert of admission {alert.hadm_id} to {topic}: {exc}. Check the broker."
            ) from exc

    return produce


class WebhookSink:
    """POST each alert as JSON to ``url``; retry transport errors, 429 and 5xx with exponential backoff.

    Other 4xx answers are not retried (the request itself is wrong). After the last retry the sink
    raises :class:`AlertSinkError`. The URL may carry a token: it never appears in errors or logs.
    """

    def __init__(
        self,
        url: str,
        *,
        retries: int = 3,
        backoff_s: float = 0.5,
        timeout_s: float = 5.0,
        client: httpx.AsyncClient | None = None,
    ) -> None:
        self.url = url
        self.retries = retries
        self.backoff_s = backoff_s
        self._client = client if client is not None else httpx.AsyncClient(timeout=timeout_s)
        self._own_client = client is None
        self.attempts = 0

    async def __call__(self, alert: RiskAlert) -> None:
        body = alert.to_bytes()
        headers = {"content-type": "application/json"}
        problem = ""
        for attempt in range(self.retries + 1):
            if attempt:
                await asyncio.sleep(self.backoff_s * 2 ** (attempt - 1))
            self.attempts += 1
            try:
                response = await self._client.post(self.url, content=body, headers=headers)
            except httpx.HTTPError as exc:
                problem = f"{type(exc).__name__}"
                continue
            if response.status_code < 300:
                return
            problem = f"HTTP {response.status_code}"
            if response.status_code != 429 and response.status_code < 500:
                break
        raise AlertSinkError(
            f"The webhook did not accept the alert of admission {alert.hadm_id} (seq {alert.seq}) after "
            f"{self.attempts} attempt(s): {problem}. Check the webhook URL and the receiving service."
        )

    async def close(self) -> None:
        if self._own_client:
            await self._client.aclose()


class AlertService:
    """A tracker and its sinks. Failures of ``required`` sinks propagate; ``optional`` ones (webhook)
    are logged with the admission and seq and counted in ``failed``, so one outage does not stop alerts."""

    def __init__(
        self, tracker: AlertTracker, required: Sequence[AlertSink] = (), optional: Sequence[AlertSink] = ()
    ) -> None:
        self.tracker = tracker
        self.required = list(required)
        self.optional = list(optional)
        self.alerts: list[RiskAlert] = []
        self.failed = 0

    async def handle(self, update: RiskUpdate) -> RiskAlert | None:
        alert = self.tracker.observe(update)
        if alert is None:
            return None
        for sink in self.required:
            await sink(alert)
        for sink in self.optional:
            try:
                await sink(alert)
            except AlertSinkError as exc:
                self.failed += 1
                log.error("alert of admission %s seq %s not delivered: %s", alert.hadm_id, alert.seq, exc)
        self.alerts.append(alert)
        return alert


async def run_alerts(
    settings: Settings,
    *,
    policy: AlertPolicy,
    to_stdout: bool = True,
    group_id: str | None = "notestream-alerts",
    stop_after: int | None = None,
    idle_timeout_s: float | None = None,
) -> AlertService:
    """Consume risk-updates and emit alerts until cancelled, or until ``stop_after`` updates were read
    or none arrived for ``idle_timeout_s`` seconds (tests). Returns the service (alerts, counts)."""
    from stream.kafka import consumer as make_consumer
    from stream.kafka import producer as make_producer

    producer = make_producer(settings)
    consumer = make_consumer(settings, settings.topic(RISK_UPDATES), group_id=group_id)
    webhook = (
        WebhookSink(settings.webhook_url, retries=settings.webhook_retries) if settings.webhook_url else None
    )
    required: list[AlertSink] = [topic_sink(producer.send_and_wait, settings.topic(RISK_ALERTS))]
    if to_stdout:
        required.append(stdout_sink())
    service = AlertService(AlertTracker(policy), required, [webhook] if webhook else [])
    await producer.start()
    await consumer.start()
    read = 0
    try:
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
    finally:
        await consumer.stop()
        await producer.stop()
        if webhook is not None:
            await webhook.close()
    return service
