"""The published event contract: JSON Schema (2020-12) of every event, generated from the models.

``python -m notestream.stream.schemas`` writes ``schemas/<Event>.schema.json`` (checked in, beside
``schemas/asyncapi.yaml``); ``python -m notestream.stream.schemas --check`` exits 1 when a file differs from the
models (a test does the same). Events a producer writes into notestream (``NoteEvent``,
``AdmissionEvent``) are described as the worker *accepts* them; events notestream writes
(``RiskUpdate``, ``RiskAlert``, ``DeadLetter``) as they are *sent*: every field present, and every
time with its UTC offset.

>>> schemas = event_schemas()
>>> sorted(schemas), schemas["RiskUpdate"]["$schema"]
(['AdmissionEvent', 'DeadLetter', 'NoteEvent', 'RiskAlert', 'RiskUpdate'], 'https://json-schema.org/draft/2020-12/schema')
>>> schemas["RiskUpdate"]["properties"]["emitted_at"]["pattern"]
'(Z|[+-][0-9]{2}:[0-9]{2})$'
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any, Literal

from notestream.stream.events import (
    SCHEMA_VERSION,
    AdmissionEvent,
    DeadLetter,
    Event,
    NoteEvent,
    RiskAlert,
    RiskUpdate,
)

SCHEMAS_DIR = Path("schemas")
DIALECT = "https://json-schema.org/draft/2020-12/schema"
AWARE = "(Z|[+-][0-9]{2}:[0-9]{2})$"
"""The pattern every sent time matches: an ISO 8601 time that ends with its offset."""

EVENTS: dict[str, tuple[type[Event], Literal["validation", "serialization"]]] = {
    "NoteEvent": (NoteEvent, "validation"),
    "AdmissionEvent": (AdmissionEvent, "validation"),
    "RiskUpdate": (RiskUpdate, "serialization"),
    "RiskAlert": (RiskAlert, "serialization"),
    "DeadLetter": (DeadLetter, "serialization"),
}


def _aware_times(node: Any) -> None:
    """Add :data:`AWARE` to every date-time string of a schema sent by notestream (in place)."""
    if isinstance(node, dict):
        if node.get("format") == "date-time":
            node["pattern"] = AWARE
        for value in node.values():
            _aware_times(value)
    elif isinstance(node, list):
        for value in node:
            _aware_times(value)


def event_schema(name: str) -> dict[str, Any]:
    """The JSON Schema of one event (see the module docstring for which side it describes)."""
    model, mode = EVENTS[name]
    body = model.model_json_schema(mode=mode)
    if mode == "serialization":
        _aware_times(body)
    return {
        "$schema": DIALECT,
        "$id": f"urn:notestream:schema:{name}:v{SCHEMA_VERSION}",
        **body,
    }


def event_schemas() -> dict[str, dict[str, Any]]:
    """Every event's schema by event name."""
    return {name: event_schema(name) for name in EVENTS}


def render(schema: dict[str, Any]) -> str:
    """A schema as the checked-in file holds it."""
    return json.dumps(schema, indent=2, sort_keys=False) + "\n"


def stale_files(folder: Path = SCHEMAS_DIR) -> list[Path]:
    """The schema files in ``folder`` that are missing or differ from the models."""
    out = []
    for name, schema in event_schemas().items():
        path = folder / f"{name}.schema.json"
        if not path.is_file() or path.read_text(encoding="utf-8") != render(schema):
            out.append(path)
    return out


def write_schemas(folder: Path = SCHEMAS_DIR) -> list[Path]:
    """Write every schema file that is missing or out of date; returns the files written."""
    folder.mkdir(parents=True, exist_ok=True)
    written = stale_files(folder)
    schemas = event_schemas()
    for path in written:
        path.write_text(render(schemas[path.name.removesuffix(".schema.json")]), encoding="utf-8")
    return written


def main(argv: list[str] | None = None) -> int:
    """``python -m notestream.stream.schemas [--check] [FOLDER]``."""
    args = list(sys.argv[1:] if argv is None else argv)
    check = "--check" in args
    folders = [a for a in args if a != "--check"]
    folder = Path(folders[0]) if folders else SCHEMAS_DIR
    if check:
        stale = stale_files(folder)
        for path in stale:
            print(
                f"{path} differs from the event models; run `python -m notestream.stream.schemas`.",
                file=sys.stderr,
            )
        return 1 if stale else 0
    for path in write_schemas(folder):
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
