"""Overload: peak RSS and drain time when notes arrive at 3x and 10x the pipeline's capacity. One JSON line.

In process: :class:`notestream.stream.pipeline.Pipeline` with the real engine (tokenization, queue, batching) whose
classifier takes ``--chunk-ms`` per chunk in its worker thread in place of a model's forward pass (a
slow scorer with a known capacity), a Redis store (its own redis-server; memory:// where none is
installed) and ``--partitions`` consumers. Notes "arrive" on a simulated topic at ``factor`` x the
measured capacity for ``--seconds``; as a Kafka consumer does, each partition's consumer holds at most
``--prefetch`` fetched notes (the rest waits in the log, outside the worker) and processes batches of up
to 64. The log is simulated, not held: a note's bytes are made when it is fetched.

Keys: ``capacity_notes_per_s`` (a burst, measured first), ``idle_rss_mb`` (after a warm-up, before the
load), and per factor ``peak_rss_mb``, ``peak_vs_idle`` (target < 2 at 10x), ``drain_s`` (from the end
of arrivals to the last update), ``lag_peak`` (notes arrived but not yet processed) and ``lost`` (notes
without an update: must be 0). Writes ``benchmarks/results/overload.{json,png}``.

    python benchmarks/overload.py [--chunk-ms 10] [--seconds 6] [--factors 3,10] [--prefetch 256]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from notestream.core.settings import Settings  # noqa: E402
from notestream.models.build import build_small_bert, clinical_corpus  # noqa: E402
from notestream.models.checkpoint import load_model_folder  # noqa: E402
from notestream.models.classifier import ChunkClassifier  # noqa: E402
from notestream.models.engine import InferenceEngine  # noqa: E402
from notestream.models.spec import ModelSpec  # noqa: E402
from notestream.stream.events import NoteEvent  # noqa: E402
from notestream.stream.pipeline import Pipeline  # noqa: E402
from notestream.stream.store import open_store  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"
BATCH = 64


class SlowClassifier(ChunkClassifier):
    """The real tokenizer and interface; ``delay_s`` per chunk in place of the forward pass."""

    delay_s = 0.01

    def forward_ids(self, batch: Sequence[Sequence[int]]) -> np.ndarray:
        time.sleep(self.delay_s * len(batch))
        return np.full(len(batch), 0.25, dtype=np.float64)

    def warm_up(self) -> None:
        return None


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


class PeakRss:
    """Samples this process's RSS every 50 ms in a thread; ``peak`` since the last ``reset``."""

    def __init__(self) -> None:
        self.peak = rss_mb()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(0.05):
            self.peak = max(self.peak, rss_mb())

    def reset(self) -> None:
        self.peak = rss_mb()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


class Topic:
    """A simulated topic: note ``i`` arrives at ``start + i / rate``; bytes are made at fetch time."""

    def __init__(self, pool: list[NoteEvent], rate: float, total: int, tag: str) -> None:
        self.pool, self.rate, self.total, self.tag = pool, rate, total, tag
        self.start = time.monotonic()

    def arrived(self) -> int:
        return min(self.total, int((time.monotonic() - self.start) * self.rate) + 1)

    def note(self, i: int) -> bytes:
        base = self.pool[i % len(self.pool)]
        return base.model_copy(update={"note_id": f"{self.tag}-{i}", "hadm_id": 700_000 + i % 500}).to_bytes()


async def consume(pipeline: Pipeline, topic: Topic, partitions: int, prefetch: int) -> dict[str, Any]:
    """Process every note of ``topic``; returns drain time, peak lag and lost notes."""
    queues: list[asyncio.Queue[bytes]] = [asyncio.Queue(maxsize=prefetch) for _ in range(partitions)]
    done = {"updates": 0, "processed": 0, "last": 0.0, "lag_peak": 0}

    async def fetcher() -> None:
        nxt = 0
        while nxt < topic.total:
            arrived = topic.arrived()
            done["lag_peak"] = max(done["lag_peak"], arrived - done["processed"])
            while nxt < arrived:
                queue = queues[nxt % partitions]
                if queue.full():
                    break  # this partition's consumer is paused: the rest waits in the log
                queue.put_nowait(topic.note(nxt))
                nxt += 1
            await asyncio.sleep(0.005)

    async def partition(queue: asyncio.Queue[bytes], share: int) -> None:
        seen = 0
        while seen < share:
            raw = [await queue.get()]
            while len(raw) < BATCH and not queue.empty():
                raw.append(queue.get_nowait())
            result = await pipeline.process([NoteEvent.from_bytes(b) for b in raw])
            seen += len(raw)
            done["processed"] += len(raw)
            done["updates"] += sum(u.change == "new" for u in result.updates)
            done["last"] = time.monotonic()

    shares = [len(range(p, topic.total, partitions)) for p in range(partitions)]
    await asyncio.gather(fetcher(), *(partition(q, s) for q, s in zip(queues, shares, strict=True)))
    end_of_arrivals = topic.start + topic.total / topic.rate
    return {
        "notes": topic.total,
        "drain_s": round(max(0.0, done["last"] - end_of_arrivals), 2),
        "lag_peak": done["lag_peak"],
        "lost": topic.total - done["updates"],
    }


async def run(args: argparse.Namespace, model: Path, url: str) -> dict[str, Any]:
    SlowClassifier.delay_s = args.chunk_ms / 1000
    loaded = load_model_folder(model)
    store = open_store(Settings(store=url))
    for _ in range(200):
        if await store.ping():
            break
        await asyncio.sleep(0.05)
    pool = [
        NoteEvent(note_id=f"p{i}", subject_id=i, hadm_id=700_000 + i, text=text, source="bench")
        for i, text in enumerate(clinical_corpus(200, seed=9, sentences=(10, 60)))
    ]
    sampler = PeakRss()
    try:
        async with InferenceEngine([SlowClassifier(loaded, "cpu")], max_batch_size=BATCH) as engine:
            pipeline = Pipeline(engine, store, loaded.spec, model="slow", tokenizer=loaded.tokenizer)
            burst = Topic(pool, rate=1e9, total=args.burst, tag="burst")
            start = time.monotonic()
            await consume(pipeline, burst, args.partitions, args.prefetch)
            capacity = args.burst / (time.monotonic() - start)
            idle = rss_mb()
            out: dict[str, Any] = {"capacity_notes_per_s": round(capacity, 1), "idle_rss_mb": round(idle, 1)}
            for factor in args.factors:
                sampler.reset()
                topic = Topic(
                    pool,
                    rate=factor * capacity,
                    total=int(factor * capacity * args.seconds),
                    tag=f"x{factor}",
                )
                res = await consume(pipeline, topic, args.partitions, args.prefetch)
                out[f"x{factor:g}"] = {
                    **res,
                    "arrival_notes_per_s": round(topic.rate, 1),
                    "peak_rss_mb": round(sampler.peak, 1),
                    "peak_vs_idle": round(sampler.peak / idle, 3),
                }
            return out
    finally:
        sampler.stop()
        await store.close()


def plot(result: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = [k for k in result if k.startswith("x")]
    fig, (left, right) = plt.subplots(1, 2, figsize=(8, 3.5))
    left.bar(["idle", *keys], [result["idle_rss_mb"], *[result[k]["peak_rss_mb"] for k in keys]])
    left.set_ylabel("RSS (MB)")
    right.bar(keys, [result[k]["drain_s"] for k in keys])
    right.set_ylabel("drain time (s)")
    fig.suptitle(f"Overload at {', '.join(keys)} of {result['capacity_notes_per_s']:g} notes/s")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--chunk-ms", type=float, default=10.0, help="The slow scorer's time per chunk.")
    parser.add_argument("--seconds", type=float, default=6.0, help="How long notes arrive at each factor.")
    parser.add_argument("--factors", default="3,10")
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument("--prefetch", type=int, default=256, help="Fetched notes held per partition.")
    parser.add_argument("--burst", type=int, default=300, help="Notes of the capacity measurement.")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    args.factors = [float(f) for f in args.factors.split(",")]
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from pipeline import redis_url

    with tempfile.TemporaryDirectory() as tmp:
        model = build_small_bert(
            Path(tmp) / "m",
            clinical_corpus(200, seed=1),
            vocab_size=2000,
            hidden=32,
            layers=1,
            heads=2,
            intermediate=64,
            max_length=512,
            spec=ModelSpec(),
        )
        with redis_url() as url:
            result = {
                "benchmark": "overload",
                "chunk_ms": args.chunk_ms,
                "seconds": args.seconds,
                "partitions": args.partitions,
                "prefetch": args.prefetch,
                "store": url.split(":")[0],
                **asyncio.run(run(args, model, url)),
            }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "overload.json").write_text(json.dumps(result, indent=2) + "\n")
    plot(result, args.out / "overload.png")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
