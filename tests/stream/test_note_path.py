"""The worker's path for one message, without Kafka: the failure table, parsing any bytes, per-note
failures of cleaning, chunking and inference, cleaning off the event loop, and dead letters that are
always sendable."""

from __future__ import annotations

import asyncio
import hashlib
import threading
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

import notestream.stream.pipeline as pipeline_module
from notestream.core.errors import ConfigError
from notestream.core.settings import Settings
from notestream.models.engine import InferenceEngine
from notestream.models.errors import BatchFailed, EngineClosed, EngineError, EngineOverloaded
from notestream.stream.errors import EventError, StoreModelMismatch, StoreUnavailable
from notestream.stream.events import DeadLetter, NoteEvent, admission_key
from notestream.stream.fate import EXIT_CONFIG, EXIT_CRASH, decide, event_error
from notestream.stream.note_path import PRODUCER_HEADROOM_BYTES, NotePath, Origin, dead_letter, receive
from notestream.stream.pipeline import CANARY, Pipeline
from notestream.stream.store import MemoryRiskStore
from tests.stream.feed import feed

# --- the failure table -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("exc", "step", "fate", "detail"),
    [
        (EventError("schema", "field 'x'"), "decode", "dead_letter", "schema"),
        (RecursionError(), "decode", "dead_letter", "invalid_json"),
        (ValueError("Exceeds the limit (4300 digits)"), "decode", "dead_letter", "invalid_json"),
        (UnicodeEncodeError("utf-8", "x", 0, 1, "surrogates"), "process", "dead_letter", "processing_error"),
        (BatchFailed("one note"), "process", "dead_letter", "processing_error"),
        (StoreUnavailable("down"), "process", "retry", None),
        (EngineOverloaded("full"), "batch", "retry", None),
        (EngineClosed("gone"), "process", "exit", EXIT_CRASH),
        (MemoryError(), "process", "exit", EXIT_CRASH),
        (StoreModelMismatch("other model"), "batch", "exit", EXIT_CONFIG),
        (ConfigError("bad"), "process", "exit", EXIT_CONFIG),
        (ValueError("a bug"), "batch", "exit", EXIT_CRASH),
        (KeyboardInterrupt(), "process", "exit", EXIT_CRASH),
    ],
)
def test_one_table_decides_every_failure(exc: BaseException, step: Any, fate: str, detail: Any) -> None:
    decision = decide(exc, step=step)
    assert decision.fate == fate
    assert (decision.reason if fate == "dead_letter" else decision.exit_code) == detail


def test_a_dead_letter_detail_never_quotes_the_exception_message() -> None:
    error = event_error(ValueError("patient SECRET-TEXT said"), step="process")
    assert "SECRET" not in error.detail + str(error)
    with pytest.raises(StoreUnavailable):  # not a message's failure: re-raised for the caller's table
        event_error(StoreUnavailable("down"), step="decode")


# --- parsing any bytes -----------------------------------------------------------------------------


@given(st.binary(max_size=2000))
def test_any_bytes_become_a_note_or_a_dead_letter(raw: bytes) -> None:
    got = receive(Origin("notes", 0, 1, value=raw), max_text_bytes=1000)
    assert (got.note is None) != (got.error is None)


@pytest.mark.parametrize(
    "raw",
    [
        b"[" * 100_000,
        b'{"note_id": "1", "subject_id": 1, "hadm_id": 2, "text": "x", "extra": '
        + b"[" * 100_000
        + b"]" * 100_000
        + b"}",
        b'{"note_id": "1", "subject_id": 1, "hadm_id": ' + b"7" * 5000 + b', "text": "x"}',
        b'{"note_id": "1", "subject_id": 1, "hadm_id": 2, "text": "\\ud800"}',
    ],
    ids=["deep-array", "deep-extra-field", "5000-digit-id", "lone-surrogate"],
)
def test_poison_bytes_are_dead_letters_not_crashes(raw: bytes) -> None:
    got = receive(Origin("notes", 3, 9, key=b"2", value=raw), max_text_bytes=1000)
    assert got.note is None
    assert got.error is not None
    # the parse bounds name what is wrong (docs/events.md, "What parsing accepts")
    assert got.error.reason in (
        "invalid_json",
        "non_utf8",
        "schema",
        "too_large",
        "too_deep",
        "number_too_long",
    )


# --- dead letters are always sendable --------------------------------------------------------------


@given(
    size=st.integers(0, 3_000_000),
    key=st.one_of(st.none(), st.binary(max_size=2000)),
    limit=st.integers(4096, 1_200_000),
)
def test_a_dead_letter_never_exceeds_its_limit(size: int, key: bytes | None, limit: int) -> None:
    raw = b"\xff" * size
    letter = dead_letter(
        Origin("notes", 1, 2, key=key, value=raw), EventError("schema", "d" * 5000), max_bytes=limit
    )
    assert len(letter.to_bytes()) + len(letter.key or b"") <= limit
    if letter.original_sha256 is None:
        assert letter.original == raw
    else:
        assert letter.original == b""
        assert letter.original_sha256 == hashlib.sha256(raw).hexdigest()
        assert letter.original_size == size
    assert (letter.partition, letter.offset) == (1, 2)


def test_defaults_carry_a_message_of_up_to_about_660_kb_whole_and_send_every_letter() -> None:
    settings = Settings()
    limit = settings.dead_letter_max_bytes
    just_fits = Origin("notes", 0, 0, key=b"1", value=b"x" * (limit * 3 // 4 - 1000))
    assert dead_letter(just_fits, EventError("schema", "x"), max_bytes=limit).original
    over = Origin("notes", 0, 0, key=b"1", value=b"x" * (settings.max_note_bytes + 1000))
    letter = dead_letter(over, EventError("text_too_large", "x"), max_bytes=limit)
    assert not letter.original
    assert letter.original_size == settings.max_note_bytes + 1000
    assert DeadLetter.from_bytes(letter.to_bytes()).original_sha256 == letter.original_sha256
    # the worker's producer takes any letter (app config: dead_letter_max_bytes + headroom)
    assert len(letter.to_bytes()) < limit + PRODUCER_HEADROOM_BYTES


# --- per-note failures inside the pipeline ---------------------------------------------------------


@pytest.fixture
async def engine(tiny_model_dir: Path) -> AsyncIterator[InferenceEngine]:
    eng = InferenceEngine(tiny_model_dir, devices=["cpu"], max_wait_ms=1.0)
    await eng.start()
    yield eng
    await eng.close()


def long_notes(n: int) -> list[NoteEvent]:
    _, notes = feed(2, 6, seed=3)
    return [note for note in notes if len(note.text.split()) > 30][:n]


async def test_a_note_whose_chunking_fails_is_rejected_alone(
    engine: InferenceEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    notes = long_notes(3)
    real = pipeline_module.note_chunks

    def chunks(text: str, spec: Any, tokenizer: Any = None) -> list[str]:
        if text == notes[1].text:
            raise RecursionError("maximum recursion depth exceeded")
        return real(text, spec, tokenizer)

    monkeypatch.setattr(pipeline_module, "note_chunks", chunks)
    pipeline = Pipeline(engine, MemoryRiskStore(), engine.spec, model="tiny")
    result = await pipeline.process(notes)
    [rejected] = result.rejected
    assert (rejected.index, rejected.reason) == (1, "processing_error")
    assert "RecursionError" in rejected.detail
    assert {u.trigger_note_id for u in result.updates} == {notes[0].note_id, notes[2].note_id}


class PickyEngine:
    """The real engine, failing every call that holds ``poison`` (as a tokenizer or model error on one
    note's text would), or every call at all when ``broken``."""

    def __init__(self, engine: InferenceEngine, poison: str, *, broken: bool = False) -> None:
        self.engine, self.poison, self.broken = engine, poison, broken

    async def score(self, texts: Sequence[str], *, isolated: bool = False) -> list[float]:
        if self.broken or any(self.poison in t for t in texts):
            raise IndexError("index out of range in self")
        return await self.engine.score(texts, isolated=isolated)


async def test_a_note_that_fails_inference_alone_is_rejected_and_the_others_scored(
    engine: InferenceEngine,
) -> None:
    notes = long_notes(3)
    poison = "zqxpoison"
    notes[2] = notes[2].model_copy(update={"text": f"{poison} {notes[2].text}"})
    assert poison not in notes[0].text + notes[1].text + CANARY
    pipeline = Pipeline(PickyEngine(engine, poison), MemoryRiskStore(), engine.spec, model="tiny")
    result = await pipeline.process(notes)
    assert [(r.index, r.reason) for r in result.rejected] == [(2, "processing_error")]
    assert len(result.updates) == 2


async def test_an_engine_that_fails_on_the_canary_too_is_not_blamed_on_a_note(
    engine: InferenceEngine,
) -> None:
    pipeline = Pipeline(PickyEngine(engine, "", broken=True), MemoryRiskStore(), engine.spec)
    with pytest.raises(EngineError, match="canary") as raised:
        await pipeline.process(long_notes(2))
    assert decide(raised.value, step="batch").fate == "exit"


async def test_cleaning_and_chunking_run_off_the_event_loop(
    engine: InferenceEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """note_chunks waits for an event that only the event loop can set: on the loop it would wait out
    its bound and report that it blocked the loop."""
    loop_ran = threading.Event()
    blocked: list[bool] = []
    real = pipeline_module.note_chunks

    def chunks(text: str, spec: Any, tokenizer: Any = None) -> list[str]:
        blocked.append(not loop_ran.wait(timeout=30))
        return real(text, spec, tokenizer)

    async def tick() -> None:
        while True:
            await asyncio.sleep(0.01)
            loop_ran.set()

    monkeypatch.setattr(pipeline_module, "note_chunks", chunks)
    ticker = asyncio.create_task(tick())
    try:
        result = await Pipeline(engine, MemoryRiskStore(), engine.spec).process(long_notes(2))
    finally:
        ticker.cancel()
    assert blocked == [False, False]
    assert len(result.updates) == 2


# --- the path: provenance from message to dead letter ----------------------------------------------


async def test_a_rejected_note_is_dead_lettered_with_its_own_message(engine: InferenceEngine) -> None:
    notes = long_notes(3)
    poison = "zqxpoison"
    notes[1] = notes[1].model_copy(update={"text": f"{poison} {notes[1].text}"})
    pipeline = Pipeline(PickyEngine(engine, poison), MemoryRiskStore(), engine.spec, model="tiny")
    sent: list[tuple[str, bytes | None, bytes]] = []

    async def send(topic: str, key: bytes | None, value: bytes) -> Any:
        sent.append((topic, key, value))
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        done.set_result(None)
        return done

    async def ready() -> Pipeline:
        return pipeline

    path = NotePath(Settings(max_note_bytes=100_000), ready, send)
    origins = [Origin("notes", 0, 10, key=b"k0", value=b"{oops")]
    origins += [
        Origin("notes", 1, 20 + i, key=admission_key(n.hadm_id), value=n.to_bytes())
        for i, n in enumerate(notes)
    ]
    handled = await path.notes(origins)
    assert (handled.messages, handled.updates, handled.dead_letters) == (4, 2, 2)
    letters = [DeadLetter.from_bytes(v) for topic, _, v in sent if topic == "notes-dlq"]
    assert {(dl.reason, dl.offset) for dl in letters} == {("invalid_json", 10), ("processing_error", 21)}
    [rejected] = [dl for dl in letters if dl.offset == 21]
    assert rejected.original == notes[1].to_bytes()
    assert rejected.partition == 1
