"""Alerts: risk updates in, raised and cleared alerts out, with hysteresis around a threshold.

:class:`AlertTracker` is a pure state machine per ``(model, hadm_id, task)``: an alert is **raised**
when the score reaches the threshold and **cleared** only when it falls below ``threshold -
hysteresis`` (or the admission holds no chunk any more), so a score wobbling around the threshold does
not flap. Updates whose ``seq`` is not above the last one seen for that model, admission and task are
stale or repeated (an at-least-once redelivery, a late partition) and are dropped before they can reach
an alert.

>>> tracker = AlertTracker(AlertPolicy(threshold=0.7, hysteresis=0.1))
>>> def update(seq, score, model="m@1", final=False):
...     return RiskUpdate(hadm_id=1, subject_id=2, task="readmission", model="m", model_fingerprint=model,
...                       score=score, p_max=score, p_mean=score, n_chunks=1, n_notes=1, seq=seq, c=2.0,
...                       final=final)
>>> [a.state if (a := tracker.observe(update(s, p))) else None
...  for s, p in [(1, 0.5), (2, 0.75), (3, 0.65), (2, 0.1), (4, 0.59), (5, 0.7)]]
[None, 'raised', None, None, 'cleared', 'raised']
>>> tracker.dropped_stale
1

**Models.** The model is the update's ``model_fingerprint`` (its folder name for updates without one),
so two models served side by side during an upgrade (:doc:`docs/operations.md`) have separate alerts:
the new model counts ``seq`` from 1 in its own store namespace and is not stale behind the old one, and
its low score does not clear the old model's alert. ``AlertTracker(model=...)`` (``notestream alerts
--model``) keeps one model's updates only, so each model runs under its own threshold.

>>> [a.state if (a := tracker.observe(update(s, p, model="m@2"))) else None for s, p in [(1, 0.8), (2, 0.1)]]
['raised', 'cleared']
>>> tracker.raised_keys()
[('m@1', 1, 'readmission')]

**Discharge.** An admission's final update (``final``: it was discharged) clears its raised alert with
reason ``discharged``; later updates of that admission (a late note) raise nothing. Its state is kept
``retention`` after the discharge (so redelivered updates stay dropped), then evicted: the tracker holds
the admissions in house, not every admission it ever saw.

>>> alert = tracker.observe(update(6, 0.9, final=True))
>>> alert.state, alert.reason, tracker.observe(update(7, 0.95, final=True)), tracker.raised_count()
('cleared', 'discharged', None, 0)

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
and :meth:`AlertTracker.restore` takes the last alert of each (model, hadm_id, task) as its state and seq.
The tracker stays a pure state machine; only ``run_alerts`` touches Kafka.

>>> restored = AlertTracker(AlertPolicy(threshold=0.7, hysteresis=0.1))
>>> restored.restore([RiskAlert(hadm_id=1, task="readmission", model="m", model_fingerprint="m@1",
...                             score=0.75, threshold=0.7, state="raised", seq=2)])
1
>>> [a.state if (a := restored.observe(update(s, p))) else None for s, p in [(2, 0.9), (3, 0.8), (4, 0.5)]]
[None, None, 'cleared']

Why the topic and not Redis, how a crash neither loses nor duplicates an alert, and the service's
metrics and readiness: see :mod:`notestream.stream.alerts_service`, which holds the Kafka loop
(:func:`~notestream.stream.alerts_service.run_alerts`, :func:`~notestream.stream.alerts_service.read_alert_log`).
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

from notestream.core.errors import ConfigError
from notestream.core.settings import Settings
from notestream.models.spec import ModelSpec
from notestream.stream.alert_sinks import AlertSink
from notestream.stream.errors import AlertSinkError
from notestream.stream.events import RiskAlert, RiskUpdate, utcnow
from notestream.stream.ids import Id

if TYPE_CHECKING:
    from notestream.stream.metrics import Metrics

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class AlertPolicy:
    """Raise at ``score >= threshold``; clear at ``score < threshold - hysteresis``. ``source`` says
    where the threshold came from (an option, a setting, or the model's policy with its expected figures)."""

    threshold: float
    hysteresis: float = 0.05
    source: str = "given"

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
        """``threshold``, else ``settings.alert_threshold``, else the model's notestream.json threshold
        (with the policy `train evaluate` chose it by, when recorded).

        >>> AlertPolicy.from_settings(Settings(alert_threshold=0.4)).source
        'NOTESTREAM_ALERT_THRESHOLD 0.4'
        """
        value = threshold if threshold is not None else settings.alert_threshold
        source = "--threshold" if threshold is not None else "NOTESTREAM_ALERT_THRESHOLD"
        source = f"{source} {value:g}" if value is not None else source
        folder = model_dir if model_dir is not None else settings.model_dir
        if value is None and folder is not None:
            spec = ModelSpec.read(folder)
            value = spec.threshold
            chosen = spec.alert_policy
            rule = spec.metrics.get("threshold_rule") or "unrecorded rule"
            source = f"model {Path(folder).name}: " + (
                chosen.describe()
                if chosen is not None and chosen.threshold == value
                else f"{rule}, threshold {value}"
            )
        if value is None:
            raise ConfigError(
                "No alert threshold: pass --threshold, set NOTESTREAM_ALERT_THRESHOLD, or point --model-dir "
                "at a model folder whose notestream.json has a threshold."
            )
        return cls(threshold=value, hysteresis=min(settings.alert_hysteresis, value), source=source)


def model_key(model: str | None, fingerprint: str | None) -> str:
    """What tells one model's updates and alerts apart: its fingerprint, else (events from before the
    fingerprint was added) its folder name.

    >>> model_key("readmission-v2", "readmission-v2@0123abcd"), model_key("readmission-v1", None)
    ('readmission-v2@0123abcd', 'readmission-v1')
    """
    return fingerprint or model or ""


def matches(wanted: str | None, model: str | None, fingerprint: str | None) -> bool:
    """Whether an event of ``model`` / ``fingerprint`` passes the ``--model`` filter ``wanted`` (a
    fingerprint, or a folder name, which matches every fingerprint of that name); None passes all.

    >>> matches("v2@ab", "v2", "v2@ab"), matches("v2", "v2", "v2@ab"), matches("v2@ab", "v2", "v2@cd")
    (True, True, False)
    >>> matches("v1", "v1", None), matches(None, "v1", None)
    (True, True)
    """
    if wanted is None:
        return True
    return wanted in (fingerprint, model) or (
        fingerprint is not None and "@" not in wanted and fingerprint.split("@", 1)[0] == wanted
    )


Key = tuple[str, Id, str]
"""(model key, hadm_id, task): one alert state per model, admission and task."""


@dataclass
class _Track:
    seq: int
    raised: bool
    closed: bool = False
    """The admission was discharged: its alert is cleared and no later update raises it again."""
    last: RiskAlert | None = None
    """The last alert sent for it (what :meth:`AlertTracker.retire` clears)."""


class AlertTracker:
    """Pure per-(model, hadm_id, task) alert state machine; see the module docstring.

    ``model`` keeps only the updates (and restored alerts) of one model (:func:`matches`); the others
    are counted in ``skipped_model``. ``retention`` is how long a discharged admission's state is kept
    (to drop the late and redelivered updates of a discharged admission) before it is evicted; time is
    the updates' ``emitted_at`` (the alerts' ``at`` when restoring), so a replay evicts as it goes.
    """

    def __init__(
        self, policy: AlertPolicy, *, model: str | None = None, retention: timedelta = timedelta(hours=72)
    ) -> None:
        self.policy = policy
        self.model = model
        self.retention = retention
        self._tracks: dict[Key, _Track] = {}
        self._closed: deque[tuple[datetime, Key]] = deque()
        self._now: datetime | None = None
        self.seen = 0
        self.dropped_stale = 0
        self.skipped_model = 0
        self.after_discharge = 0
        self.evicted = 0

    def raised(self) -> list[tuple[Id, str]]:
        """The (hadm_id, task) pairs whose alert is raised now (for any model)."""
        return sorted({(k[1], k[2]) for k, t in self._tracks.items() if t.raised})

    def raised_keys(self) -> list[Key]:
        """The (model key, hadm_id, task) triples whose alert is raised now."""
        return sorted(k for k, t in self._tracks.items() if t.raised)

    def raised_count(self) -> int:
        """How many alerts are raised now."""
        return sum(t.raised for t in self._tracks.values())

    def tracked(self) -> int:
        """How many (model, admission, task) states are held: bounded by the admissions in house plus
        those discharged within ``retention``."""
        return len(self._tracks)

    def restore(self, alerts: Iterable[RiskAlert]) -> int:
        """Seed the state from alerts already sent: the last alert of each (model, hadm_id, task) gives
        whether it is raised and the last seq, so updates at or below that seq are dropped as stale. "Last"
        is the highest seq (an admission's seq only grows), then the later in ``alerts``, so the order of
        alerts read from several partitions does not matter. An alert cleared as ``discharged`` seeds a
        closed state, evicted once ``retention`` has passed since. Returns how many states were seeded.

        >>> tracker = AlertTracker(AlertPolicy(threshold=0.5, hysteresis=0.1))
        >>> def alert(hadm, state, seq):
        ...     return RiskAlert(hadm_id=hadm, task="readmission", score=0.6, threshold=0.5, state=state, seq=seq)
        >>> tracker.restore([alert(1, "raised", 3), alert(2, "raised", 1), alert(1, "cleared", 7),
        ...                  alert(2, "cleared", 0)])  # an older alert read later, from another partition
        2
        >>> tracker.raised()
        [(2, 'readmission')]
        """
        last: dict[Key, RiskAlert] = {}
        for alert in alerts:
            if not matches(self.model, alert.model, alert.model_fingerprint):
                continue
            key = (model_key(alert.model, alert.model_fingerprint), alert.hadm_id, alert.task)
            if key not in last or alert.seq >= last[key].seq:
                last[key] = alert
        for key, alert in sorted(last.items(), key=lambda item: item[1].at):
            closed = alert.reason in ("discharged", "retired")
            self._tracks[key] = _Track(alert.seq, alert.state == "raised", closed=closed, last=alert)
            if closed:
                self._closed.append((alert.at, key))
            self._tick(alert.at)
        return len(last)

    def _tick(self, now: datetime | None) -> None:
        """Advance the clock to ``now`` and evict the discharged states older than the retention."""
        if now is None:
            return
        if self._now is None or now > self._now:
            self._now = now
        horizon = self._now - self.retention
        while self._closed and self._closed[0][0] <= horizon:
            _, key = self._closed.popleft()
            track = self._tracks.get(key)
            if track is not None and track.closed:
                del self._tracks[key]
                self.evicted += 1

    def observe(self, update: RiskUpdate) -> RiskAlert | None:
        """The alert this update raises or clears, or None (no change, a stale update, another model's,
        or one of an admission already discharged)."""
        self.seen += 1
        if not matches(self.model, update.model, update.model_fingerprint):
            self.skipped_model += 1
            return None
        self._tick(update.emitted_at)
        key = (model_key(update.model, update.model_fingerprint), update.hadm_id, update.task)
        track = self._tracks.get(key)
        if track is not None and update.seq <= track.seq:
            self.dropped_stale += 1
            return None
        if track is not None and track.closed:
            self.after_discharge += 1  # a note after discharge moves no alert: the patient went home
            track.seq = update.seq
            return None
        if track is None:
            track = self._tracks[key] = _Track(update.seq, False)
        track.seq = update.seq
        score = update.score
        threshold = self.policy.threshold
        reason: str
        if update.final:
            track.closed = True
            self._closed.append((update.emitted_at, key))
            if not track.raised:
                return None
            track.raised = False
            state, reason = "cleared", "discharged"
        elif not track.raised and score is not None and score >= threshold:
            track.raised = True
            state, reason = "raised", "score"
        elif track.raised and (score is None or score < threshold - self.policy.hysteresis):
            track.raised = False
            state, reason = "cleared", "score" if score is not None else "no_chunks"
        else:
            return None
        track.last = RiskAlert(
            hadm_id=update.hadm_id,
            subject_id=update.subject_id,
            task=update.task,
            model=update.model,
            model_fingerprint=update.model_fingerprint,
            score=score,
            threshold=threshold,
            hysteresis=self.policy.hysteresis,
            state=state,  # type: ignore[arg-type]
            reason=reason,  # type: ignore[arg-type]
            seq=update.seq,
        )
        return track.last

    def retire(self) -> list[RiskAlert]:
        """Clear every raised alert with reason ``retired``: the model is no longer served (the cut-over
        of an upgrade), so its open alerts would otherwise stay raised for ever. The states stay closed
        (a late update of the retired model raises nothing) and are evicted like discharged ones.

        >>> tracker = AlertTracker(AlertPolicy(threshold=0.5, hysteresis=0.1))
        >>> _ = tracker.restore([RiskAlert(hadm_id=3, task="readmission", model="v1", model_fingerprint="v1@a",
        ...                                score=0.8, threshold=0.5, state="raised", seq=4)])
        >>> [(a.hadm_id, a.state, a.reason, a.seq, a.model_fingerprint) for a in tracker.retire()]
        [(3, 'cleared', 'retired', 4, 'v1@a')]
        >>> tracker.raised_count()
        0
        """
        out = []
        for key, track in sorted(self._tracks.items()):
            if not track.raised or track.last is None:
                continue
            track.raised = False
            track.closed = True
            at = utcnow()
            self._closed.append((self._now or at, key))
            track.last = track.last.model_copy(update={"state": "cleared", "reason": "retired", "at": at})
            out.append(track.last)
        return out


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
