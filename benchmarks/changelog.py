"""Seconds to rebuild a lost Redis store from the store changelog (notestream.stream.store.heal).

Builds the changelog of ``--admissions`` admissions (``--notes`` notes of ``--chunks`` chunk
probabilities each, plus admit and discharge events), starts its own redis-server on a free port
(empty, as after a restart without persistence) and times one :meth:`StoreHealer.heal` from it:
decoding and planning, writing every admission through the store's scripts, claiming the model
(``rebuild_s``). The same records are also sent to a broker and read back with
:func:`read_changelog` (``read_s``, ``records_read``): the embedded broker (librdkafka's mock) keeps only
about 5 MiB per partition, so there ``records_read`` stays below ``records`` at this size; pass
``--broker kafka://HOST:PORT`` for a real one. Checks that every admission came back with its notes
and prints ONE JSON line (also written to benchmarks/results/changelog.json at the default size):

    python benchmarks/changelog.py [--admissions 10000] [--notes 6] [--chunks 5] [--broker URL]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sys
import time
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from local_redis import local_redis  # benchmarks/ (the script's folder)
from tqdm import tqdm

from notestream.core.settings import Settings
from notestream.core.topics import STORE_CHANGELOG
from notestream.stream import kafka
from notestream.stream.embedded import EmbeddedBroker
from notestream.stream.events import AdmissionEvent
from notestream.stream.store import RedisRiskStore
from notestream.stream.store.changelog import AdmissionChange, NoteChange, encode_changes, latest
from notestream.stream.store.heal import StoreHealer, read_changelog

RESULTS = Path(__file__).parent / "results" / "changelog.json"
MODEL = "bench@0123abcd"


def changes(admissions: int, notes: int, chunks: int) -> list[NoteChange | AdmissionChange]:
    rng = random.Random(0)
    out: list[NoteChange | AdmissionChange] = []
    for hadm in range(100_000, 100_000 + admissions):
        admit = datetime(2150, 1, 1) + timedelta(minutes=hadm % 10_000)
        out.append(
            AdmissionChange(AdmissionEvent(kind="admit", subject_id=hadm, hadm_id=hadm, admit_time=admit), 0)
        )
        for i in range(notes):
            probs = tuple(rng.random() for _ in range(chunks))
            out.append(
                NoteChange(
                    hadm,
                    hadm,
                    f"{hadm}-{i}",
                    0,
                    False,
                    probs,
                    f"{rng.getrandbits(256):064x}",
                    admit + timedelta(hours=i),
                    i + 1,
                )
            )
        discharge = AdmissionEvent(
            kind="discharge", subject_id=hadm, hadm_id=hadm, discharge_time=admit + timedelta(days=3)
        )
        out.append(AdmissionChange(discharge, notes + 1))
    return out


async def produce(settings: Settings, records: list[tuple[bytes, bytes]]) -> None:
    producer = kafka.producer(settings, linger_ms=20)
    await producer.start()
    try:
        topic = settings.topic(STORE_CHANGELOG)
        futures = []
        for key, value in tqdm(records, desc="changelog", unit="rec", file=sys.stderr, leave=False):
            futures.append(await producer.send(topic, key=key, value=value))
            if len(futures) >= 5000:
                await asyncio.gather(*futures)
                futures.clear()
        await asyncio.gather(*futures)
    finally:
        await producer.stop()


async def run(
    broker_url: str, redis_url: str, admissions: int, notes: int, chunks: int, *, embedded: bool
) -> dict[str, Any]:
    settings = Settings(broker=broker_url, store=redis_url, retention_hours=24 * 365 * 10)
    now_ms = round(time.time() * 1000)
    records = encode_changes(
        changes(admissions, notes, chunks), namespace="notestream", model=MODEL, t_ms=now_ms
    )
    await produce(settings, records)
    start = time.perf_counter()
    records_read = len(await read_changelog(settings))
    read_s = time.perf_counter() - start
    store = RedisRiskStore(redis_url, pool_size=32)

    async def from_memory() -> dict[bytes, bytes]:
        return latest(records)

    healer = StoreHealer(store, from_memory, model=MODEL, retention_s=settings.retention_hours * 3600.0)
    try:
        store.require_epoch()
        start = time.perf_counter()
        rebuilt = await healer.heal()
        total = time.perf_counter() - start
        sample = [100_000 + i for i in range(0, admissions, max(1, admissions // 50))]
        states = [await store.state(h) for h in sample]
        complete = all(s is not None and s.n_notes == notes and s.seq == notes + 1 for s in states)
    finally:
        await store.close()
    return {
        "benchmark": "changelog_rebuild",
        "admissions": admissions,
        "notes_per_admission": notes,
        "chunks_per_note": chunks,
        "records": len(records),
        "changelog_mb": round(sum(len(k) + len(v) for k, v in records) / 1e6, 1),
        "rebuilt_admissions": rebuilt,
        "complete": complete,
        "rebuild_s": round(total, 2),
        "notes_per_s": round(admissions * notes / total),
        "broker": "embedded" if embedded else "kafka",
        "records_read": records_read,
        "read_s": round(read_s, 2),
        "read_records_per_s": round(records_read / read_s),
    }


async def main(admissions: int, notes: int, chunks: int, broker_url: str | None) -> dict[str, Any]:
    with local_redis() as redis_url, EmbeddedBroker() as broker:
        if redis_url is None:
            return {"benchmark": "changelog_rebuild", "error": "redis-server not installed"}
        if broker_url is None:
            broker.ensure_topics([Settings().topic(STORE_CHANGELOG)])
        url = broker_url or broker.url
        return await run(url, redis_url, admissions, notes, chunks, embedded=broker_url is None)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--admissions", type=int, default=10_000)
    parser.add_argument("--notes", type=int, default=6)
    parser.add_argument("--chunks", type=int, default=5)
    parser.add_argument("--broker", default=None, help="kafka://HOST:PORT (default: an embedded broker)")
    args = parser.parse_args()
    result = asyncio.run(main(args.admissions, args.notes, args.chunks, args.broker))
    line = json.dumps(result)
    if args.admissions == 10_000 and "error" not in result:
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        RESULTS.write_text(line + "\n", encoding="utf-8")
    print(line)
