"""What the worker's metrics record of a pipeline batch: store latency per call, engine batches."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from notestream.models.engine import InferenceEngine
from notestream.stream.metrics import Metrics
from notestream.stream.pipeline import Pipeline
from notestream.stream.store import MemoryRiskStore
from tests.stream.feed import discharges, feed


@pytest.fixture
async def engine(tiny_model_dir: Path) -> AsyncIterator[InferenceEngine]:
    eng = InferenceEngine(tiny_model_dir, devices=["cpu"], max_wait_ms=1.0, max_batch_size=4)
    await eng.start()
    yield eng
    await eng.close()


def sample(metrics: Metrics, name: str, **labels: str) -> float:
    return metrics.registry.get_sample_value(name, labels or None) or 0.0


async def test_store_calls_are_timed_and_engine_batches_recorded(engine: InferenceEngine) -> None:
    admissions, notes = feed(2, 4, seed=5)
    metrics = Metrics(role="worker")
    engine.on_batch = metrics.record_batch
    pipeline = Pipeline(engine, MemoryRiskStore(), engine.spec, model="tiny", metrics=metrics)
    for admission in admissions:
        await pipeline.admission(admission)
    result = await pipeline.process(notes)
    assert result.chunks > 4, "the feed should need several engine batches (max_batch_size=4)"
    finals = [await pipeline.admission(d) for d in discharges(admissions)]
    assert all(f is not None for f in finals)

    count = "notestream_store_seconds_count"
    assert sample(metrics, count, op="apply_note") == len(notes)
    assert sample(metrics, count, op="record_admission") == 2 * len(admissions)
    assert sample(metrics, count, op="state") == len(admissions)  # the final update of each discharge
    assert sample(metrics, "notestream_store_seconds_sum", op="apply_note") > 0

    stats = engine.stats()
    assert stats["batches"] > 1
    assert sample(metrics, "notestream_chunks_scored_total") == result.chunks == stats["chunks"]
    assert sample(metrics, "notestream_batch_size_count") == stats["batches"]
    assert sample(metrics, "notestream_batch_size_sum") == result.chunks
    assert sample(metrics, "notestream_batch_tokens_sum") == stats["padded_tokens"]
    assert sample(metrics, "notestream_padding_efficiency_count") == stats["batches"]
    mean_efficiency = sample(metrics, "notestream_padding_efficiency_sum") / stats["batches"]
    assert 0 < mean_efficiency <= 1
    assert sample(metrics, "notestream_engine_batch_seconds_count") == stats["batches"]
    assert sample(metrics, "notestream_engine_batch_seconds_sum") > 0


async def test_without_metrics_the_pipeline_times_nothing(engine: InferenceEngine) -> None:
    _, notes = feed(1, 2, seed=6)
    result = await Pipeline(engine, MemoryRiskStore(), engine.spec).process(notes)
    assert len(result.updates) == len(notes)
