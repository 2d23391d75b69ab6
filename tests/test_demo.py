"""A smoke run of `notestream demo` at small sizes: embedded broker, worker process, memory store."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from notestream.demo import DemoConfig, run_demo

pytestmark = pytest.mark.slow

KEYS = {
    "admissions",
    "notes",
    "risk_updates",
    "alerts",
    "streamed_auroc",
    "offline_auroc",
    "max_abs_score_diff",
    "chunks_per_s",
    "latency_p50_ms",
    "latency_p99_ms",
}


def test_demo_streams_the_offline_scores(tmp_path: Path) -> None:
    cfg = DemoConfig(out=tmp_path / "demo", patients=80, steps=10, live=False, timeout_s=180)
    returned = run_demo(cfg)
    summary = json.loads((cfg.out / "summary.json").read_text())
    assert summary == json.loads(json.dumps(returned))
    assert summary.keys() >= KEYS
    assert summary["admissions"] >= 8
    assert summary["notes"] >= summary["admissions"]
    assert summary["risk_updates"] >= summary["notes"], "one update per applied note at least"
    assert summary["max_abs_score_diff"] < 1e-6
    assert summary["streamed_auroc"] == pytest.approx(summary["offline_auroc"], abs=1e-6)
    assert summary["chunks_per_s"] > 0
    assert 0 < summary["latency_p50_ms"] <= summary["latency_p99_ms"]
    assert (cfg.out / "summary.png").stat().st_size > 0
    # The run stays inspectable (notestream explain --snapshot) and its journal holds no note text.
    from stream.store.memory import MemoryRiskStore

    journal = cfg.out / "store.jsonl"
    store = MemoryRiskStore.restore(journal, clock=lambda: float("-inf"))
    assert len(asyncio.run(store.hadm_ids())) >= summary["admissions"] // 2
    assert '"text"' not in journal.read_text(encoding="utf-8")
