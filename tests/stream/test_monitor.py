"""Outcome monitoring: labels resolved from the admissions feed, figures per model, the CLI over files
and the topics."""

from __future__ import annotations

import json
import random
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score
from typer.testing import CliRunner

from notestream.core.settings import Settings
from notestream.stream.events import AdmissionEvent, RiskAlert, RiskUpdate, admission_key
from notestream.stream.monitor import OutcomeMonitor, follow_topics, read_topics
from tests.fixtures.kafka import produce

T0 = datetime(2150, 1, 1)


def admit(hadm: int, subject: int, day: float, kind: str = "EMERGENCY") -> AdmissionEvent:
    return AdmissionEvent(
        kind="admit",
        subject_id=subject,
        hadm_id=hadm,
        admit_time=T0 + timedelta(days=day),
        admission_type=kind,
    )


def discharge(hadm: int, subject: int, day: float, *, died: bool = False) -> AdmissionEvent:
    moment = T0 + timedelta(days=day)
    return AdmissionEvent(
        kind="discharge",
        subject_id=subject,
        hadm_id=hadm,
        discharge_time=moment,
        death_time=moment if died else None,
    )


def update(
    hadm: int, seq: int, score: float, *, model: str = "m@1", day: float = 1.0, risk: float | None = None
) -> RiskUpdate:
    return RiskUpdate(
        hadm_id=hadm,
        subject_id=hadm,
        task="readmission",
        model=model.split("@")[0],
        model_fingerprint=model,
        score=score,
        risk=risk,
        p_max=score,
        p_mean=score,
        n_chunks=seq,
        n_notes=seq,
        seq=seq,
        c=2.0,
        note_time=T0 + timedelta(days=day),
    )


def raised(hadm: int, seq: int, *, model: str = "m@1") -> RiskAlert:
    return RiskAlert(
        hadm_id=hadm,
        task="readmission",
        model=model.split("@")[0],
        model_fingerprint=model,
        score=0.9,
        threshold=0.5,
        state="raised",
        seq=seq,
        at=datetime(2026, 1, 1, tzinfo=UTC),
    )


def test_outcomes_follow_the_readmission_rule() -> None:
    m = OutcomeMonitor()
    events = [
        admit(1, 1, 0),
        discharge(1, 1, 5),
        admit(2, 1, 20, "ELECTIVE"),
        discharge(2, 1, 22),  # elective: not a readmission
        admit(3, 1, 60),
        discharge(3, 1, 61),
        admit(4, 2, 0),
        discharge(4, 2, 5),
        admit(5, 2, 34.9),
        discharge(5, 2, 40),  # 29.9 days later: readmitted
        admit(6, 3, 0),
        discharge(6, 3, 2, died=True),  # died: left out of the readmission cohort
        admit(7, 4, 0),
        discharge(7, 4, 50),  # discharged on day 50: unknown until day 80
    ]
    m.observe_all(events)
    m.observe_all(update(h, 1, 0.5) for h in range(1, 8))
    assert m.labels("m@1") == {1: 0, 2: 0, 4: 1}  # by day 61, 30 days have passed for discharges up to day 31
    m.observe(admit(8, 5, 95))  # time passes: admissions 3, 5 and 7 resolve as negatives
    assert m.labels("m@1") == {1: 0, 2: 0, 3: 0, 4: 1, 5: 0, 7: 0}
    assert m.outcome(6, "mortality") == 1
    # EHR corrections: a cancelled admit is no readmission, a cancelled discharge reopens the outcome
    m.observe(admit(9, 5, 96))
    m.observe(discharge(9, 5, 97))
    m.observe(admit(10, 5, 100))
    assert m.outcome(9, "readmission") == 1
    m.observe(AdmissionEvent(kind="cancel_admit", subject_id=5, hadm_id=10))
    assert m.outcome(9, "readmission") is None  # 30 days have not passed since day 97
    m.observe(AdmissionEvent(kind="cancel_discharge", subject_id=5, hadm_id=9))
    assert m.outcome(9, "mortality") is None
    assert m.outcome(4, "prolonged_stay") == 0


def test_figures_per_model_alerts_lead_time_and_drift() -> None:
    rng = random.Random(4)
    reference = {
        "edges": [i / 10 for i in range(11)],
        "score": [0.1] * 10,
        "p_max": [0.1] * 10,
        "chunks_per_admission": 2.0,
    }
    m = OutcomeMonitor(reference={"m@1": reference})
    labels, scores = {}, {}
    for hadm in range(1, 201):
        readmitted = rng.random() < 0.15
        m.observe(admit(hadm, hadm, hadm % 50))
        m.observe(discharge(hadm, hadm, hadm % 50 + 4))
        if readmitted:
            m.observe(admit(1000 + hadm, hadm, hadm % 50 + 10))
        score = min(1.0, max(0.0, rng.gauss(0.6 if readmitted else 0.4, 0.15)))
        labels[hadm], scores[hadm] = int(readmitted), score
        m.observe(update(hadm, 1, score / 2, day=hadm % 50 + 1))
        m.observe(update(hadm, 2, score, day=hadm % 50 + 2))
        m.observe(update(hadm, 1, 0.0))  # an old update redelivered: the last word stays
        m.observe(update(hadm, 1, 1 - score, model="m@2"))  # another model, the other way round
        if score >= 0.55:
            m.observe(raised(hadm, 2))
    m.observe(admit(9999, 9999, 200))  # every outcome is known by now
    report = m.report()
    figures = report["models"]["m@1"]["all"]
    hadms = sorted(labels)
    y = np.array([labels[h] for h in hadms])
    s = np.array([scores[h] for h in hadms])
    assert figures["n"] == 200
    assert figures["prevalence"] == pytest.approx(y.mean())
    assert figures["auroc"] == pytest.approx(roc_auc_score(y, s))
    assert report["models"]["m@2"]["all"]["auroc"] == pytest.approx(1 - roc_auc_score(y, s))
    alerted = s >= 0.55
    assert figures["alerts"]["precision"] == pytest.approx(y[alerted].mean())
    assert figures["alerts"]["recall"] == pytest.approx(alerted[y == 1].mean())
    assert figures["alerts"]["per_100_admissions"] == pytest.approx(100 * alerted.mean())
    assert figures["alerts"]["lead_time_hours_median"] == pytest.approx(
        48.0
    )  # note on day +2, discharge day +4
    assert sum(d["n"] for d in figures["calibration"]["deciles"]) == 200
    drift = report["models"]["m@1"]["drift"]
    assert drift["psi_score"] > 0.1  # live scores bunch in the middle, the reference is flat
    assert drift["chunks_per_admission"] == 2.0
    assert "psi_score" not in report["models"]["m@2"]["drift"]  # no reference given for it


def test_monitor_command_over_files(tmp_path: Path) -> None:
    import typer

    from notestream.stream.cli_monitor import register_monitor

    app = typer.Typer()
    register_monitor(app)
    app.command()(lambda: None)  # a second command keeps typer's sub-command form
    files = {
        "updates": [update(1, 1, 0.9, risk=0.3), update(2, 1, 0.1, risk=0.02)],
        "alerts": [raised(1, 1)],
        "admissions": [
            admit(1, 1, 0),
            discharge(1, 1, 3),
            admit(2, 2, 0),
            discharge(2, 2, 3),
            admit(3, 1, 10),
            admit(4, 9, 40),
        ],
    }
    args = ["monitor", "--out", str(tmp_path / "out")]
    for name, events in files.items():
        path = tmp_path / f"{name}.jsonl"
        path.write_text("".join(e.model_dump_json() + "\n" for e in events) + "not json\n")
        args += [f"--{name}", str(path)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    figures = report["models"]["m@1"]["all"]
    assert (figures["n"], figures["auroc"], figures["calibration"]["predicted"]) == (2, 1.0, "risk")
    assert figures["alerts"]["precision"] == 1.0
    prom = (tmp_path / "out" / "metrics.prom").read_text()
    assert 'notestream_monitor_auroc{model="m@1",window="all"} 1.0' in prom
    assert (tmp_path / "out" / "calibration-0.png").stat().st_size > 1000


@pytest.mark.slow
async def test_read_topics_reads_the_three_topics_to_their_end(
    kafka_settings: Settings, tmp_path: Path
) -> None:
    produce(kafka_settings, "admissions", [(admission_key(1), admit(1, 1, 0).to_bytes()), (b"1", b"{bad")])
    produce(kafka_settings, "risk-updates", [(admission_key(1), update(1, 1, 0.4).to_bytes())])
    produce(kafka_settings, "risk-alerts", [(admission_key(1), raised(1, 1).to_bytes())])
    events = await read_topics(kafka_settings, timeout_s=60)
    assert sorted(type(e).__name__ for e in events) == ["AdmissionEvent", "RiskAlert", "RiskUpdate"]
    # the service reads the same and keeps its report current
    monitor = OutcomeMonitor()
    out = tmp_path / "live"
    assert (
        await follow_topics(kafka_settings, monitor, out, every_s=0.5, stop_after=3, idle_timeout_s=60) == 3
    )
    assert json.loads((out / "report.json").read_text())["models"]["m@1"]["admissions_scored"] == 1
