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

Alerts go to sinks (:mod:`notestream.stream.alert_sinks`), async callables taking a
:class:`RiskAlert`: :func:`stdout_sink` (JSON lines),
:func:`topic_sink` (the risk-alerts topic through an injected ``send``), and :class:`WebhookSink`
(HTTP POST with retries and exponential backoff). :func:`~notestream.stream.alerts_service.run_alerts` wires them to a Kafka consumer of
risk-updates for ``notestream alerts``.

**Durable state: the risk-alerts topic.** The tracker lives in memory, so a restarted service would
forget which alerts are raised (and raise them again: a second page for a clinician; or never clear
one raised before the restart). At start-up, before it reads any risk update, ``run_alerts``
therefore rebuilds the state from the ``risk-alerts`` topic, the durable log of what was sent:
``read_alert_log`` reads every partition from the beginning up to its end offsets at that moment,
and :meth:`AlertTracker.restore` takes the last alert of each (hadm_id, task) as its state and seq.
The tracker stays a pure state machine; only ``run_alerts`` touches Kafka.

>>> restored = AlertTracker(AlertPolicy(threshold=0.7, hysteresis=0.1))
>>> restored.restore([RiskAlert(hadm_id=1, task="readmission", score=0.75, threshold=0.7, state="raised", seq=2)])
1
>>> [a.state if (a := restored.observe(update(s, p))) else None for s, p in [(2, 0.9), (3, 0.8), (4, 0.5)]]
[None, None, 'cleared']

Why the topic and not Redis, how a crash neither loses nor duplicates an alert, and the service's
metrics and readiness: see :mod:`notestream.stream.alerts_service`, which holds the Kafka loop
(:func:`~notestream.stream.alerts_service.run_alerts`, :func:`~notestream.stream.alerts_service.read_alert_log`).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from notestream.core.errors import ConfigError
from notestream.core.settings import Settings
from notestream.models.spec import ModelSpec
from notestream.stream.alert_sinks import AlertSink
from notestream.stream.errors import AlertSinkError
from notestream.stream.events import RiskAlert, RiskUpdate
from notestream.stream.ids import Id

if TYPE_CHECKING:
    from notestream.stream.metrics import Metrics

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
        self._tracks: dict[tuple[Id, str], _Track] = {}
        self.seen = 0
        self.dropped_stale = 0

    def raised(self) -> list[tuple[Id, str]]:
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
        last: dict[tuple[Id, str], RiskAlert] = {}
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
            score=score,
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
