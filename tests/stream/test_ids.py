"""Ids as hospitals have them, through every place that uses one: events, Kafka keys, both stores
(a real redis-server), the pipeline and ``notestream explain --admission``."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

import pytest
import typer
from hypothesis import HealthCheck, example, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st
from redis.crc import key_slot
from typer.testing import CliRunner

from notestream.models.spec import ModelSpec
from notestream.stream.cli_explain import register_explain
from notestream.stream.errors import EventError
from notestream.stream.events import (
    AdmissionEvent,
    NoteEvent,
    admission_key,
    check_key,
    hadm_from_key,
    parse_note,
)
from notestream.stream.ids import id_key, parse_id
from notestream.stream.pipeline import Pipeline
from notestream.stream.store import MemoryRiskStore, RedisRiskStore, RiskStore
from tests.stream.ids import ids, raw_ids

STORE_EXAMPLES = hsettings(max_examples=25, suppress_health_check=[HealthCheck.function_scoped_fixture])


def _tag(key: str) -> str:
    """The Redis Cluster hash tag of a key: between the first '{' and the first '}' after it."""
    start = key.index("{")
    return key[start + 1 : key.index("}", start + 1)]


@given(raw_ids)
def test_an_id_and_its_key_round_trip(raw: int | str) -> None:
    canonical = parse_id(raw)
    assert parse_id(canonical) == canonical == parse_id(str(canonical))  # canonical is a fixed point
    assert hadm_from_key(admission_key(raw)) == canonical
    assert admission_key(raw) == admission_key(str(raw))  # one admission, one Kafka key
    check_key(admission_key(raw), raw)
    key = id_key(canonical)
    assert key.isascii()
    assert not set(key) & set("{}: /")


@given(ids, ids)
def test_distinct_ids_have_distinct_keys(a: int | str, b: int | str) -> None:
    assert (id_key(a) == id_key(b)) == (a == b)
    assert (admission_key(a) == admission_key(b)) == (a == b)


@example("167853", 167853)
@example("007", "007")
@given(raw_ids, raw_ids)
def test_a_digit_string_and_its_integer_are_one_admission(a: int | str, b: int | str) -> None:
    assert (parse_id(a) == parse_id(b)) == (str(parse_id(a)) == str(parse_id(b)))


@given(raw_ids, raw_ids, raw_ids)
def test_notes_carry_any_id_in_its_json_form(hadm: int | str, subject: int | str, note: int | str) -> None:
    raw = json.dumps({"note_id": note, "subject_id": subject, "hadm_id": hadm, "text": "x"}).encode()
    event = parse_note(raw, max_text_bytes=100)
    assert (event.hadm_id, event.subject_id, event.note_id) == (
        parse_id(hadm),
        parse_id(subject),
        str(parse_id(note)),
    )
    wire = json.loads(event.to_bytes())
    assert wire["hadm_id"] == parse_id(hadm)  # an int stays a JSON int, a string a string
    assert NoteEvent.from_bytes(event.to_bytes()) == event


def test_a_key_that_disagrees_with_the_body_is_refused() -> None:
    raw = json.dumps({"note_id": "1", "subject_id": 1, "hadm_id": "V-1", "text": "x"}).encode()
    note = parse_note(raw, max_text_bytes=100)
    for key in (b"V-2", b"\xff", b"", b" V-1"):
        with pytest.raises(EventError) as info:
            check_key(key, note.hadm_id)
        assert info.value.reason == "key_mismatch"
    check_key(b"V-1", note.hadm_id)


def _store(kind: str, redis_url: str | None) -> RiskStore:
    if kind == "redis":
        assert redis_url is not None
        return RedisRiskStore(redis_url, namespace=f"t{uuid.uuid4().hex[:8]}", pool_size=4)
    return MemoryRiskStore()


@pytest.fixture(params=["memory", "redis"])
def store_kind(request: pytest.FixtureRequest) -> tuple[str, str | None]:
    url = request.getfixturevalue("redis_url") if request.param == "redis" else None
    return request.param, url


@STORE_EXAMPLES
@given(
    st.lists(ids, min_size=2, max_size=4, unique=True),
    ids,
    st.lists(ids, min_size=1, max_size=3, unique=True),
)
def test_the_store_keeps_admissions_of_any_id_apart(
    store_kind: tuple[str, str | None],
    hadms: list[int | str],
    subject: int | str,
    note_ids: list[int | str],
) -> None:
    async def run() -> None:
        store = _store(*store_kind)
        try:
            admit = datetime(2150, 1, 1, tzinfo=UTC)
            for i, hadm in enumerate(hadms):
                info = await store.record_admission(
                    AdmissionEvent(kind="admit", subject_id=subject, hadm_id=hadm, admit_time=admit)
                )
                assert (info.hadm_id, info.subject_id) == (hadm, subject)
                for j, note in enumerate(note_ids):
                    probs = [(i + 1) / 10, (j + 1) / 20]
                    result = await store.apply_note(
                        hadm_id=hadm,
                        subject_id=subject,
                        note_id=str(note),
                        revision=0,
                        is_error=False,
                        chunk_probs=probs,
                    )
                    assert result.applied
                    assert result.state is not None
            for i, hadm in enumerate(hadms):
                state = await store.state(hadm)
                assert state is not None
                assert (state.hadm_id, state.subject_id, state.n_notes) == (hadm, subject, len(note_ids))
                assert state.p_max == max((i + 1) / 10, len(note_ids) / 20)
                assert set(await store.note_probs(hadm)) == {str(n) for n in note_ids}
                record = await store.admission(hadm)
                assert record is not None
                assert record.admit_time == admit
                if isinstance(store, RedisRiskStore):
                    keys = store.keys(hadm)
                    assert {_tag(k) for k in keys} == {id_key(hadm)}  # the hash tag holds
                    assert len({key_slot(k.encode()) for k in keys}) == 1
        finally:
            await store.close()

    asyncio.run(run())


class FakeScorer:
    """The engine seam: a probability per chunk from its words, deterministic."""

    async def score(self, texts: Sequence[str], *, isolated: bool = False) -> list[float]:
        return [(len(t.split()) % 97) / 100 for t in texts]


TEXT = " ".join(f"word{i}" for i in range(40))


@hsettings(max_examples=40)
@given(st.lists(st.tuples(raw_ids, raw_ids), min_size=1, max_size=5))
def test_the_pipeline_scores_each_admission_of_any_id_once(pairs: list[tuple[int | str, int | str]]) -> None:
    async def run() -> None:
        pipeline = Pipeline(FakeScorer(), MemoryRiskStore(), ModelSpec(), model="fake")
        notes = [
            NoteEvent(note_id=f"n{i}", subject_id=subject, hadm_id=hadm, text=TEXT)
            for i, (hadm, subject) in enumerate(pairs)
        ]
        first = await pipeline.process(notes)
        again = await pipeline.process(notes)  # a redelivery changes nothing
        expected: dict[int | str, int] = {}
        for hadm, _ in pairs:
            expected[parse_id(hadm)] = expected.get(parse_id(hadm), 0) + 1
        assert first.outcomes["new"] == len(notes)
        assert again.outcomes["duplicate"] == len(notes)
        last = {u.hadm_id: u for u in first.updates}
        assert {h: u.n_notes for h, u in last.items()} == expected
        for hadm in expected:
            state = await pipeline.store.state(hadm)
            assert state is not None
            assert state.n_notes == expected[hadm]
            assert admission_key(last[hadm].hadm_id) == admission_key(hadm)

    asyncio.run(run())


def _app() -> typer.Typer:
    app = typer.Typer()

    @app.callback()
    def root() -> None:
        """notestream (test)."""

    register_explain(app)
    return app


@hsettings(max_examples=4, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ids, st.lists(ids, min_size=1, max_size=3, unique=True))
def test_explain_admission_takes_any_id(
    tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory, hadm: int | str, notes: list[int | str]
) -> None:
    store = MemoryRiskStore()

    async def fill() -> None:
        for i, note in enumerate(notes):
            await store.apply_note(
                hadm_id=hadm,
                subject_id=1,
                note_id=str(note),
                revision=0,
                is_error=False,
                chunk_probs=[i / 10],
            )

    asyncio.run(fill())
    folder = tmp_path_factory.mktemp("explain")
    snapshot = store.snapshot(folder / "run.json")
    base = ["explain", "--model", str(tiny_model_dir), "--admission", str(hadm), "--snapshot", str(snapshot)]
    result = CliRunner().invoke(_app(), [*base, "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["hadm_id"] == hadm
    assert {ch["note_id"] for ch in data["chunks"]} == {str(n) for n in notes}
    out = folder / "out"
    table = CliRunner().invoke(_app(), [*base, "--out", str(out)])
    assert table.exit_code == 0, table.output
    assert sorted(p.name for p in out.iterdir()) == [f"evidence_{id_key(hadm)}.{e}" for e in ("json", "png")]
    assert "\x1b" not in table.output


def test_explain_refuses_a_bad_id_and_a_planted_symlink(tiny_model_dir: Path, tmp_path: Path) -> None:
    store = MemoryRiskStore()
    asyncio.run(
        store.apply_note(
            hadm_id="A/1", subject_id=1, note_id="[/]", revision=0, is_error=False, chunk_probs=[0.5]
        )
    )
    snapshot = store.snapshot(tmp_path / "run.json")
    base = ["explain", "--model", str(tiny_model_dir), "--snapshot", str(snapshot)]
    bad = CliRunner().invoke(_app(), [*base, "--admission", " A/1"])
    assert bad.exit_code != 0
    assert "whitespace" in bad.output
    shown = CliRunner().invoke(_app(), [*base, "--admission", "A/1"])
    assert shown.exit_code == 0, shown.output
    assert "[/]" in shown.output  # a note id is shown as it is, never read as markup
    out = tmp_path / "out"
    out.mkdir()
    victim = tmp_path / "victim.json"
    victim.write_text("keep")
    (out / f"evidence_{id_key('A/1')}.json").symlink_to(victim)
    planted = CliRunner().invoke(_app(), [*base, "--admission", "A/1", "--out", str(out)])
    assert planted.exit_code != 0
    assert victim.read_text() == "keep"
