"""A smoke run of `notestream demo` at small sizes: embedded broker, worker process, memory store."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from notestream.cli.demo import DemoConfig, run_demo

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
    "replay_rate_per_s",
    "score_p10",
    "score_p50",
    "score_p90",
    "chunk_prob_p10",
    "chunk_prob_p90",
    "engine_load",
}


def test_demo_streams_the_offline_scores(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = DemoConfig(out=tmp_path / "demo", patients=80, steps=10, rate=40.0, live=True, timeout_s=180)
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
    # the feed is paced: never faster than the rate asked for
    assert summary["replay_rate_per_s"] == 40.0
    assert summary["replay_s"] >= (summary["notes_replayed"] - 1) / 40.0
    assert 0 <= summary["score_p10"] <= summary["score_p50"] <= summary["score_p90"] <= 1
    assert 0 <= summary["chunk_prob_p10"] <= summary["chunk_prob_p90"] <= 1
    assert summary["engine_load"] > 0
    # the held-out admissions stream at the cohort's prevalence, with calibrated risks on every update
    assert summary["prevalence"] == pytest.approx(summary["positives"] / summary["scored_admissions"])
    assert 0 <= summary["ece"] <= 1
    assert 0 <= summary["brier"] <= 1
    assert summary["alerts_per_100_admissions"] is not None
    # stderr is not a terminal here: the live table is printed once at the end, not redrawn into the log
    assert capsys.readouterr().err.count("hadm_id") == 1
    assert (cfg.out / "summary.png").stat().st_size > 0
    # The run stays inspectable (notestream explain --snapshot) and its journal holds no note text.
    from notestream.stream.store.memory import MemoryRiskStore

    journal = cfg.out / "store.jsonl"
    store = MemoryRiskStore.restore(journal, clock=lambda: float("-inf"))
    assert len(asyncio.run(store.hadm_ids())) >= summary["admissions"] // 2
    assert '"text"' not in journal.read_text(encoding="utf-8")
