"""The streaming path end to end: embedded broker + worker process vs the engine alone. One JSON line.

With one small BERT (2 layers x 128 wide, max length 128, random weights, a WordPiece vocabulary trained
on generated notes) and one set of generated notes (reference 318-word chunks):

- ``engine_chunks_per_s``: every chunk of every note through :class:`InferenceEngine` in this process,
  one request per note, all at once (the engine's own capacity with this model);
- ``e2e_chunks_per_s``: the same notes produced to the embedded broker (tansu, :mod:`notestream.stream.embedded`) as fast
  as possible and processed by a worker process (Faust, memory store): chunks / (last update emitted -
  first note produced); ``e2e_vs_engine`` is their ratio (target >= 0.8);
- ``latency_p50_ms`` / ``latency_p99_ms``: note produced -> risk update emitted, with notes produced at
  half of the measured end-to-end capacity (``paced_notes_per_s``) for ``--paced-seconds``;
- ``redis``: store update latency for an admission holding 1 vs 1,000 notes (``benchmarks/store.py``
  against its own redis-server; target: flat, within 2x).
- ``capacity``: the pipeline's own capacity, without a model: the same engine (tokenization, queue,
  batching) with an *instant* classifier that returns a constant probability in place of the forward
  pass, behind :class:`notestream.stream.pipeline.Pipeline` with a Redis store (its own redis-server): parse ->
  window, clean + chunk -> tokenize -> store -> emit (serialize the updates), in batches of
  ``--batch`` notes, in this process. The instant classifier stands for a GPU model, which leaves
  the CPU to the pipeline, so the engine tokenizes as on a GPU node (one thread per usable core, at
  most 8): ``capacity.chunks_per_s`` is that capacity and ``capacity.chunks_per_s_one_tokenize_thread``
  the same with one thread (the CPU-only default), best of 3 interleaved rounds each;
  ``capacity.tokenize_threads_gain`` is the median of their per-round ratios, and
  ``capacity.tokenize_stage`` the tokenize stage alone through the engine both ways (``scaling``);
  ``capacity.stage_ms_per_1000_chunks`` times each stage alone on the same notes (where the rest goes);
  ``bert_base_chunks_per_s`` is the BERT-base engine on CPU at 512 tokens (random weights, a few
  chunks) and ``pipeline_capacity_vs_engine`` their ratio (target >= 10: the CPU side keeps up with ten
  CPU engines, and shows what bounds it at GPU rates).

    python benchmarks/pipeline.py [--notes 600] [--paced-seconds 15] [--store-updates 500]
    python benchmarks/pipeline.py --capacity-only [--capacity-notes 2000] [--batch 64]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from bert_base import bert_base_folder  # noqa: E402
from local_redis import local_redis  # noqa: E402

from notestream.core.logging import quiet_libraries  # noqa: E402

quiet_libraries()  # the worker's environment (TOKENIZERS_PARALLELISM=false among it), before transformers loads

from notestream.core.settings import Settings  # noqa: E402
from notestream.core.topics import NOTES, RISK_UPDATES  # noqa: E402
from notestream.models.build import build_small_bert, clinical_corpus  # noqa: E402
from notestream.models.checkpoint import load_model_folder  # noqa: E402
from notestream.models.classifier import ChunkClassifier  # noqa: E402
from notestream.models.engine import InferenceEngine, usable_cores  # noqa: E402
from notestream.models.prep import note_chunks  # noqa: E402
from notestream.models.spec import ModelSpec  # noqa: E402
from notestream.stream.embedded import EmbeddedBroker  # noqa: E402
from notestream.stream.events import NoteEvent, RiskUpdate, admission_key, utcnow  # noqa: E402
from notestream.stream.kafka import consumer, producer  # noqa: E402
from notestream.stream.pipeline import Pipeline, latency_ms, update_from_state  # noqa: E402
from notestream.stream.store import RiskStore, open_store  # noqa: E402
from notestream.stream.topics import create_topics  # noqa: E402
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


class InstantClassifier(ChunkClassifier):
    """The real classifier's tokenizer and interface, with a constant probability in place of the model."""

    def forward_ids(self, batch: Sequence[Sequence[int]]) -> np.ndarray:
        return np.full(len(batch), 0.25, dtype=np.float64)

    def warm_up(self) -> None:
        return None


def bert_base_rate(work: Path, texts: list[str], chunks: int) -> float:
    """Chunks/s of BERT-base (12 x 768, random weights) at 512 tokens through the engine on CPU."""
    model = bert_base_folder(work / "bert-base", vocab_size=2000)

    async def run() -> float:
        async with InferenceEngine(model, devices=["cpu"], max_batch_size=8) as engine:
            await engine.score(texts[:1])  # warm up
            start = time.perf_counter()
            await engine.score(texts[:chunks])
            return chunks / (time.perf_counter() - start)

    return asyncio.run(run())


@contextlib.contextmanager
def redis_url() -> Iterator[str]:
    """A throwaway redis-server (:func:`local_redis.local_redis`), or memory:// where none is installed."""
    with local_redis() as url:
        yield url or "memory://"


async def _open_store(url: str) -> RiskStore:
    settings = Settings(store=url)
    store = open_store(settings)
    for _ in range(200):
        if await store.ping():
            return store
        await asyncio.sleep(0.05)
    raise RuntimeError(f"The benchmark's store at {url} did not answer.")


async def pipeline_capacity(
    model: Path, raw: list[bytes], batch: int, url: str, tokenize_threads: int
) -> dict[str, Any]:
    """Chunks/s of parse -> Pipeline.process (instant classifier, the store at ``url``) -> serialize."""
    loaded = load_model_folder(model)
    instant = InstantClassifier(loaded, "cpu")
    store = await _open_store(url)
    try:
        async with InferenceEngine([instant], tokenize_threads=tokenize_threads) as engine:
            pipeline = Pipeline(engine, store, loaded.spec, model="instant", tokenizer=loaded.tokenizer)
            await pipeline.process([NoteEvent.from_bytes(b) for b in raw[:batch]])  # warm up
            before = pipeline.counters["chunks"]
            start = time.perf_counter()
            emitted = 0
            for i in range(batch, len(raw), batch):
                result = await pipeline.process([NoteEvent.from_bytes(b) for b in raw[i : i + batch]])
                emitted += sum(len(u.to_bytes()) > 0 for u in result.updates)
            elapsed = time.perf_counter() - start
            chunks = pipeline.counters["chunks"] - before
            stages = await stage_times(instant, store, loaded.spec, raw[batch:], batch)
    finally:
        await store.close()
    per_1000 = {k: round(v * 1000 / max(1, chunks) * 1000, 1) for k, v in stages.items()}
    total = sum(stages.values())
    return {
        "store": url.split(":", 1)[0],
        "tokenize_threads": engine.tokenize_threads,
        "batch": batch,
        "notes": len(raw) - batch,
        "chunks": chunks,
        "updates": emitted,
        "chunks_per_s": round(chunks / elapsed, 1),
        "stage_ms_per_1000_chunks": per_1000,
        "stage_share": {k: round(v / total, 3) for k, v in stages.items()},
    }


async def tokenize_scaling(model: Path, texts: list[str], per_call: int) -> dict[str, Any]:
    """The tokenize stage alone through the engine (``InferenceEngine.tokenize``, ``per_call`` chunks a
    call as a pipeline batch brings them): chunks/s with one tokenize thread and with one per usable
    core, interleaved, best of 3; ``scaling`` is their ratio (what spare cores buy the tokenize stage)."""
    instant = InstantClassifier(load_model_folder(model), "cpu")
    calls = [texts[i : i + per_call] for i in range(0, len(texts), per_call)]
    best = {1: 0.0, usable_cores(limit=8): 0.0}
    for _ in range(3):
        for n in best:
            async with InferenceEngine([instant], tokenize_threads=n) as engine:
                start = time.perf_counter()
                for call in calls:
                    await engine.tokenize(call)
                best[n] = max(best[n], len(texts) / (time.perf_counter() - start))
    many = max(best)
    return {
        "threads": many,
        "chunks_per_s_one_thread": round(best[1], 1),
        "chunks_per_s": round(best[many], 1),
        "scaling": round(best[many] / best[1], 2),
    }


async def stage_times(
    clf: ChunkClassifier, store: RiskStore, spec: ModelSpec, raw: list[bytes], batch: int
) -> dict[str, float]:
    """Seconds of each stage alone over the same notes, batch by batch as the pipeline runs them."""
    seconds = dict.fromkeys(("parse", "clean_chunk", "tokenize", "store", "emit"), 0.0)
    for i in range(0, len(raw), batch):
        t0 = time.perf_counter()
        notes = [NoteEvent.from_bytes(b) for b in raw[i : i + batch]]
        t1 = time.perf_counter()
        chunks = [note_chunks(n.text, spec, clf.tokenizer) for n in notes]
        t2 = time.perf_counter()
        clf.encode([c for cs in chunks for c in cs])
        t3 = time.perf_counter()
        states = await asyncio.gather(
            *(
                store.apply_note(
                    hadm_id=int(n.hadm_id) + 10_000_000,
                    subject_id=n.subject_id,
                    note_id=n.note_id,
                    revision=n.revision,
                    is_error=False,
                    chunk_probs=[0.25] * len(cs),
                )
                for n, cs in zip(notes, chunks, strict=True)
            )
        )
        t4 = time.perf_counter()
        for note, res in zip(notes, states, strict=True):
            if res.state is not None:
                update_from_state(
                    res.state, spec=spec, model="instant", trigger=note, change=res.reason
                ).to_bytes()
        t5 = time.perf_counter()
        for key, dt in zip(seconds, (t1 - t0, t2 - t1, t3 - t2, t4 - t3, t5 - t4), strict=True):
            seconds[key] += dt
    return seconds


def capacity(notes_n: int, batch: int, bert_chunks: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        spec = ModelSpec(max_length=512)
        model = build_small_bert(
            work / "instant",
            clinical_corpus(300, seed=1),
            vocab_size=2000,
            hidden=32,
            layers=1,
            heads=2,
            intermediate=64,
            max_length=512,
            spec=spec,
        )
        notes = make_notes(notes_n + batch, seed=2)
        raw = [n.to_bytes() for n in notes]
        cores = usable_cores(limit=8)  # as on a GPU node (the instant classifier leaves the CPU free)
        runs: dict[int, list[dict[str, Any]]] = {1: [], cores: []}
        for _ in range(3):  # interleaved; each run with a store of its own (the same notes are duplicates)
            for threads, out in runs.items():
                with redis_url() as url:
                    out.append(
                        asyncio.run(pipeline_capacity(model, raw, batch, url, tokenize_threads=threads))
                    )
        cap = max(runs[cores], key=lambda r: r["chunks_per_s"])
        cap["chunks_per_s_one_tokenize_thread"] = max(r["chunks_per_s"] for r in runs[1])
        gains = [d["chunks_per_s"] / o["chunks_per_s"] for o, d in zip(runs[1], runs[cores], strict=True)]
        cap["tokenize_threads_gain"] = round(statistics.median(gains), 2)
        cap["tokenize_threads_gain_rounds"] = [round(g, 2) for g in gains]
        chunk_texts = [c for n in notes[batch:] for c in note_chunks(n.text, spec)]
        per_call = max(1, len(chunk_texts) * batch // max(1, len(notes) - batch))
        cap["tokenize_stage"] = asyncio.run(tokenize_scaling(model, chunk_texts, per_call))
        texts = [c for n in notes[:50] for c in note_chunks(n.text, spec)]
        bert = bert_base_rate(work, texts, bert_chunks)
    return {
        "capacity": cap,
        "bert_base_chunks_per_s": round(bert, 2),
        "pipeline_capacity_vs_engine": round(cap["chunks_per_s"] / bert, 1),
    }


def plot_stages(cap: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    stages = cap["stage_ms_per_1000_chunks"]
    fig, ax = plt.subplots(figsize=(7, 3.5))
    ax.bar(list(stages), list(stages.values()), color="tab:blue")
    ax.set_ylabel("ms per 1,000 chunks")
    ax.set_title(f"Pipeline stages, instant scorer: {cap['chunks_per_s']:g} chunks/s ({cap['store']} store)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main(notes_n: int, paced_s: float, store_updates: int) -> dict[str, Any]:
    result: dict[str, Any] = {"benchmark": "pipeline", "notes": notes_n}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        spec = ModelSpec(max_length=128)
        model = build_small_bert(
            work / "model",
            clinical_corpus(300, seed=1),
            vocab_size=2000,
            hidden=128,
            layers=2,
            heads=2,
            intermediate=512,
            max_length=128,
            spec=spec,
        )
        notes = make_notes(notes_n, seed=2)
        engine_rate, chunks = asyncio.run(engine_alone(model, notes))
        result.update(chunks=chunks, engine_chunks_per_s=round(engine_rate, 1))
        with EmbeddedBroker() as broker:
            settings = Settings(
                broker=broker.url,
                store="memory://",
                model_dir=model,
                devices=["cpu"],
                topic_prefix="bench.",
                consumer_group="bench",
                session_timeout_s=10.0,
            )
            asyncio.run(create_topics(settings, wait_s=30))
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
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
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
    parser.add_argument("--capacity-only", action="store_true", help="Only the instant-scorer capacity run.")
    parser.add_argument("--capacity-notes", type=int, default=2000)
    parser.add_argument("--batch", type=int, default=64, help="Notes per pipeline batch (capacity run).")
    parser.add_argument("--bert-chunks", type=int, default=8, help="Chunks timed through BERT-base.")
    parser.add_argument("--out", type=Path, default=RESULTS, help="Folder for pipeline_capacity.{json,png}.")
    args = parser.parse_args()
    result: dict[str, Any] = {"benchmark": "pipeline"}
    if not args.capacity_only:
        result.update(main(args.notes, args.paced_seconds, args.store_updates))
    result.update(capacity(args.capacity_notes, args.batch, args.bert_chunks))
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "pipeline_capacity.json").write_text(json.dumps(result, indent=2) + "\n")
    plot_stages(result["capacity"], args.out / "pipeline_capacity.png")
    print(json.dumps(result))
