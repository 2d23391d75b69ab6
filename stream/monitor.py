"""Outcome monitoring: were the live scores right? Risk updates and alerts joined to outcomes.

:class:`OutcomeMonitor` is a pure state machine fed the three topics' events in any interleaving:

- ``admissions``: an admission's discharge (time, death) closes it; every admit of a patient is kept
  (by subject) so later admits can resolve earlier discharges.
- ``risk-updates``: the last update per (model fingerprint, admission) is the model's final say on it
  (score, calibrated risk, notes, chunks); updates name their task.
- ``risk-alerts``: the first ``raised`` alert per (model, admission) gives whether and when it alerted.

An admission's outcome becomes known (its label is *resolved*), on the admissions' event time (the
latest admit or discharge time seen, so a replay resolves as fast as it plays):

- ``readmission``: 1 at the first non-ELECTIVE, non-NEWBORN admit of the same patient less than
  ``horizon_days`` (30) after the discharge; 0 once ``horizon_days`` have passed without one. An
  admission that ended in death is left out (as in the training cohort).
- ``mortality``: at discharge, 1 when the admission has a death time.
- ``prolonged_stay``: at discharge, 1 when the stay was longer than ``los_days`` (7).

:meth:`OutcomeMonitor.report` gives per model fingerprint, over the resolved admissions (all, and the
last ``window_days`` of discharges: ``rolling``): n, prevalence, AUROC, AUPRC, calibration by decile of
the predicted risk (the calibrated ``risk`` when updates carry one, else the raw score), alert precision,
recall and alerts per 100 admissions, lead time (hours from the note that raised the first alert to the
discharge, in event time), and drift
against the model's validation data (PSI of the score and p_max distributions, notes and chunks per
admission) when the model folder is given.

>>> from datetime import datetime, timedelta
>>> m = OutcomeMonitor()
>>> t0 = datetime(2150, 1, 1)
>>> def admit(hadm, subject, day, kind="EMERGENCY"):
...     return AdmissionEvent(kind="admit", subject_id=subject, hadm_id=hadm, admit_time=t0 + timedelta(days=day),
...                           admission_type=kind)
>>> def discharge(hadm, subject, day):
...     return AdmissionEvent(kind="discharge", subject_id=subject, hadm_id=hadm, discharge_time=t0 + timedelta(days=day))
>>> def update(hadm, score):
...     return RiskUpdate(hadm_id=hadm, subject_id=hadm, task="readmission", model="m", model_fingerprint="m@1",
...                       score=score, p_max=score, p_mean=score, n_chunks=2, n_notes=1, seq=1, c=2.0, final=True)
>>> for event in [admit(1, 1, 0), admit(2, 2, 0), update(1, 0.9), update(2, 0.2), discharge(1, 1, 3),
...               discharge(2, 2, 3), admit(3, 1, 10), admit(4, 3, 40)]:
...     m.observe(event)
>>> m.labels("m@1")
{1: 1, 2: 0}
>>> m.report()["models"]["m@1"]["all"]["auroc"]
1.0
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np

from notestream.stream.events import AdmissionEvent, RiskAlert, RiskUpdate
from notestream.stream.ids import Id

EXCLUDED_NEXT = {"ELECTIVE", "NEWBORN"}
Event = AdmissionEvent | RiskUpdate | RiskAlert


@dataclass
class _Stay:
    subject_id: Id
    admit: datetime | None = None
    discharge: datetime | None = None
    died: bool = False
    admission_type: str | None = None


@dataclass
class _Said:
    """What one model said about one admission: its last update and its first raised alert."""

    task: str
    seq: int = -1
    score: float | None = None
    risk: float | None = None
    p_max: float | None = None
    n_notes: int = 0
    n_chunks: int = 0
    first_alert: datetime | None = None
    """Event time of the first raised alert: the note time of the update that raised it."""
    first_alert_seq: int | None = None
    alerts: int = 0
    note_times: dict[int, datetime] = field(default_factory=dict)
    """Note (event) time per update seq, to place alerts in event time (their ``at`` is wall time)."""

    def place_alert(self) -> None:
        if self.first_alert_seq is not None:
            self.first_alert = self.note_times.get(self.first_alert_seq, self.first_alert)


@dataclass
class OutcomeMonitor:
    """See the module docstring. ``reference``: per model fingerprint, its ``notestream.json``
    ``metrics.val.distributions`` (for drift)."""

    horizon_days: float = 30.0
    los_days: float = 7.0
    window_days: float = 30.0
    reference: dict[str, dict[str, Any]] = field(default_factory=dict)
    _stays: dict[Id, _Stay] = field(default_factory=dict)
    _admits: dict[Id, list[tuple[datetime, Id, str | None]]] = field(default_factory=dict)
    _said: dict[str, dict[Id, _Said]] = field(default_factory=dict)
    _now: datetime | None = None

    # --- input ------------------------------------------------------------------------------------
    def observe(self, event: Event) -> None:
        """Take one event of any of the three topics."""
        if isinstance(event, AdmissionEvent):
            self._admission(event)
        elif isinstance(event, RiskUpdate):
            self._update(event)
        else:
            self._alert(event)

    def observe_all(self, events: Iterable[Event]) -> None:
        for event in events:
            self.observe(event)

    def _tick(self, moment: datetime | None) -> None:
        if moment is not None:
            moment = moment.replace(tzinfo=None)
            if self._now is None or moment > self._now:
                self._now = moment

    def _admission(self, event: AdmissionEvent) -> None:
        stay = self._stays.setdefault(event.hadm_id, _Stay(event.subject_id))
        admits = self._admits.setdefault(event.subject_id, [])
        if event.kind in ("admit", "update") and event.admit_time is not None:
            # an EHR update may correct the admit time; it never discharges
            stay.admit = _naive(event.admit_time)
            stay.admission_type = event.admission_type or stay.admission_type
            admits[:] = [a for a in admits if a[1] != event.hadm_id]
            kind = (stay.admission_type or "").upper() or None
            admits.append((stay.admit, event.hadm_id, kind))  # type: ignore[arg-type]
            self._tick(event.admit_time)
        elif event.kind == "discharge":
            stay.discharge = _naive(event.discharge_time)
            stay.died = stay.died or event.death_time is not None
            if stay.admit is None and event.admit_time is not None:
                stay.admit = _naive(event.admit_time)
            self._tick(event.discharge_time)
        elif event.kind == "cancel_discharge":  # the EHR undid the discharge: the outcome is open again
            stay.discharge, stay.died = None, False
        elif event.kind == "cancel_admit":  # an admission that never was: no one's readmission
            admits[:] = [a for a in admits if a[1] != event.hadm_id]

    def _update(self, update: RiskUpdate) -> None:
        key = update.model_fingerprint or update.model
        said = self._said.setdefault(key, {}).setdefault(update.hadm_id, _Said(update.task))
        self._stays.setdefault(update.hadm_id, _Stay(update.subject_id))
        if update.seq < said.seq:
            return  # an older update, redelivered: the last word stays
        said.seq, said.score, said.risk, said.p_max = update.seq, update.score, update.risk, update.p_max
        said.n_notes, said.n_chunks = update.n_notes, update.n_chunks
        if update.note_time is not None:
            said.note_times[update.seq] = _naive(update.note_time)  # type: ignore[assignment]
            said.place_alert()

    def _alert(self, alert: RiskAlert) -> None:
        if alert.state != "raised":
            return
        key = alert.model_fingerprint or alert.model or ""
        said = self._said.setdefault(key, {}).setdefault(alert.hadm_id, _Said(alert.task))
        said.alerts += 1
        if said.first_alert_seq is None or alert.seq < said.first_alert_seq:
            said.first_alert_seq = alert.seq
            said.first_alert = _naive(alert.at)  # wall time until the update's note time is known
            said.place_alert()

    # --- outcomes ---------------------------------------------------------------------------------
    def outcome(self, hadm_id: Id, task: str) -> int | None:
        """The admission's label for ``task`` once known, else None (see the module docstring)."""
        stay = self._stays.get(hadm_id)
        if stay is None or stay.discharge is None:
            return None
        if task == "mortality":
            return int(stay.died)
        if task == "prolonged_stay":
            if stay.admit is None or stay.died:
                return None
            return int((stay.discharge - stay.admit).total_seconds() > self.los_days * 86400)
        if stay.died:
            return None
        horizon = stay.discharge + timedelta(days=self.horizon_days)
        for admit, hadm, kind in self._admits.get(stay.subject_id, []):
            if hadm != hadm_id and stay.discharge <= admit < horizon and kind not in EXCLUDED_NEXT:
                return 1
        return 0 if self._now is not None and self._now >= horizon else None

    def labels(self, model: str) -> dict[Id, int]:
        """The resolved labels of the admissions ``model`` scored."""
        out = {}
        for hadm, said in sorted(self._said.get(model, {}).items(), key=lambda kv: _id_order(kv[0])):
            if said.score is None:
                continue
            label = self.outcome(hadm, said.task)
            if label is not None:
                out[hadm] = label
        return out

    # --- report -----------------------------------------------------------------------------------
    def report(self) -> dict[str, Any]:
        """Per model fingerprint: ``all`` and ``rolling`` figures, ``drift`` (see the module docstring)."""
        models: dict[str, Any] = {}
        for model, said in sorted(self._said.items()):
            labels = self.labels(model)
            rows = [(h, labels[h], said[h]) for h in labels]
            horizon = self._now - timedelta(days=self.window_days) if self._now is not None else None
            recent = [r for r in rows if horizon is None or (self._discharge(r[0]) or horizon) >= horizon]
            scored = [s for s in said.values() if s.score is not None]
            models[model] = {
                "admissions_scored": len(scored),
                "resolved": len(rows),
                "all": self._figures(rows),
                "rolling": self._figures(recent) | {"window_days": self.window_days},
                "drift": self._drift(model, scored),
            }
        return {
            "event_time": self._now.isoformat() if self._now is not None else None,
            "horizon_days": self.horizon_days,
            "models": models,
        }

    def _discharge(self, hadm: Id) -> datetime | None:
        stay = self._stays.get(hadm)
        return stay.discharge if stay is not None else None

    def _figures(self, rows: list[tuple[Id, int, _Said]]) -> dict[str, Any]:
        from sklearn.metrics import auc, precision_recall_curve, roc_auc_score

        y = np.array([label for _, label, _ in rows], dtype=np.int64)
        score = np.array([s.score for _, _, s in rows], dtype=np.float64)
        calibrated = all(s.risk is not None for _, _, s in rows) and bool(rows)
        predicted = np.array([s.risk if calibrated else s.score for _, _, s in rows], dtype=np.float64)
        alerted = np.array([s.first_alert is not None for _, _, s in rows], dtype=bool)
        out: dict[str, Any] = {"n": len(rows), "prevalence": float(y.mean()) if len(y) else None}
        if len(np.unique(y)) == 2:
            precision, recall, _ = precision_recall_curve(y, score)
            out |= {"auroc": float(roc_auc_score(y, score)), "auprc": float(auc(recall, precision))}
        else:
            out |= {"auroc": None, "auprc": None}
        out["calibration"] = {
            "predicted": "risk" if calibrated else "score",
            "deciles": _deciles(y, predicted),
            "mean_predicted": float(predicted.mean()) if len(y) else None,
        }
        leads = [
            (self._discharge(h) - s.first_alert).total_seconds() / 3600.0  # type: ignore[operator]
            for h, _, s in rows
            if s.first_alert is not None and self._discharge(h) is not None
        ]
        out["alerts"] = {
            "admissions_alerted": int(alerted.sum()),
            "per_100_admissions": 100.0 * float(alerted.mean()) if len(y) else None,
            "precision": float(y[alerted].mean()) if alerted.any() else None,
            "recall": float(alerted[y == 1].mean()) if (y == 1).any() else None,
            "lead_time_hours_median": float(np.median(leads)) if leads else None,
            "lead_time_hours_p10": float(np.quantile(leads, 0.1)) if leads else None,
        }
        return out

    def _drift(self, model: str, scored: list[_Said]) -> dict[str, Any]:
        from notestream.models.drift import psi, shares

        out: dict[str, Any] = {
            "notes_per_admission": float(np.mean([s.n_notes for s in scored])) if scored else None,
            "chunks_per_admission": float(np.mean([s.n_chunks for s in scored])) if scored else None,
        }
        reference = self.reference.get(model) or self.reference.get(model.split("@", 1)[0])
        if reference and scored:
            edges = reference["edges"]
            for name in ("score", "p_max"):
                values = [getattr(s, name) for s in scored if getattr(s, name) is not None]
                out[f"psi_{name}"] = psi(shares(values, edges), reference[name]) if values else None
            out["validation_chunks_per_admission"] = reference.get("chunks_per_admission")
        return out


def _deciles(y: np.ndarray, predicted: np.ndarray) -> list[dict[str, float | int]]:
    """Observed vs mean predicted per decile of the predicted value (ties kept together)."""
    if len(y) == 0:
        return []
    edges = np.unique(np.quantile(predicted, np.linspace(0, 1, 11)))
    which = np.clip(np.searchsorted(edges, predicted, side="right") - 1, 0, max(len(edges) - 2, 0))
    out = []
    for b in np.unique(which):
        mask = which == b
        out.append(
            {
                "n": int(mask.sum()),
                "predicted": float(predicted[mask].mean()),
                "observed": float(y[mask].mean()),
            }
        )
    return out


def _naive(moment: datetime | None) -> datetime | None:
    return moment.replace(tzinfo=None) if moment is not None and moment.tzinfo is not None else moment


def validation_reference(model_dirs: Iterable[str | Path]) -> dict[str, dict[str, Any]]:
    """Per model fingerprint, the validation distributions ``train evaluate`` stored in its folder."""
    from notestream.models.fingerprint import model_fingerprint
    from notestream.models.spec import ModelSpec

    out = {}
    for folder in model_dirs:
        distributions = ModelSpec.read(folder).metrics.get("val", {}).get("distributions")
        if distributions:
            out[model_fingerprint(folder)] = distributions
    return out


def write_report(monitor: OutcomeMonitor, out_dir: str | Path) -> dict[str, Any]:
    """``report.json``, ``metrics.prom`` (Prometheus text format) and per model ``calibration-<n>.png``
    (observed vs predicted by decile) into ``out_dir``; returns the report."""
    folder = Path(out_dir)
    folder.mkdir(parents=True, exist_ok=True)
    report = monitor.report()
    (folder / "report.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    (folder / "metrics.prom").write_bytes(prometheus_text(report))
    report["plots"] = [str(p) for p in plot_calibration(report, folder)]
    return report


def prometheus_text(report: dict[str, Any]) -> bytes:
    """The report's figures as Prometheus gauges, labelled by model fingerprint and window."""
    from prometheus_client import CollectorRegistry, Gauge, generate_latest

    registry = CollectorRegistry()
    labels = ["model", "window"]
    gauges = {
        name: Gauge(f"notestream_monitor_{name}", text, labels, registry=registry)
        for name, text in (
            ("resolved_admissions", "Admissions whose outcome is known."),
            ("prevalence", "Share of resolved admissions with the outcome."),
            ("auroc", "AUROC of the final scores on resolved admissions."),
            ("auprc", "AUPRC (trapezoid) of the final scores on resolved admissions."),
            ("alert_precision", "Share of alerted admissions that had the outcome."),
            ("alert_recall", "Share of admissions with the outcome that were alerted."),
            ("alerts_per_100_admissions", "Alerted admissions per 100 resolved admissions."),
            ("lead_time_hours", "Median hours from the first alert to the discharge."),
        )
    }
    drift = Gauge(
        "notestream_monitor_psi", "PSI against the validation data.", ["model", "what"], registry=registry
    )
    for model, figures in report["models"].items():
        for window in ("all", "rolling"):
            f = figures[window]
            values = {
                "resolved_admissions": f["n"],
                "prevalence": f["prevalence"],
                "auroc": f["auroc"],
                "auprc": f["auprc"],
                "alert_precision": f["alerts"]["precision"],
                "alert_recall": f["alerts"]["recall"],
                "alerts_per_100_admissions": f["alerts"]["per_100_admissions"],
                "lead_time_hours": f["alerts"]["lead_time_hours_median"],
            }
            for name, value in values.items():
                if value is not None:
                    gauges[name].labels(model=model, window=window).set(value)
        for what in ("score", "p_max"):
            value = figures["drift"].get(f"psi_{what}")
            if value is not None:
                drift.labels(model=model, what=what).set(value)
    return generate_latest(registry)


def plot_calibration(report: dict[str, Any], folder: Path) -> list[Path]:
    """Observed vs predicted by decile per model (all resolved admissions)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = []
    for i, (model, figures) in enumerate(report["models"].items()):
        f = figures["all"]
        deciles = f["calibration"]["deciles"]
        if not deciles:
            continue
        fig, ax = plt.subplots(figsize=(5, 5))
        ax.plot([0, 1], [0, 1], linestyle="--", color="grey", linewidth=0.8)
        ax.plot([d["predicted"] for d in deciles], [d["observed"] for d in deciles], marker="o")
        alerts = f["alerts"]
        ax.set(
            xlabel=f"Predicted ({f['calibration']['predicted']}), by decile",
            ylabel="Observed outcome share",
            title=f"{model}\nn={f['n']}, prevalence {f['prevalence']:.3f}, "
            f"alerts/100 {alerts['per_100_admissions'] or 0:.1f}",
            xlim=(0, 1),
            ylim=(0, 1),
        )
        fig.tight_layout()
        path = folder / f"calibration-{i}.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        paths.append(path)
    return paths


def read_jsonl(path: str | Path, kind: type[Event]) -> list[Event]:
    """Events of one kind from a JSON-lines file (what `alerts` prints, or a topic dump); lines that do
    not parse are skipped and counted in the log."""
    import logging

    from notestream.stream.errors import EventError

    events: list[Event] = []
    bad = 0
    with Path(path).open("rb") as fh:
        for line in fh:
            if not line.strip():
                continue
            try:
                events.append(kind.from_bytes(line.strip()))
            except EventError:
                bad += 1
    if bad:
        logging.getLogger(__name__).warning(
            "%s: %d lines are not %s events; skipped", path, bad, kind.__name__
        )
    return events


async def read_topics(settings: Any, *, timeout_s: float = 300.0) -> list[Event]:
    """Every event on the admissions, risk-updates and risk-alerts topics, from the beginning of each
    partition to its end offset at the time of the call (a backtest over what a replay produced)."""
    from notestream.core.topics import ADMISSIONS, RISK_ALERTS, RISK_UPDATES
    from notestream.stream.errors import EventError
    from notestream.stream.kafka import read_to_end

    kinds: dict[str, type[Event]] = {
        settings.topic(ADMISSIONS): AdmissionEvent,
        settings.topic(RISK_UPDATES): RiskUpdate,
        settings.topic(RISK_ALERTS): RiskAlert,
    }
    events: list[Event] = []
    for message in await read_to_end(settings, *kinds, timeout_s=timeout_s, required=False):
        try:
            events.append(kinds[message.topic].from_bytes(message.value))
        except EventError:
            continue
    return events


async def follow_topics(
    settings: Any,
    monitor: OutcomeMonitor,
    out_dir: str | Path,
    *,
    every_s: float = 60.0,
    idle_timeout_s: float | None = None,
    stop_after: int | None = None,
) -> int:
    """The service: read the three topics from the beginning and on as events arrive, feeding
    ``monitor``, and rewrite the report (``report.json``, ``metrics.prom``, PNGs) every ``every_s``
    seconds, until cancelled or (tests) ``stop_after`` events were read or ``idle_timeout_s`` passed
    without one. The state is rebuilt from
    the topics at each start, so it reaches back as far as their retention. Returns the events read."""
    from aiokafka.errors import KafkaError

    from notestream.core.topics import ADMISSIONS, RISK_ALERTS, RISK_UPDATES
    from notestream.stream.errors import BrokerError, EventError
    from notestream.stream.kafka import consumer as make_consumer

    kinds: dict[str, type[Event]] = {
        settings.topic(ADMISSIONS): AdmissionEvent,
        settings.topic(RISK_UPDATES): RiskUpdate,
        settings.topic(RISK_ALERTS): RiskAlert,
    }
    consumer = make_consumer(settings, *kinds, group_id=None, enable_auto_commit=False)
    loop = asyncio.get_running_loop()
    read = 0
    last_write = last_event = loop.time()
    try:
        await consumer.start()
        while (idle_timeout_s is None or loop.time() - last_event < idle_timeout_s) and (
            stop_after is None or read < stop_after
        ):
            for tp, messages in (await consumer.getmany(timeout_ms=500)).items():
                for message in messages:
                    last_event = loop.time()
                    try:
                        monitor.observe(kinds[tp.topic].from_bytes(message.value))
                        read += 1
                    except EventError:
                        continue
            if loop.time() - last_write >= every_s:
                await asyncio.to_thread(write_report, monitor, out_dir)
                last_write = loop.time()
    except KafkaError as exc:
        raise BrokerError(f"Could not read the topics to monitor: {exc}. Check the broker.") from exc
    finally:
        await consumer.stop()
    await asyncio.to_thread(write_report, monitor, out_dir)
    return read


def _id_order(hadm_id: Id) -> tuple[int, int, str]:
    """Integer ids by value, then string ids: a total order over mixed ids."""
    return (0, hadm_id, "") if isinstance(hadm_id, int) else (1, 0, hadm_id)
