"""Bulk Data exports in: ``notestream ingest fhir --ndjson DIR``.

A FHIR Bulk Data ``$export`` writes one NDJSON file per resource type (``Encounter.ndjson``,
``DocumentReference.000.ndjson``..., optionally gzipped). The files are read line by line, Encounters
first (so admits precede their notes), with at most ``window`` messages awaiting Kafka: memory does not
grow with the export. Lines of other resource types (Patient, Observation...) are skipped and
counted; a line that is not JSON or cannot become events goes to the dead-letter topic.

>>> [p.name for p in export_files_order([Path("Patient.ndjson"), Path("DocumentReference.001.ndjson"),
...                                      Path("Encounter.ndjson.gz")])]
['Encounter.ndjson.gz', 'DocumentReference.001.ndjson', 'Patient.ndjson']
"""

from __future__ import annotations

import asyncio
import gzip
import json
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import IO, Any, cast

from notestream.core.settings import Settings
from notestream.stream.events import Event
from notestream.stream.ingest.errors import FhirReject
from notestream.stream.ingest.fhir_map import SUPPORTED, FhirOptions, map_body
from notestream.stream.ingest.producer import EventSink, IngestCounts

_ORDER = {"Encounter": 0, "DocumentReference": 1}


def export_files_order(paths: Iterable[Path]) -> list[Path]:
    """NDJSON files, Encounters first, then DocumentReferences, then the rest, each by name."""
    return sorted(paths, key=lambda p: (_ORDER.get(p.name.split(".")[0], 2), p.name))


def export_files(folder: Path) -> list[Path]:
    """The ``.ndjson`` and ``.ndjson.gz`` files of a Bulk Data export folder, in reading order."""
    return export_files_order(p for p in folder.iterdir() if p.name.endswith((".ndjson", ".ndjson.gz")))


def _open(path: Path) -> IO[bytes]:
    if path.name.endswith(".gz"):
        return cast(IO[bytes], gzip.open(path, "rb"))
    return path.open("rb")


def _batches(stream: IO[bytes], size: int) -> Iterator[list[bytes]]:
    batch: list[bytes] = []
    for line in stream:
        if line.strip():
            batch.append(line.rstrip(b"\r\n"))
            if len(batch) >= size:
                yield batch
                batch = []
    if batch:
        yield batch


async def load_ndjson(
    settings: Settings,
    folder: Path,
    *,
    options: FhirOptions | None = None,
    on_line: Callable[[int], None] | None = None,
    window: int = 512,
) -> IngestCounts:
    """Produce the events of every resource under ``folder`` and return the counts; ``on_line`` gets
    the number of lines read so far."""
    options = options or FhirOptions.from_settings(settings)
    lines = 0
    async with EventSink(settings, linger_ms=5) as sink:
        pending: list[tuple[list[Any], list[tuple[str, Event]]]] = []

        async def flush() -> None:
            for futures, items in pending:
                await sink.wait(futures)
                sink.count(items)
            pending.clear()

        for path in export_files(folder):
            line_no = 0
            with _open(path) as stream:
                batches = _batches(stream, 256)
                while (batch := await asyncio.to_thread(next, batches, None)) is not None:
                    for raw in batch:
                        lines += 1
                        line_no += 1
                        sink.counts.received += 1
                        try:
                            obj = json.loads(raw)
                        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
                            await sink.dead_letter(
                                raw,
                                FhirReject(
                                    400,
                                    "structure",
                                    f"{path.name} line {line_no}: not JSON ({type(exc).__name__})",
                                    reason="invalid_json",
                                ),
                                source="fhir",
                            )
                            continue
                        if not isinstance(obj, dict) or obj.get("resourceType") not in (*SUPPORTED, "Bundle"):
                            sink.counts.ignored += 1
                            continue
                        try:
                            mapped = map_body(obj, options)
                        except FhirReject as reject:
                            reject.detail = f"{path.name} line {line_no}: {reject.detail}"
                            await sink.dead_letter(raw, reject, source="fhir")
                            continue
                        sink.counts.skipped += mapped.skipped
                        pending.append((await sink.send(mapped.events), mapped.events))
                        if len(pending) >= window:
                            await flush()
                    if on_line is not None:
                        on_line(lines)
        await flush()
        return sink.counts
