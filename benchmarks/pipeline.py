"""The streaming path end to end: embedded broker + worker process vs the engine alone. One JSON line.

With one small BERT (2 layers x 128 wide, max length 128, random weights, a WordPiece vocabulary trained
on generated notes) and one set of generated notes (reference 318-word chunks):

- ``engine_chunks_per_s``: every chunk of every note through :class:`InferenceEngine` in this process,
  one request per note, all at once (the engine's own capacity with this model);
- ``e2e_chunks_per_s``: the same notes produced to the embedded broker (librdkafka mock cluster) as fast
  as possible and processed by a worker process (Faust, memory store): chunks / (last update emitted -
  first note produced); ``e2e_vs_engine`` is their ratio (target >= 0.8);
- ``latency_p50_ms`` / ``latency_p99_ms``: note produced -> risk update emitted, with notes produced at
  half of the measured end-to-end capacity (``paced_notes_per_s``) for ``--paced-seconds``;
- ``redis``: store update latency for an admission holding 1 vs 1,000 notes (``benchmarks/store.py``
  against its own redis-server; target: flat, within 2x).

    python benchmarks/pipeline.py [--notes 600] [--paced-seconds 15] [--store-updates 500]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from notestream.core.settings import TOPICS, Settings  # noqa: E402
from notestream.core.topics import NOTES, RISK_UPDATES  # noqa: E402
from notestream.models.build import build_small_bert, clinical_corpus  # noqa: E402
from notestream.models.engine import InferenceEngine  # noqa: E402
from notestream.models.prep import note_chunks  # noqa: E402
from notestream.models.spec import ModelSpec  # noqa: E402
from notestream.stream.embedded import EmbeddedBroker  # noqa: E402
from notestream.stream.events import NoteEvent, RiskUpdate, admission_key, utcnow  # noqa: E402
from notestream.stream.kafka import consumer, producer  # noqa: E402
from notestream.stream.pipeline import latency_ms  # noqa: E402
from notestream.stream.worker import spawn_worker, wait_ready  # noqa: E402


def make_notes(n: int, seed: int) -> list[NoteEvent]:
    texts = clinical_corpus(n, seed=seed, sentences=(10, 120))
    return [
        NoteEvent(
            note_id=f"n{seed}-{i}", subject_id=i % 50, hadm_id=500_000 + i % 50, text=text, source="bench"
        )
        for i, text in enumerate(texts)
    ]


async def engine_alone(model: Path, notes: list[NoteEvent]) -> tuple[float, int]:
    engine = InferenceEngine(model, devices=["cpu"])
    await engine.start()
    try:
        spec = engine.spec
        per_note = [note_chunks(n.text, spec) for n in notes]
        await engine.score(per_note[0][:8])  # warm up
        start = time.perf_counter()
        await asyncio.gather(*(engine.score(chunks) for chunks in per_note if chunks))
        elapsed = time.perf_counter() - start
        total = sum(len(c) for c in per_note)
        return total / elapsed, total
    finally:
        await engine.close()


async def feed(settings: Settings, notes: list[NoteEvent], rate: float | None) -> list[RiskUpdate]:
    """Produce ``notes`` (at ``rate`` notes/s, or at once) and collect one update per note."""
    out = producer(settings)
    reader = consumer(settings, settings.topic(RISK_UPDATES), auto_offset_reset="latest")
    await reader.start()
    await out.start()
    try:
        await asyncio.sleep(1.0)  # the reader's partitions are assigned, positioned at the end
        start = time.perf_counter()
        pending = []
        for i, note in enumerate(notes):
            if rate is not None:
                await asyncio.sleep(max(0.0, start + i / rate - time.perf_counter()))
            stamped = note.model_copy(update={"produced_at": utcnow()})
            pending.append(
                await out.send(settings.topic(NOTES), stamped.to_bytes(), key=admission_key(note.hadm_id))
            )
        await asyncio.gather(*pending)
        wanted = {n.note_id for n in notes}
        updates: list[RiskUpdate] = []
        deadline = time.monotonic() + 300
        while wanted and time.monotonic() < deadline:
            for records in (await reader.getmany(timeout_ms=200)).values():
                for record in records:
                    update = RiskUpdate.from_bytes(record.value)
                    if update.trigger_note_id in wanted and update.change == "new":
                        wanted.discard(update.trigger_note_id)
                        updates.append(update)
        return updates
    finally:
        await out.stop()
        await reader.stop()


def latencies_ms(updates: list[RiskUpdate]) -> np.ndarray:
    return np.array([ms for u in updates if (ms := latency_ms(u)) is not None], dtype=float)


def main(notes_n: int, paced_s: float, store_updates: int) -> dict[str, Any]:
    result: dict[str, Any] = {"benchmark": "pipeline", "notes": notes_n}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        spec = ModelSpec(max_length=128)
        model = build_small_bert(work / "model", clinical_corpus(300, seed=1), vocab_size=2000, hidden=128,
                                 layers=2, heads=2, intermediate=512, max_length=128, spec=spec)  # fmt: skip
        notes = make_notes(notes_n, seed=2)
        engine_rate, chunks = asyncio.run(engine_alone(model, notes))
        result.update(chunks=chunks, engine_chunks_per_s=round(engine_rate, 1))
        with EmbeddedBroker() as broker:
            settings = Settings(broker=broker.url, store="memory://", model_dir=model, devices=["cpu"],
                                topic_prefix="bench.", consumer_group="bench", session_timeout_s=10.0)  # fmt: skip
            broker.ensure_topics(settings.topic(t) for t in TOPICS)
            ready = work / "ready"
            worker = spawn_worker(settings, work / "worker.log", ready_file=ready)
            try:
                wait_ready(worker, ready)
                asyncio.run(feed(settings, make_notes(64, seed=3), None))  # warm up the worker
                updates = asyncio.run(feed(settings, notes, None))
                first = min(n.produced_at for n in updates if n.produced_at)  # type: ignore[type-var]
                span = (max(u.emitted_at for u in updates) - first).total_seconds()
                e2e = chunks / span
                result.update(
                    e2e_chunks_per_s=round(e2e, 1),
                    e2e_vs_engine=round(e2e / engine_rate, 3),
                    e2e_notes_per_s=round(len(notes) / span, 1),
                )
                rate = 0.5 * len(notes) / span
                paced = make_notes(max(20, int(rate * paced_s)), seed=4)
                lat = latencies_ms(asyncio.run(feed(settings, paced, rate)))
                result.update(
                    paced_notes_per_s=round(rate, 1),
                    latency_p50_ms=round(float(np.percentile(lat, 50)), 1),
                    latency_p99_ms=round(float(np.percentile(lat, 99)), 1),
                )
            finally:
                worker.terminate()
                worker.wait(30)
    store = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "store.py"), "--updates", str(store_updates)],
        capture_output=True, text=True, check=True, env={**os.environ, "PYTHONPATH": str(ROOT)},
    )  # fmt: skip
    redis = json.loads(store.stdout.strip().splitlines()[-1]).get("redis")
    result["redis"] = redis
    return result


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--notes", type=int, default=600)
    parser.add_argument("--paced-seconds", type=float, default=15.0)
    parser.add_argument("--store-updates", type=int, default=500)
    args = parser.parse_args()
    print(json.dumps(main(args.notes, args.paced_seconds, args.store_updates)))
