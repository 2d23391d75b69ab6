"""Risk updates out as FHIR RiskAssessments: read from the embedded Kafka, validated by fhir.resources."""

from __future__ import annotations

import io
import json
from datetime import UTC, datetime
from pathlib import Path

import pytest
from fhir.resources.R4B.riskassessment import RiskAssessment
from typer.testing import CliRunner

from notestream.core.settings import Settings
from notestream.models.fingerprint import model_fingerprint
from notestream.stream.events import RiskUpdate, admission_key
from notestream.stream.ingest.fhir_export import export_fhir, risk_assessment
from tests.fixtures.kafka import produce


def update(
    hadm: int, seq: int, *, score: float | None = 0.25, final: bool = False, model: str = "tiny"
) -> RiskUpdate:
    return RiskUpdate(
        hadm_id=hadm,
        subject_id=22532,
        task="readmission",
        model=model,
        score=score,
        p_max=score,
        p_mean=score,
        n_chunks=1 if score is not None else 0,
        n_notes=1,
        seq=seq,
        c=2.0,
        top_note_id="doc-1" if score is not None else None,
        final=final,
        emitted_at=datetime(2026, 3, 1, 15, seq, tzinfo=UTC),
    )


def test_risk_assessment_fields() -> None:
    ra = RiskAssessment.model_validate(
        risk_assessment(update(7, 3, final=True), fingerprint="tiny@00ff00ff00ff00ff")
    )
    assert ra.status == "final"
    assert (ra.subject.reference, ra.encounter.reference) == ("Patient/22532", "Encounter/7")
    assert ra.prediction[0].probabilityDecimal == pytest.approx(0.25)
    assert ra.basis[0].reference == "DocumentReference/doc-1"
    assert (ra.method.coding[0].code, ra.method.coding[0].version) == ("tiny", "00ff00ff00ff00ff")
    empty = risk_assessment(update(7, 1, score=None), fingerprint="other-model@00ff00ff00ff00ff")
    assert "prediction" not in empty
    assert "basis" not in empty
    assert "version" not in empty["method"]["coding"][0], "another model's fingerprint is not claimed"


async def test_export_reads_the_topic_into_ndjson(kafka_settings: Settings) -> None:
    updates = [update(100 + i % 2, i) for i in range(5)]
    produce(kafka_settings, "risk-updates", [(admission_key(u.hadm_id), u.to_bytes()) for u in updates])
    produce(kafka_settings, "risk-updates", [(b"1", b"not an update")])
    out = io.StringIO()
    counts = await export_fhir(kafka_settings, out, max_updates=5, idle_timeout_s=30)
    assert counts["written"] == 5
    lines = [RiskAssessment.model_validate(json.loads(line)) for line in out.getvalue().splitlines()]
    assert sorted(ra.id for ra in lines) == sorted(f"{u.hadm_id}-{u.seq}" for u in updates)
    idle = io.StringIO()
    counts = await export_fhir(kafka_settings, idle, idle_timeout_s=1.0)
    assert counts == {"written": 5, "invalid": 1}, "stops when the topic is idle; a bad record is counted"


def test_export_command_writes_a_file(kafka_settings: Settings, tiny_model_dir: Path, tmp_path: Path) -> None:
    from notestream.cli import app
    from notestream.stream.ingest.cli import register_ingest

    if not any(group.name == "export" for group in app.registered_groups):
        register_ingest(app)
    produce(kafka_settings, "risk-updates", [(b"5", update(5, 1, model=tiny_model_dir.name).to_bytes())])
    out = tmp_path / "risk.ndjson"
    args = [
        "export",
        "fhir",
        "--out",
        str(out),
        "--max",
        "1",
        "--idle-timeout",
        "30",
        "--model-dir",
        str(tiny_model_dir),
        "--broker",
        kafka_settings.broker,
        "--topic-prefix",
        kafka_settings.topic_prefix,
    ]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    [line] = out.read_text().splitlines()
    version = RiskAssessment.model_validate_json(line).method.coding[0].version
    assert version == model_fingerprint(tiny_model_dir).partition("@")[2]
