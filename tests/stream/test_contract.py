"""The published event contract: schemas/ matches the models, docs/events.md's examples validate, and
risk updates a worker sends, read by kcat (a client no project code wrote), validate against schemas/."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from jsonschema import Draft202012Validator, FormatChecker

from notestream.core.settings import TOPICS, Settings
from notestream.core.topics import ADMISSIONS, NOTES, RISK_UPDATES
from notestream.stream.events import admission_key
from notestream.stream.schemas import EVENTS, event_schemas, render, stale_files
from tests.fixtures.kafka import WorkerProcess, librdkafka_mock, produce, read_topic

ROOT = Path(__file__).resolve().parents[2]
SCHEMAS = ROOT / "schemas"


def validator(name: str) -> Draft202012Validator:
    schema = json.loads((SCHEMAS / f"{name}.schema.json").read_text(encoding="utf-8"))
    Draft202012Validator.check_schema(schema)
    return Draft202012Validator(schema, format_checker=FormatChecker())


def test_the_checked_in_schemas_are_the_models_schemas() -> None:
    assert stale_files(SCHEMAS) == [], "run `python -m notestream.stream.schemas` and commit schemas/"
    for schema in event_schemas().values():
        Draft202012Validator.check_schema(schema)
        assert json.loads(render(schema)) == schema


def test_a_changed_model_makes_the_check_fail(tmp_path: Path) -> None:
    for name in EVENTS:
        shutil.copy(SCHEMAS / f"{name}.schema.json", tmp_path)
    data = json.loads((tmp_path / "RiskUpdate.schema.json").read_text())
    data["properties"].pop("seq")
    (tmp_path / "RiskUpdate.schema.json").write_text(json.dumps(data))
    assert stale_files(tmp_path) == [tmp_path / "RiskUpdate.schema.json"]


def test_asyncapi_names_every_topic_and_schema() -> None:
    doc = yaml.safe_load((SCHEMAS / "asyncapi.yaml").read_text(encoding="utf-8"))
    assert doc["asyncapi"].startswith("3.")
    assert {c["address"] for c in doc["channels"].values()} == set(TOPICS)
    schemas = [m["payload"]["schema"] for m in doc["components"]["messages"].values()]
    refs = {schema["$ref"] for schema in schemas if "$ref" in schema}  # the changelog is internal
    assert refs == {f"./{name}.schema.json" for name in EVENTS}


def examples() -> dict[str, Any]:
    text = (ROOT / "docs" / "events.md").read_text(encoding="utf-8")
    found = re.findall(r"<!-- example: (\w+) -->\n```json\n(.*?)\n```", text, flags=re.S)
    return {name: json.loads(body) for name, body in found}


def test_every_event_has_a_documented_example_that_validates() -> None:
    docs = examples()
    assert set(docs) == set(EVENTS)
    for name, example in docs.items():
        validator(name).validate(example)
        model, _ = EVENTS[name]
        assert json.loads(model.model_validate_json(json.dumps(example)).to_bytes()) == example


def test_a_naive_or_missing_time_is_not_a_valid_update() -> None:
    update = examples()["RiskUpdate"]
    assert not validator("RiskUpdate").is_valid({**update, "emitted_at": "2026-03-04T12:15:02"})
    assert not validator("RiskUpdate").is_valid({k: v for k, v in update.items() if k != "seq"})
    assert not validator("RiskUpdate").is_valid({**update, "hadm_id": " V1"})
    assert validator("RiskUpdate").is_valid({**update, "score": None, "p_max": None, "p_mean": None})


LONG = " ".join(f"finding{i} stable overnight" for i in range(30))


@pytest.mark.slow
def test_risk_updates_read_by_kcat_validate_against_the_schemas(
    kafka_settings: Settings, tiny_model_dir: Path, start_worker: Callable[..., WorkerProcess]
) -> None:
    kcat = shutil.which("kcat") or shutil.which("kafkacat")
    if kcat is None:
        pytest.skip("kcat is not installed; run scripts/setup.sh (or apt-get install kcat).")
    settings = kafka_settings.model_copy(
        update={"store": "memory://", "model_dir": tiny_model_dir, "source_timezone": "America/New_York"}
    )
    hadms: list[int | str] = [167853, "V2026-000123", "{ward}:7/B#1"]
    # naive times, as MIMIC's: the worker reads them in source_timezone
    admits = [
        {"kind": "admit", "subject_id": "MRN^1", "hadm_id": h, "admit_time": "2150-01-01T08:00:00"}
        for h in hadms
    ]
    notes: list[dict[str, Any]] = [
        {
            "note_id": f"n{i}",
            "subject_id": "MRN^1",
            "hadm_id": h,
            "text": LONG,
            "chart_time": "2150-01-01T09:00:00",
        }
        for i, h in enumerate(hadms)
    ]
    # a short note: the admission holds no chunk, its score is null
    notes.append({"note_id": "short", "subject_id": 5, "hadm_id": "007", "text": "pt comfortable."})
    produce(settings, ADMISSIONS, [(admission_key(a["hadm_id"]), json.dumps(a).encode()) for a in admits])
    produce(settings, NOTES, [(admission_key(n["hadm_id"]), json.dumps(n).encode()) for n in notes])
    worker = start_worker(settings)
    read_topic(
        settings,
        RISK_UPDATES,
        until=lambda m: len(m) >= len(notes),
        timeout_s=180,
        alive=lambda: worker.proc.poll() is None,
    )
    # Debian's kcat (librdkafka 2.0) cannot parse the ApiVersions answer of the embedded broker (tansu
    # 0.6), so the worker's risk updates are copied byte for byte, keys included, onto librdkafka's own
    # mock cluster, which kcat speaks; kcat then reads what the worker wrote.
    written = [
        (m.key(), m.value())
        for m in read_topic(settings, RISK_UPDATES, until=lambda m: len(m) >= len(notes), timeout_s=60)
    ]
    topic = settings.topic(RISK_UPDATES)
    with librdkafka_mock() as (address, mirror):
        for key, value in written:
            mirror.produce(topic, value, key=key)
        assert mirror.flush(30) == 0
        command = [kcat, "-C", "-b", address, "-t", topic, "-o", "beginning", "-e", "-q", "-J"]
        out = subprocess.run(command, capture_output=True, text=True, timeout=60, check=True)
    envelopes = [json.loads(line) for line in out.stdout.splitlines() if line.strip()]
    assert len(envelopes) == len(written) >= len(notes)
    assert sorted(e["payload"].encode() for e in envelopes) == sorted(v for _, v in written)
    check = validator("RiskUpdate")
    by_key: dict[str, dict[str, Any]] = {}
    for envelope in envelopes:
        payload = json.loads(envelope["payload"])
        check.validate(payload)
        assert envelope["key"] == str(payload["hadm_id"])  # keyed by the canonical admission id
        by_key[envelope["key"]] = payload
    assert set(by_key) == {"167853", "V2026-000123", "{ward}:7/B#1", "007"}
    assert by_key["167853"]["hadm_id"] == 167853  # an integer id stays a JSON integer
    assert by_key["007"]["score"] is None  # no chunk: null, never 0
    assert by_key["V2026-000123"]["note_time"] == "2150-01-01T09:00:00-05:00"  # source_timezone
