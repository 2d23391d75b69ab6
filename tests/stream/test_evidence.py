"""Evidence per admission: ranking and shares read from the real stores, and `notestream explain`."""

from __future__ import annotations

import asyncio
import json
import random
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import typer
from hypothesis import given
from hypothesis import strategies as st
from PIL import Image
from typer.testing import CliRunner

from notestream.models.aggregate import admission_score
from notestream.stream.cli_explain import register_explain
from notestream.stream.evidence import (
    AdmissionEvidence,
    EvidenceError,
    admission_evidence,
    chunk_shares,
    rank_evidence,
)
from notestream.stream.store import MemoryRiskStore, RedisRiskStore, RiskStore

HADM = 4242


@pytest.fixture(params=["memory", "redis"])
async def store(request: pytest.FixtureRequest) -> AsyncIterator[RiskStore]:
    """A fresh store of each kind; Redis is a real redis-server (tests/fixtures/redis.py)."""
    made: RiskStore = (
        RedisRiskStore(request.getfixturevalue("redis_url"))
        if request.param == "redis"
        else MemoryRiskStore()
    )
    yield made
    await made.close()


async def fill(store: RiskStore, seed: int = 0) -> dict[str, list[float]]:
    """Notes with revisions and a retraction; returns what should be live: note_id -> probs."""
    rng = random.Random(seed)
    live: dict[str, list[float]] = {}
    for i in range(5):
        probs = [round(rng.random(), 6) for _ in range(rng.randint(1, 4))]
        await store.apply_note(
            hadm_id=HADM, subject_id=7, note_id=f"n{i}", revision=0, is_error=False, chunk_probs=probs
        )
        live[f"n{i}"] = probs
    newer = [0.05, 0.999, 0.5]  # a revision replaces n1's chunks and holds the maximum
    await store.apply_note(
        hadm_id=HADM, subject_id=7, note_id="n1", revision=2, is_error=False, chunk_probs=newer
    )
    live["n1"] = newer
    await store.apply_note(
        hadm_id=HADM, subject_id=7, note_id="n3", revision=1, is_error=True, chunk_probs=[]
    )
    del live["n3"]
    await store.apply_note(
        hadm_id=HADM + 1, subject_id=8, note_id="other", revision=0, is_error=False, chunk_probs=[0.99]
    )
    return live


async def test_ranking_agrees_with_the_stored_chunk_probabilities(store: RiskStore) -> None:
    live = await fill(store)
    evidence = await admission_evidence(store, HADM, c=2.0)
    stored = await store.note_probs(HADM)
    assert {k: list(v.probs) for k, v in stored.items()} == live
    shown = [(ch.note_id, ch.chunk, ch.probability) for ch in evidence.chunks]
    expected = [(k, i, p) for k, probs in live.items() for i, p in enumerate(probs)]
    assert sorted(shown) == sorted(expected)  # every live chunk once, probabilities exactly as stored
    assert [p for _, _, p in shown] == sorted((p for _, _, p in expected), reverse=True)
    assert "n3" not in {ch.note_id for ch in evidence.chunks}
    assert "other" not in {ch.note_id for ch in evidence.chunks}
    state = await store.state(HADM)
    assert state is not None
    assert evidence.score == pytest.approx(state.score(2.0), abs=1e-12)
    assert evidence.score == pytest.approx(admission_score([p for _, _, p in expected]), abs=1e-12)
    best = max(expected, key=lambda item: item[2])
    assert (evidence.top_note_id, evidence.top_chunk) == (state.top_note_id, state.top_chunk) == best[:2]
    assert evidence.chunks[0].top
    assert evidence.seq == state.seq
    assert [n.note_id for n in evidence.notes] == sorted(live, key=lambda k: -max(live[k]))
    assert {n.note_id: n.revision for n in evidence.notes}["n1"] == 2
    assert sum(ch.share for ch in evidence.chunks) == pytest.approx(1.0, abs=1e-12)
    assert sum(n.share for n in evidence.notes) == pytest.approx(1.0, abs=1e-12)


async def test_tied_maxima_follow_the_stores_top_chunk(store: RiskStore) -> None:
    for note_id in ("a", "b"):
        await store.apply_note(
            hadm_id=HADM, subject_id=7, note_id=note_id, revision=0, is_error=False, chunk_probs=[0.3, 0.8]
        )
    evidence = await admission_evidence(store, HADM, c=2.0)
    state = await store.state(HADM)
    assert state is not None
    assert (evidence.top_note_id, evidence.top_chunk) == (state.top_note_id, state.top_chunk)
    assert [ch.top for ch in evidence.chunks].count(True) == 1
    top = next(ch for ch in evidence.chunks if ch.top)
    other = next(ch for ch in evidence.chunks if not ch.top and ch.probability == 0.8)
    assert top.share > other.share


async def test_an_unknown_admission_is_a_clear_error(store: RiskStore) -> None:
    with pytest.raises(EvidenceError, match="not in the store"):
        await admission_evidence(store, 999, c=2.0)


async def test_an_admission_with_only_retracted_notes_has_nothing_to_explain(store: RiskStore) -> None:
    await store.apply_note(
        hadm_id=HADM, subject_id=7, note_id="a", revision=0, is_error=False, chunk_probs=[0.4]
    )
    await store.apply_note(hadm_id=HADM, subject_id=7, note_id="a", revision=1, is_error=True, chunk_probs=[])
    with pytest.raises(EvidenceError, match="no scored chunk"):
        await admission_evidence(store, HADM, c=2.0)


# zero, or at least 1e-12 (a float32 sigmoid never gives a subnormal double)
probabilities = st.lists(st.one_of(st.just(0.0), st.floats(1e-12, 1.0)), min_size=1, max_size=6)


@given(
    st.dictionaries(st.sampled_from(["a", "b", "c", "d"]), probabilities, min_size=1), st.floats(0.1, 10.0)
)
def test_shares_are_each_chunks_part_of_the_score(notes: dict[str, list[float]], c: float) -> None:
    chunks = chunk_shares(notes, c=c)
    values = [p for probs in notes.values() for p in probs]
    n, p_max, p_sum = len(values), max(values), sum(values)
    score = admission_score(values, c=c)
    assert len(chunks) == n
    assert [ch.probability for ch in chunks] == sorted(values, reverse=True)
    assert sum(ch.top for ch in chunks) == 1
    if score == 0:
        assert all(ch.share == 0 for ch in chunks)
        return
    assert sum(ch.share for ch in chunks) == pytest.approx(1.0)
    for ch in chunks:
        contribution = ch.probability / c / (1 + n / c) + (p_max / (1 + n / c) if ch.top else 0.0)
        assert ch.share * score == pytest.approx(contribution, rel=1e-9, abs=1e-15)
    assert (p_max + p_sum / c) / (1 + n / c) == pytest.approx(score)


def test_rank_evidence_needs_a_positive_c() -> None:
    with pytest.raises(EvidenceError, match="must be positive"):
        chunk_shares({"a": [0.5]}, c=0.0)


# --- the command ------------------------------------------------------------------------------------


def _app() -> typer.Typer:
    app = typer.Typer()

    @app.callback()
    def root() -> None:
        """notestream (test)."""

    register_explain(app)
    return app


def test_explain_reads_a_saved_embedded_run(tiny_model_dir: Path, tmp_path: Path) -> None:
    store = MemoryRiskStore()
    live = asyncio.run(fill(store))
    snapshot = store.snapshot(tmp_path / "run.json")
    expected = asyncio.run(admission_evidence(store, HADM, c=2.0))
    runner = CliRunner()
    result = runner.invoke(
        _app(),
        [
            "explain",
            "--model",
            str(tiny_model_dir),
            "--admission",
            str(HADM),
            "--snapshot",
            str(snapshot),
            "--json",
        ],
    )
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data == json.loads(json.dumps(expected.to_json()))
    assert {ch["note_id"] for ch in data["chunks"]} == set(live)

    out = tmp_path / "evidence"
    table = runner.invoke(
        _app(),
        [
            "explain",
            "--model",
            str(tiny_model_dir),
            "--admission",
            str(HADM),
            "--snapshot",
            str(snapshot),
            "--out",
            str(out),
        ],
    )
    assert table.exit_code == 0, table.output
    assert "Chunks, by probability" in table.output
    assert "n1" in table.output
    png = out / f"evidence_{HADM}.png"
    assert png.stat().st_size > 0
    with Image.open(png) as image:
        assert image.format == "PNG"
        assert image.size[0] > 100
    assert json.loads((out / f"evidence_{HADM}.json").read_text())["top_note_id"] == "n1"  # 0.999


def test_explain_reads_redis(tiny_model_dir: Path, redis_url: str) -> None:
    async def prepare() -> AdmissionEvidence:
        store = RedisRiskStore(redis_url, namespace="ward7")
        try:
            await fill(store)
            return await admission_evidence(store, HADM, c=2.0)
        finally:
            await store.close()

    expected = asyncio.run(prepare())
    args = [
        "explain",
        "--model",
        str(tiny_model_dir),
        "--admission",
        str(HADM),
        "--store",
        redis_url,
        "--json",
    ]
    result = CliRunner().invoke(_app(), [*args, "--namespace", "ward7"])
    assert result.exit_code == 0, result.output
    evidence = json.loads(result.stdout)
    assert evidence == json.loads(json.dumps(expected.to_json()))
    # the default namespace holds nothing for this admission
    elsewhere = CliRunner().invoke(_app(), args)
    assert elsewhere.exit_code != 0
    assert f"Admission {HADM} is not in the store" in str(elsewhere.exception)


def test_explain_needs_exactly_one_source(tiny_model_dir: Path, tmp_path: Path) -> None:
    args = ["explain", "--model", str(tiny_model_dir), "--admission", "1"]
    result = CliRunner().invoke(_app(), args, standalone_mode=False)
    assert isinstance(result.exception, typer.BadParameter)
    assert "exactly one of --store URL or --snapshot FILE" in str(result.exception)
    both = CliRunner().invoke(_app(), [*args, "--text", str(tmp_path / "t.txt")], standalone_mode=False)
    assert isinstance(both.exception, typer.BadParameter)
    assert "exactly one of --admission HADM_ID or --text FILE" in str(both.exception)


def test_rank_evidence_uses_the_spec_constant() -> None:
    from notestream.stream.store import NoteProbs

    held = {"a": NoteProbs(0, (0.9, 0.1)), "b": NoteProbs(3, (0.2,))}
    for c in (1.0, 2.0, 5.0):
        evidence = rank_evidence(HADM, held, c=c)
        assert evidence.score == pytest.approx(admission_score([0.9, 0.1, 0.2], c=c))
        assert evidence.c == c
