"""EHR ingest throughput: HL7 v2 messages/s through the MLLP listener into Kafka (the embedded broker),
and FHIR Bulk Data NDJSON resources/s. Prints ONE JSON line (and writes it with ``--out``).

HL7: the listener and the broker run in this process; the interface engine is a separate process
(this file with ``--client``) holding ``C`` MLLP connections, each sending its messages one at a time
and waiting for each ACK, as MLLP senders do. Every ACK must be AA (Kafka acknowledged the events). The
feed is realistic: per admission an ADT^A01, progress notes (MDM^T02, ~1.5 kB of text with escapes and
several OBX lines), an edit (T08), a radiology report (ORU^R01) and an ADT^A03. Runs: 1 connection and
``--connections``, interleaved over ``--rounds``: each reports its best round, ``parallel_vs_single``
is the median ratio of neighbouring rounds.

FHIR: an export folder (Encounter.ndjson, DocumentReference.ndjson with base64 text) read by
``load_ndjson``, every resource validated by fhir.resources.

    python benchmarks/ingest.py [--messages 3000] [--connections 8] [--resources 3000]
        [--rounds 3] [--out benchmarks/results/ingest.json]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

WORDS = [
    "patient",
    "stable",
    "overnight",
    "afebrile",
    "tolerating",
    "diet",
    "ambulating",
    "plan",
    "continue",
    "diuresis",
    "monitor",
    "electrolytes",
    "creatinine",
    "improved",
    "oxygen",
    "weaned",
    "nasal",
    "cannula",
    "follow",
    "up",
    "cardiology",
    "echo",
    "pending",
    "heparin",
    "drip",
    "metoprolol",
    "lasix",
    "wound",
    "clean",
    "dry",
    "intact",
    "pain",
    "controlled",
]


def _text(rng: random.Random, words: int) -> list[str]:
    lines, line = [], []
    for _ in range(words):
        line.append(rng.choice(WORDS))
        if len(line) >= 14:
            lines.append(" ".join(line).capitalize() + r". BP 120\S\80 \T\ HR 72.")
            line = []
    return lines + ([" ".join(line)] if line else [])


def hl7_feed(n: int, seed: int = 0) -> list[bytes]:
    """About ``n`` messages of a realistic feed (ADT, MDM with escapes and edits, ORU)."""
    rng = random.Random(seed)
    out: list[bytes] = []
    hadm = 500000
    while len(out) < n:
        hadm += 1
        pid = f"PID|1||{hadm - 400000}^^^NORTH^MR||DOE^JANE"
        pv1 = "PV1|1|I|W7^712^1|E" + "|" * 15 + str(hadm) + "|" * 25 + "20260301080000-0500"
        msgs = [("ADT^A01", ["EVN|A01|20260301080000-0500", pid, pv1])]
        for i in range(6):
            txa = f"TXA|1|PN|TX|2026030{1 + i // 3}1{i}0000-0500" + "|" * 8 + f"{hadm}-{i}"
            obx = [f"OBX|{k + 1}|TX|NOTE||{line}||||||F" for k, line in enumerate(_text(rng, 220))]
            msgs.append(("MDM^T02", ["EVN|T02", pid, pv1, txa, *obx]))
        edit = "TXA|1|PN|TX|20260301100000-0500||||20260302090000-0500" + "|" * 4 + f"{hadm}-0"
        msgs.append(("MDM^T08", ["EVN|T08", pid, pv1, edit, "OBX|1|TX|NOTE||Edited note text.||||||F"]))
        obr = f"OBR|1||RAD-{hadm}|71020^XR CHEST 2V^CPT|||20260301120000-0500" + "|" * 18 + "F"
        msgs.append(
            ("ORU^R01", [pid, pv1, obr, "OBX|1|FT|IMP||IMPRESSION: No acute process.\\.br\\Stable.||||||F"])
        )
        msgs.append(("ADT^A03", ["EVN|A03|20260305100000-0500", pid, pv1 + "|20260305100000-0500"]))
        for kind, segments in msgs:
            msh = f"MSH|^~\\&|EPIC|NORTH|NOTESTREAM|NORTH|20260301101500-0500||{kind}|C{len(out)}|P|2.5"
            out.append("\r".join([msh, *segments]).encode() + b"\r")
    return out[:n]


async def _client(port: int, messages: list[bytes], connections: int) -> dict[str, Any]:
    """Send ``messages`` over ``connections`` MLLP connections; ACK latencies and codes."""
    latencies: list[float] = []
    codes: dict[str, int] = {}

    async def one(chunk: list[bytes]) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        for raw in chunk:
            start = time.perf_counter()
            writer.write(b"\x0b" + raw + b"\x1c\r")
            await writer.drain()
            ack = await reader.readuntil(b"\x1c\r")
            latencies.append(time.perf_counter() - start)
            msa = next(s for s in ack.strip(b"\x0b\x1c\r").split(b"\r") if s.startswith(b"MSA"))
            code = msa.split(b"|")[1].decode()
            codes[code] = codes.get(code, 0) + 1
        writer.close()

    start = time.perf_counter()
    await asyncio.gather(*(one(messages[i::connections]) for i in range(connections)))
    wall = time.perf_counter() - start
    latencies.sort()
    return {
        "messages": len(messages),
        "connections": connections,
        "seconds": round(wall, 3),
        "messages_per_s": round(len(messages) / wall),
        "ack_ms_p50": round(1000 * statistics.median(latencies), 2),
        "ack_ms_p99": round(1000 * latencies[int(0.99 * (len(latencies) - 1))], 2),
        "acks": codes,
    }


async def _hl7_runs(messages: int, connections: int, rounds: int) -> dict[str, Any]:
    from notestream.core.settings import Settings
    from notestream.stream.embedded import EmbeddedBroker
    from notestream.stream.ingest.hl7_server import Hl7Listener
    from notestream.stream.ingest.producer import EventSink

    feed = Path(tempfile.mkdtemp()) / "feed.json"
    feed.write_text(json.dumps([m.decode() for m in hl7_feed(messages)]))
    out: dict[str, Any] = {}
    with EmbeddedBroker() as broker:
        settings = Settings(broker=broker.url, topic_prefix="bench.")
        broker.ensure_topics(f"bench.{t}" for t in ("notes", "admissions", "notes-dlq"))
        async with EventSink(settings) as sink:
            listener = await Hl7Listener(settings, sink).start("127.0.0.1", 0)
            port = listener.address[1]
            runs: dict[str, list[dict[str, Any]]] = {"single": [], "parallel": []}
            for _ in range(rounds):  # interleaved, so both see the same machine load
                for label, conns in (("single", 1), ("parallel", connections)):
                    proc = await asyncio.create_subprocess_exec(
                        sys.executable,
                        __file__,
                        "--client",
                        str(port),
                        str(feed),
                        str(conns),
                        stdout=asyncio.subprocess.PIPE,
                    )
                    stdout, _ = await proc.communicate()
                    runs[label].append(json.loads(stdout))
            for label, results in runs.items():
                out[label] = max(results, key=lambda r: r["messages_per_s"])
            ratios = [
                p["messages_per_s"] / s["messages_per_s"]
                for s, p in zip(runs["single"], runs["parallel"], strict=True)
            ]
            out["parallel_vs_single"] = round(statistics.median(ratios), 2)
            await listener.close()
            out["events"] = dict(sink.counts.events)
            out["rejected"] = dict(sink.counts.rejected)
    return out


def fhir_export_folder(folder: Path, resources: int, seed: int = 0) -> None:
    rng = random.Random(seed)
    n_enc = max(1, resources // 7)
    with (folder / "Encounter.ndjson").open("w") as f:
        for i in range(n_enc):
            f.write(
                json.dumps(
                    {
                        "resourceType": "Encounter",
                        "id": str(700000 + i),
                        "status": "finished",
                        "class": {"code": "IMP"},
                        "subject": {"reference": f"Patient/{i}"},
                        "period": {"start": "2026-03-01T08:00:00-05:00", "end": "2026-03-05T10:00:00-05:00"},
                    }
                )
                + "\n"
            )
    with (folder / "DocumentReference.ndjson").open("w") as f:
        for i in range(resources - n_enc):
            text = "\n".join(_text(rng, 220)).encode()
            f.write(
                json.dumps(
                    {
                        "resourceType": "DocumentReference",
                        "id": f"d{i}",
                        "status": "current",
                        "subject": {"reference": f"Patient/{i % n_enc}"},
                        "date": "2026-03-02T09:00:00-05:00",
                        "content": [
                            {
                                "attachment": {
                                    "contentType": "text/plain",
                                    "data": base64.b64encode(text).decode(),
                                }
                            }
                        ],
                        "context": {"encounter": [{"reference": f"Encounter/{700000 + i % n_enc}"}]},
                    }
                )
                + "\n"
            )


async def _fhir_run(resources: int) -> dict[str, Any]:
    from notestream.core.settings import Settings
    from notestream.stream.embedded import EmbeddedBroker
    from notestream.stream.ingest.fhir_ndjson import load_ndjson

    with tempfile.TemporaryDirectory() as tmp, EmbeddedBroker() as broker:
        fhir_export_folder(Path(tmp), resources)
        settings = Settings(broker=broker.url, topic_prefix="fbench.")
        broker.ensure_topics(f"fbench.{t}" for t in ("notes", "admissions", "notes-dlq"))
        start = time.perf_counter()
        counts = await load_ndjson(settings, Path(tmp))
        wall = time.perf_counter() - start
    return {
        "resources": counts.received,
        "seconds": round(wall, 3),
        "resources_per_s": round(counts.received / wall),
        "events": counts.events,
        "rejected": counts.rejected,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--messages", type=int, default=3000)
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--resources", type=int, default=3000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--client", nargs=3, metavar=("PORT", "FEED", "CONNECTIONS"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.client:
        port, feed, conns = args.client
        messages = [m.encode() for m in json.loads(Path(feed).read_text())]
        print(json.dumps(asyncio.run(_client(int(port), messages, int(conns)))))
        return
    import os

    result = {
        "benchmark": "ingest",
        "cpus": os.cpu_count(),
        "load_avg_1m_before": round(os.getloadavg()[0], 2),  # the machine is shared: context for the figures
        "hl7": asyncio.run(_hl7_runs(args.messages, args.connections, args.rounds)),
        "fhir_ndjson": asyncio.run(_fhir_run(args.resources)),
    }
    line = json.dumps(result)
    print(line)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(line + "\n")


if __name__ == "__main__":
    main()
