"""The inference engine: merging, budgets, failures, backpressure, cancellation, responsiveness.

The one seam is :class:`SeamClassifier`, a real ChunkClassifier (the tiny BERT) whose ``forward_ids``
can record batch shapes, hold batches at a gate, fail batches holding a marked token, or drop an output.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from notestream.core.settings import Settings
from notestream.models.batching import select_batch
from notestream.models.build import clinical_corpus
from notestream.models.checkpoint import load_model_folder
from notestream.models.classifier import ChunkClassifier
from notestream.models.engine import TEXTS_PER_SLICE, BatchRecord, InferenceEngine, resolve_devices
from notestream.models.errors import BatchFailed, EngineClosed, EngineError, EngineOverloaded
from notestream.models.prep import note_chunks
from notestream.models.spec import ModelSpec

POISON = "[MASK]"  # a chunk holding this token makes its batch fail


class SeamClassifier(ChunkClassifier):
    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.shapes: list[tuple[int, int]] = []
        self.gate = threading.Event()
        self.gate.set()
        self.entered = threading.Event()
        self.left = threading.Event()
        self.threads: set[str] = set()
        self.slices: list[int] = []
        self.drop_one = False
        self.poison_id = self.tokenizer.convert_tokens_to_ids(POISON)

    def encode(self, texts: Sequence[str]) -> list[list[int]]:
        self.threads.add(threading.current_thread().name)
        self.slices.append(len(texts))
        return super().encode(texts)

    def forward_ids(self, batch: Sequence[Sequence[int]]) -> np.ndarray:
        self.threads.add(threading.current_thread().name)
        self.entered.set()
        self.gate.wait(timeout=30)
        try:
            self.shapes.append((len(batch), max(len(r) for r in batch)))
            if any(self.poison_id in row for row in batch):
                raise RuntimeError("injected failure")
            out = super().forward_ids(batch)
            return out[:-1] if self.drop_one else out
        finally:
            self.left.set()


async def queued(engine: InferenceEngine, depth: int) -> None:
    """Wait until ``depth`` chunks sit in the engine's queue (their requests were tokenized and queued)."""
    async with asyncio.timeout(30):
        while engine.stats()["queue_depth"] < depth:  # noqa: ASYNC110 (the engine exposes no event for it)
            await asyncio.sleep(0.005)


@pytest.fixture(scope="module")
def seam(tiny_model_dir: Path) -> SeamClassifier:
    return SeamClassifier(load_model_folder(tiny_model_dir), "cpu")


@pytest.fixture
def clf(seam: SeamClassifier) -> SeamClassifier:
    seam.shapes.clear()
    seam.gate.set()
    seam.entered.clear()
    seam.left.clear()
    seam.drop_one = False
    seam.slices.clear()
    return seam


@pytest.fixture(scope="module")
def chunks() -> list[str]:
    notes = clinical_corpus(30, seed=11, sentences=(3, 120))
    return [c for n in notes for c in note_chunks(n, ModelSpec())]


async def test_concurrent_callers_get_their_own_results_merged_into_batches(
    clf: SeamClassifier, chunks: list[str]
) -> None:
    expected = clf.predict(chunks)
    clf.shapes.clear()
    parts = [chunks[i : i + 1 + i % 5] for i in range(len(chunks))][:40]
    async with InferenceEngine(clf, max_batch_size=16, max_batch_tokens=4096, max_wait_ms=20) as engine:
        results = await asyncio.gather(*(engine.score(p) for p in parts))
        stats = engine.stats()
    for part, got in zip(parts, results, strict=True):
        want = [expected[chunks.index(t)] for t in part]
        assert got == pytest.approx(want, abs=1e-5)
    total = sum(len(p) for p in parts)
    assert stats["chunks"] == total
    assert stats["requests"] == len(parts)
    assert stats["batches"] < len(parts)  # requests were merged
    assert stats["queue_depth"] == 0
    assert all(rows <= 16 and rows * longest <= 4096 for rows, longest in clf.shapes), clf.shapes
    assert stats["padded_tokens"] == sum(rows * longest for rows, longest in clf.shapes)


async def test_batches_respect_the_token_budget_and_sort_by_length(
    clf: SeamClassifier, chunks: list[str]
) -> None:
    clf.gate.clear()
    async with InferenceEngine(clf, max_batch_size=64, max_batch_tokens=1024, max_wait_ms=1) as engine:
        first = asyncio.create_task(engine.score(chunks[:1]))
        await asyncio.to_thread(clf.entered.wait, 10)
        rest = asyncio.create_task(engine.score(chunks))  # queued while the first batch is held
        await queued(engine, len(chunks))
        clf.gate.set()
        await first
        await rest
        stats = engine.stats()
    assert all(rows == 1 or rows * longest <= 1024 for rows, longest in clf.shapes)
    assert stats["padding_efficiency"] > 0.8


async def test_a_failing_batch_fails_its_requests_and_the_engine_keeps_serving(
    clf: SeamClassifier, chunks: list[str]
) -> None:
    async with InferenceEngine(clf, max_batch_size=8, max_wait_ms=1) as engine:
        with pytest.raises(BatchFailed, match="injected failure") as info:
            await engine.score(["a clean chunk", f"patient {POISON} chunk"])
        assert isinstance(info.value.__cause__, RuntimeError)
        # concurrent callers: the poisoned request always fails, others succeed or share its batch's fate
        outcomes = await asyncio.gather(
            *(engine.score([chunks[i]]) for i in range(6)),
            engine.score([f"{POISON} again"]),
            return_exceptions=True,
        )
        assert isinstance(outcomes[-1], BatchFailed)
        assert all(isinstance(o, list | BatchFailed) for o in outcomes)
        after = await engine.score(chunks[:3])
        assert after == pytest.approx(clf.predict(chunks[:3]).tolist(), abs=1e-5)
        assert engine.stats()["failed_batches"] >= 2


async def test_an_isolated_request_never_shares_a_batch(clf: SeamClassifier, chunks: list[str]) -> None:
    clf.gate.clear()
    async with InferenceEngine(clf, max_batch_size=16, max_wait_ms=0, min_batch_efficiency=0) as engine:
        held = asyncio.create_task(engine.score(chunks[6:7]))
        await asyncio.to_thread(clf.entered.wait, 10)
        clf.shapes.clear()
        # all queued while the worker is held: ordinary requests would share one batch with the poisoned one
        requests = [
            engine.score([f"patient {POISON} chunk"]),
            engine.score(chunks[:3], isolated=True),
            engine.score(chunks[3:5], isolated=True),
            engine.score(chunks[5:6]),
        ]
        gathered = asyncio.gather(*requests, return_exceptions=True)
        await queued(engine, 7)
        clf.gate.set()
        outcomes = await gathered
        await held
        batch_sizes = sorted(n for n, _ in clf.shapes)[1:]  # the first is the held request's batch
        assert isinstance(outcomes[0], BatchFailed)
        assert isinstance(outcomes[3], BatchFailed), "the ordinary requests shared one batch"
        assert outcomes[1] == pytest.approx(clf.predict(chunks[:3]).tolist(), abs=1e-5)
        assert outcomes[2] == pytest.approx(clf.predict(chunks[3:5]).tolist(), abs=1e-5)
        assert batch_sizes == [2, 2, 3], "one batch per isolated request, one for the ordinary ones"


async def test_a_batch_with_a_missing_output_fails(clf: SeamClassifier, chunks: list[str]) -> None:
    async with InferenceEngine(clf, max_wait_ms=1) as engine:
        clf.drop_one = True
        with pytest.raises(BatchFailed, match="outputs for"):
            await engine.score(chunks[:4])
        clf.drop_one = False
        assert len(await engine.score(chunks[:4])) == 4


async def test_a_full_queue_makes_callers_wait_then_overload(clf: SeamClassifier, chunks: list[str]) -> None:
    clf.gate.clear()
    async with InferenceEngine(
        clf, max_batch_size=4, queue_size=8, max_wait_ms=0, overload_timeout_s=0.3, min_batch_efficiency=0
    ) as engine:
        held = asyncio.create_task(engine.score(chunks[:4]))
        await asyncio.to_thread(clf.entered.wait, 10)  # the worker is busy with `held`
        filling = asyncio.create_task(engine.score(chunks[4:12]))  # fills the queue (8 chunks)
        await queued(engine, 8)
        assert engine.stats()["queue_depth"] == 8
        started = time.monotonic()
        with pytest.raises(EngineOverloaded, match="queue stayed full"):
            await engine.score(chunks[12:13])
        assert time.monotonic() - started >= 0.29
        waiting = asyncio.create_task(engine.score(chunks[12:14]))  # waits for room, then runs
        await asyncio.sleep(0.05)
        assert not waiting.done()
        assert engine.stats()["queue_depth"] == 8  # memory did not grow
        clf.gate.set()
        assert len(await held) == 4
        assert len(await filling) == 8
        assert len(await waiting) == 2
        assert engine.stats()["overloaded"] == 1


async def test_cancelled_callers_work_is_dropped(clf: SeamClassifier, chunks: list[str]) -> None:
    clf.gate.clear()
    async with InferenceEngine(clf, max_batch_size=4, max_wait_ms=0, min_batch_efficiency=0) as engine:
        held = asyncio.create_task(engine.score(chunks[:2]))
        await asyncio.to_thread(clf.entered.wait, 10)
        doomed = asyncio.create_task(engine.score(chunks[2:10]))
        await queued(engine, 8)
        assert engine.stats()["queue_depth"] == 8
        doomed.cancel()
        with pytest.raises(asyncio.CancelledError):
            await doomed
        assert engine.stats()["queue_depth"] == 0
        clf.gate.set()
        await held
        stats = engine.stats()
    assert stats["chunks"] == 2
    assert stats["cancelled"] == 1


async def test_event_loop_stays_responsive_while_the_model_runs(
    clf: SeamClassifier, chunks: list[str]
) -> None:
    """The model and the tokenizer run off the event loop: while a batch is held inside the model, the
    loop keeps serving other coroutines (counted in ticks, not timed, so a slow machine cannot fail it)."""
    expected = clf.predict(chunks[:6])
    clf.threads.clear()
    clf.gate.clear()
    async with InferenceEngine(clf, max_batch_size=16, max_wait_ms=0, min_batch_efficiency=0) as engine:
        clf.entered.clear()
        clf.left.clear()
        scoring = asyncio.create_task(engine.score(chunks[:6]))
        await asyncio.to_thread(clf.entered.wait, 10)
        ticks = 0
        for _ in range(20):  # the loop runs these while the model thread sits inside forward_ids
            await asyncio.sleep(0)
            ticks += 1
        assert ticks == 20
        assert not scoring.done()
        assert not clf.left.is_set()  # the model is still running: the ticks happened alongside it
        clf.gate.set()
        probs = await scoring
    np.testing.assert_allclose(probs, expected, rtol=1e-5, atol=1e-6)
    loop_thread = threading.current_thread().name
    assert clf.threads
    assert loop_thread not in clf.threads


async def test_closing_fails_pending_requests_and_refuses_new_ones(
    clf: SeamClassifier, chunks: list[str]
) -> None:
    clf.gate.clear()
    engine = await InferenceEngine(clf, max_batch_size=2, max_wait_ms=0, min_batch_efficiency=0).start()
    held = asyncio.create_task(engine.score(chunks[:2]))
    await asyncio.to_thread(clf.entered.wait, 10)
    pending = asyncio.create_task(engine.score(chunks[2:5]))
    await queued(engine, 3)
    assert engine.started
    await engine.close()
    assert not engine.started
    clf.gate.set()
    for task in (held, pending):
        with pytest.raises(EngineClosed):
            await task
    with pytest.raises(EngineClosed, match="start"):
        await engine.score(chunks[:1])
    assert await engine.score([]) == []


async def test_from_settings_loads_a_replica_per_device(tiny_model_dir: Path, chunks: list[str]) -> None:
    settings = Settings(devices=["auto"], max_batch_size=8, max_wait_ms=1, tokenize_threads=3)
    engine = InferenceEngine.from_settings(settings, tiny_model_dir)
    assert engine.tokenize_threads == 3
    with pytest.raises(EngineClosed):
        _ = engine.spec
    async with engine:
        assert [str(c.device) for c in engine.classifiers] == resolve_devices(["auto"]) == ["cpu"]
        assert engine.spec == ModelSpec.read(tiny_model_dir)
        got = await engine.score(chunks[:5])
    reference = ChunkClassifier(load_model_folder(tiny_model_dir)).predict(chunks[:5])
    assert got == pytest.approx(reference.tolist(), abs=1e-5)


async def test_batches_keep_the_minimum_padding_efficiency(clf: SeamClassifier, chunks: list[str]) -> None:
    clf.gate.clear()
    full = [c for c in chunks if len(c.split()) == 318][:6]
    mixed = [" ".join(c.split()[:25]) for c in full] + full  # short tails and full chunks, interleaved
    mixed[::2], mixed[1::2] = mixed[:6], mixed[6:]
    async with InferenceEngine(clf, max_batch_size=16, max_wait_ms=0, min_batch_efficiency=0.9) as engine:
        first = asyncio.create_task(engine.score(mixed[:1]))
        await asyncio.to_thread(clf.entered.wait, 10)
        clf.shapes.clear()
        rest = asyncio.create_task(engine.score(mixed[1:]))
        await queued(engine, len(mixed) - 1)
        clf.gate.set()
        await first
        await rest
        stats = engine.stats()
    assert stats["padding_efficiency"] >= 0.85
    lengths = [len(ids) for ids in clf.encode(mixed[1:])]
    assert len(clf.shapes) >= 2  # the short tails and the full chunks ran apart
    assert max(lengths) / min(lengths) > 2


def test_selection_takes_the_oldest_chunk_and_its_nearest_lengths() -> None:
    lengths = [100, 512, 98, 510, 105, 20]
    assert select_batch(lengths, max_batch_size=3, max_batch_tokens=10_000) == [0, 2, 4]
    assert select_batch(lengths, max_batch_size=10, max_batch_tokens=300) == [0, 2, 5]
    assert select_batch([900], max_batch_size=4, max_batch_tokens=512) == [0]  # too long still runs alone


async def test_a_request_larger_than_the_queue_runs_when_the_queue_is_empty(
    clf: SeamClassifier, chunks: list[str]
) -> None:
    async with InferenceEngine(clf, max_batch_size=4, queue_size=3, overload_timeout_s=1) as engine:
        got = await engine.score(chunks[:10])
    assert got == pytest.approx(clf.predict(chunks[:10]).tolist(), abs=1e-5)


@settings(max_examples=8, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.integers(1, 6), min_size=1, max_size=12), st.integers(1, 12), st.integers(600, 6000))
async def test_any_split_into_requests_gives_the_classifier_results(
    clf: SeamClassifier, chunks: list[str], sizes: list[int], batch: int, budget: int
) -> None:
    parts, at = [], 0
    for size in sizes:
        parts.append(chunks[at : at + size])
        at += size
    async with InferenceEngine(clf, max_batch_size=batch, max_batch_tokens=budget, max_wait_ms=2) as engine:
        results = await asyncio.gather(*(engine.score(p) for p in parts))
    flat = [p for part in results for p in part]
    assert flat == pytest.approx(clf.predict(chunks[:at]).tolist(), abs=1e-5)


async def test_a_model_that_cannot_run_fails_at_start(tiny_model_dir: Path) -> None:
    import torch

    loaded = load_model_folder(tiny_model_dir)
    loaded.model.bert.embeddings.word_embeddings = torch.nn.Embedding(2, 64)  # type: ignore[union-attr]  # [CLS] out of range
    engine = InferenceEngine(ChunkClassifier(loaded))
    with pytest.raises(EngineError, match="cannot run on cpu"):
        await engine.start()
    assert not engine.started


async def test_each_batch_is_told_to_the_observer_as_it_was_cut(
    clf: SeamClassifier, chunks: list[str]
) -> None:
    """The typed on_batch hook sees every batch, failed ones too, with the rows and tokens it ran;
    an observer that raises cannot fail a batch."""
    seen: list[BatchRecord] = []

    def observe(batch: BatchRecord) -> None:
        seen.append(batch)
        raise RuntimeError("a broken metrics hook")

    async with InferenceEngine(clf, max_batch_size=2, max_wait_ms=1, on_batch=observe) as engine:
        probs = await engine.score(chunks[:5])
        with pytest.raises(BatchFailed):
            await engine.score([f"{POISON} chunk"], isolated=True)
        stats = engine.stats()
    assert probs == pytest.approx(clf.predict(chunks[:5]).tolist(), abs=1e-5)
    ok = [b for b in seen if not b.failed]
    assert [b.rows for b in ok] == [rows for rows, _ in clf.shapes[: len(ok)]]
    assert sum(b.rows for b in ok) == 5 == stats["chunks"]
    assert sum(b.padded_tokens for b in ok) == stats["padded_tokens"]
    assert sum(b.real_tokens for b in ok) == stats["real_tokens"]
    assert [b.failed for b in seen].count(True) == 1 == stats["failed_batches"]
    assert all(b.seconds >= 0 and b.device == str(clf.device) for b in seen)


async def test_a_long_request_is_tokenized_in_ordered_slices(clf: SeamClassifier, chunks: list[str]) -> None:
    """One slice per tokenize thread once a request is long enough (each at least TEXTS_PER_SLICE
    texts), put back in order; a short request stays whole."""
    texts = (chunks * 8)[: 4 * TEXTS_PER_SLICE + 5]
    short = texts[: 2 * TEXTS_PER_SLICE - 1]
    want = clf.encode(texts)
    clf.slices.clear()
    async with InferenceEngine(clf, tokenize_threads=4, max_wait_ms=1) as engine:
        assert await engine.tokenize(texts) == want
        long_slices = sorted(clf.slices)
        clf.slices.clear()
        assert await engine.tokenize(short) == want[: len(short)]
        assert clf.slices == [len(short)]
        assert await engine.score(texts) == pytest.approx(clf.predict(texts).tolist(), abs=1e-5)
    size = -(-len(texts) // 4)
    assert long_slices == sorted([size, size, size, len(texts) - 3 * size])


async def test_tokenize_threads_follow_the_devices_unless_set(clf: SeamClassifier) -> None:
    """0 resolves at start: 1 beside a CPU model (its own threads use the cores); a GPU replica gets
    one per core (default_tokenize_threads, doctested); a number is kept."""
    async with InferenceEngine(clf) as engine:
        assert engine.tokenize_threads == 1
    async with InferenceEngine(clf, tokenize_threads=5) as engine:
        assert engine.tokenize_threads == 5
