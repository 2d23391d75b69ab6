"""FHIR R4 resources for the ingest tests (JSON objects as an EHR's FHIR server sends them)."""

from __future__ import annotations

import base64
from typing import Any


def encounter(
    eid: str = "167853",
    status: str = "in-progress",
    *,
    start: str = "2026-02-28T08:10:00-05:00",
    end: str | None = None,
) -> dict[str, Any]:
    period = {"start": start} | ({"end": end} if end else {})
    return {
        "resourceType": "Encounter",
        "id": eid,
        "status": status,
        "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "IMP"},
        "subject": {"reference": "Patient/22532"},
        "period": period,
    }


def document(
    did: str = "doc-1",
    text: str = "Stable overnight.",
    *,
    encounter_ref: str = "Encounter/167853",
    mime: str = "text/plain",
    charset: str = "utf-8",
    status: str = "current",
    **extra: Any,
) -> dict[str, Any]:
    return {
        "resourceType": "DocumentReference",
        "id": did,
        "status": status,
        "type": {"coding": [{"system": "http://loinc.org", "code": "11506-3", "display": "Progress note"}]},
        "subject": {"reference": "Patient/22532"},
        "date": "2026-03-01T10:00:00-05:00",
        "content": [
            {
                "attachment": {
                    "contentType": f"{mime}; charset={charset}",
                    "data": base64.b64encode(text.encode(charset)).decode(),
                }
            }
        ],
        **({"context": {"encounter": [{"reference": encounter_ref}]}} if encounter_ref else {}),
        **extra,
    }


def bundle(kind: str, *resources: dict[str, Any], full_urls: list[str] | None = None) -> dict[str, Any]:
    entries = []
    for i, resource in enumerate(resources):
        entry: dict[str, Any] = {"resource": resource}
        if full_urls:
            entry["fullUrl"] = full_urls[i]
        if kind in ("transaction", "batch"):
            entry["request"] = {"method": "POST", "url": resource["resourceType"]}
        entries.append(entry)
    return {"resourceType": "Bundle", "type": kind, "entry": entries}
