"""Risk updates out as FHIR R4 ``RiskAssessment`` resources: ``notestream export fhir``.

One resource per risk update, validated with fhir.resources (R4B models), written as NDJSON (a file or
stdout) so it can be loaded with a FHIR server's ``$import`` or posted entry by entry:

- ``id`` ``<admission>-<seq>`` (ids outside FHIR's ``[A-Za-z0-9-.]{1,64}`` become a hash), and an
  ``identifier`` ``urn:notestream:risk-update`` ``<admission>/<task>/<seq>``: the same update exported
  twice is the same resource;
- ``status`` ``preliminary`` while the admission is open, ``final`` once it is discharged;
- ``subject`` ``Patient/<subject_id>``, ``encounter`` ``Encounter/<hadm_id>``,
  ``occurrenceDateTime`` when the update was made;
- ``method``: the model (``code``) and its fingerprint (``version``, with ``--model-dir``);
- ``prediction[0]``: ``outcome`` the task, ``probabilityDecimal`` the score (none while the admission
  holds no scored text); ``basis``: ``DocumentReference/<top_note_id>``, the note that weighs most.

No note text is ever in a risk update, so none can be in a RiskAssessment.

>>> from datetime import UTC, datetime
>>> from notestream.stream.events import RiskUpdate
>>> update = RiskUpdate(hadm_id=167853, subject_id=22532, task="readmission", model="readmission-v1",
...                     score=0.31, p_max=0.4, p_mean=0.2, n_chunks=3, n_notes=2, seq=4, c=2.0,
...                     top_note_id="doc-1", emitted_at=datetime(2026, 3, 1, 15, 0, tzinfo=UTC))
>>> ra = risk_assessment(update, fingerprint="readmission-v1@0123456789abcdef")
>>> ra["id"], ra["status"], ra["prediction"][0]["probabilityDecimal"], ra["method"]["coding"][0]["version"]
('167853-4', 'preliminary', 0.31, '0123456789abcdef')
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
from datetime import UTC
from typing import IO, Any

from pydantic import ValidationError

from notestream.core.settings import Settings
from notestream.core.topics import RISK_UPDATES
from notestream.stream.errors import EventError, StreamError
from notestream.stream.events import RiskUpdate

MODEL_SYSTEM = "urn:notestream:model"
UPDATE_SYSTEM = "urn:notestream:risk-update"
_FHIR_ID = re.compile(r"^[A-Za-z0-9\-.]{1,64}$")


def fhir_id(text: str) -> str:
    """``text`` when it is a valid FHIR id, else a stable hash of it that is.

    >>> fhir_id("167853-4"), fhir_id("V2026/000123-4")
    ('167853-4', 'ns-16fe08b8890909b33cac8d6a')
    """
    if _FHIR_ID.match(text):
        return text
    return "ns-" + hashlib.sha256(text.encode("utf-8")).hexdigest()[:24]


def risk_assessment(update: RiskUpdate, *, fingerprint: str | None = None) -> dict[str, Any]:
    """The RiskAssessment (JSON object) of one risk update, validated against FHIR R4 (R4B models).

    ``fingerprint`` is ``<model>@<hash>`` (:func:`notestream.models.fingerprint.model_fingerprint`); its hash
    becomes ``method.coding.version`` when its model name is the update's.
    """
    from fhir.resources.R4B.riskassessment import RiskAssessment

    name, _, digest = (fingerprint or "").partition("@")
    coding: dict[str, Any] = {
        "system": MODEL_SYSTEM,
        "code": update.model,
        "display": f"{update.model} ({update.task})",
    }
    if digest and name == update.model:
        coding["version"] = digest
    resource: dict[str, Any] = {
        "resourceType": "RiskAssessment",
        "id": fhir_id(f"{update.hadm_id}-{update.seq}"),
        "identifier": [{"system": UPDATE_SYSTEM, "value": f"{update.hadm_id}/{update.task}/{update.seq}"}],
        "status": "final" if update.final else "preliminary",
        "subject": {"reference": f"Patient/{update.subject_id}"},
        "encounter": {"reference": f"Encounter/{update.hadm_id}"},
        "occurrenceDateTime": update.emitted_at.astimezone(UTC).isoformat(),
        "method": {"coding": [coding], "text": update.model},
    }
    if update.score is not None:
        resource["prediction"] = [{"outcome": {"text": update.task}, "probabilityDecimal": update.score}]
    if update.top_note_id:
        resource["basis"] = [{"reference": f"DocumentReference/{update.top_note_id}"}]
    try:
        RiskAssessment.model_validate(resource)
    except ValidationError as exc:
        fields = ", ".join(".".join(str(p) for p in e["loc"]) for e in exc.errors(include_input=False))
        raise StreamError(
            f"The RiskAssessment of admission {update.hadm_id} seq {update.seq} is not valid FHIR ({fields})."
        ) from exc
    return resource


async def export_fhir(
    settings: Settings,
    out: IO[str],
    *,
    fingerprint: str | None = None,
    group_id: str | None = None,
    max_updates: int | None = None,
    idle_timeout_s: float | None = None,
) -> dict[str, int]:
    """Write a RiskAssessment NDJSON line per risk update until ``max_updates`` were written or none
    arrived for ``idle_timeout_s`` seconds (None: until cancelled). Returns the counts."""
    from aiokafka.errors import KafkaError

    from notestream.stream.errors import BrokerError
    from notestream.stream.kafka import consumer

    reader = consumer(settings, settings.topic(RISK_UPDATES), group_id=group_id)
    counts = {"written": 0, "invalid": 0}
    idle = 0.0
    try:
        await reader.start()
        while max_updates is None or counts["written"] < max_updates:
            batches = await reader.getmany(timeout_ms=200, max_records=500)
            if not batches:
                idle += 0.2
                if idle_timeout_s is not None and idle >= idle_timeout_s:
                    break
                continue
            idle = 0.0
            for records in batches.values():
                for record in records:
                    if max_updates is not None and counts["written"] >= max_updates:
                        break
                    try:
                        update = RiskUpdate.from_bytes(record.value or b"")
                    except EventError:
                        counts["invalid"] += 1
                        continue
                    out.write(json.dumps(risk_assessment(update, fingerprint=fingerprint)) + "\n")
                    counts["written"] += 1
            out.flush()
            await asyncio.sleep(0)
    except KafkaError as exc:
        raise BrokerError(
            f"Export could not read {settings.topic(RISK_UPDATES)} from {settings.broker}: {exc}."
        ) from exc
    finally:
        await reader.stop()
    return counts
