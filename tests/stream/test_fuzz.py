"""Fuzz: any bytes on ``notes`` or ``admissions`` end as exactly one of an update, a counted drop or a
dead letter, never an exception and never nothing.

Drives the worker's own path for a message (:class:`~notestream.stream.note_path.NotePath`: receive with
the topic's bounds and key check, the :class:`~notestream.stream.pipeline.Pipeline` with a real memory
store, the emit), with a fake scorer at the engine seam so that thousands of inputs run in seconds, and
reads what the path sent: risk updates and dead letters (each read back as the broker would hand it to
``notestream dlq``). Inputs: arbitrary bytes, and valid events mutated (fields replaced by any JSON
value, removed, nested deep, numbers made huge, bytes flipped or cut).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from hypothesis import example, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from notestream.core.settings import Settings
from notestream.core.topics import NOTES_DLQ, RISK_UPDATES
from notestream.models.errors import BatchFailed
from notestream.models.spec import ModelSpec, Window
from notestream.stream.events import DEAD_LETTER_REASONS, DeadLetter, RiskUpdate, admission_key
from notestream.stream.note_path import NotePath, Origin
from notestream.stream.pipeline import Pipeline
from notestream.stream.store import MemoryRiskStore
from tests.stream.ids import raw_ids

MAX_TEXT = 4_000
WORDS = " ".join(f"w{i}" for i in range(30))


class FakeScorer:
    """The engine seam: probabilities from the chunk's length; a chunk holding "boom" fails inference."""

    async def score(self, texts: Sequence[str], *, isolated: bool = False) -> list[float]:
        if any("boom" in t for t in texts):
            raise BatchFailed("the fake engine failed on a chunk")
        return [(len(t) % 89) / 100 for t in texts]


@dataclass
class Fate:
    updates: int = 0
    counted: int = 0
    dead: int = 0

    @property
    def kinds(self) -> int:
        return (self.updates > 0 or self.counted > 0) + self.dead


class Worker:
    """The path with a pipeline over a memory store, and the broker as a list of what was sent."""

    def __init__(self) -> None:
        spec = ModelSpec(window=Window(kind="hours", value=48))
        self.pipeline = Pipeline(FakeScorer(), MemoryRiskStore(), spec, model="fake", admission_wait_s=0.0)
        self.sent: list[tuple[str, bytes | None, bytes]] = []
        self.offset = 0

        async def ready() -> Pipeline:
            return self.pipeline

        self.path = NotePath(Settings(max_note_bytes=MAX_TEXT), ready, self.send)

    async def send(self, topic: str, key: bytes | None, value: bytes) -> asyncio.Future[None]:
        self.sent.append((topic, key, value))
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        done.set_result(None)
        return done

    def counted(self) -> int:
        """Store outcomes, drops and admission events the pipeline counted."""
        c = self.pipeline.counters
        return sum(v for k, v in c.items() if k.startswith(("admission_", "dropped_"))) + sum(
            c[k] for k in ("new", "revision", "duplicate", "stale", "retracted", "held")
        )

    async def handle(self, topic: str, raw: bytes, key: bytes | None) -> Fate:
        """One message as the worker handles it; returns what became of it."""
        self.offset += 1
        origin = Origin(topic, 0, self.offset, key=key, value=raw)
        sent, counted = len(self.sent), self.counted()
        handled = await (self.path.notes([origin]) if topic == "notes" else self.path.admission(origin))
        out = self.sent[sent:]
        letters = [DeadLetter.from_bytes(v) for t, _, v in out if t == NOTES_DLQ]
        updates = [RiskUpdate.model_validate_json(v) for t, _, v in out if t == RISK_UPDATES]
        assert len(letters) + len(updates) == len(out), "nothing but updates and dead letters"
        assert (handled.dead_letters, handled.updates) == (len(letters), len(updates))
        for letter in letters:
            assert letter.reason in DEAD_LETTER_REASONS
            assert (letter.topic, letter.offset) == (topic, self.offset), "it points at its message"
            if letter.original_sha256 is None:
                assert letter.original == raw, "it carries the message, to be redriven"
            else:
                assert letter.original_sha256 == hashlib.sha256(raw).hexdigest()
        return Fate(updates=len(updates), counted=self.counted() - counted, dead=len(letters))


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=30),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
times = st.sampled_from(["2150-01-01T09:00:00", "2150-01-02T09:00:00+01:00", "2150-01-09T00:00:00Z", "soon"])


@st.composite
def valid_note(draw: st.DrawFn) -> dict[str, Any]:
    return {
        "note_id": draw(raw_ids),
        "revision": draw(st.integers(0, 3)),
        "subject_id": draw(raw_ids),
        "hadm_id": draw(st.sampled_from([1, "V-1", "{a}:b"])),
        "text": draw(st.sampled_from([WORDS, "short note.", f"{WORDS} boom", ""])),
        "chart_time": draw(times),
        "is_error": draw(st.booleans()),
        "admit_time": draw(st.none() | times),
    }


@st.composite
def valid_admission(draw: st.DrawFn) -> dict[str, Any]:
    kind = draw(st.sampled_from(["admit", "discharge"]))
    event: dict[str, Any] = {
        "kind": kind,
        "subject_id": draw(raw_ids),
        "hadm_id": draw(st.sampled_from([1, "V-1"])),
    }
    event["admit_time" if kind == "admit" else "discharge_time"] = draw(times)
    return event


@st.composite
def mutated(draw: st.DrawFn, base: st.SearchStrategy[dict[str, Any]]) -> tuple[bytes, bytes | None]:
    event = draw(base)
    key: bytes | None = admission_key(event["hadm_id"])
    for _ in range(draw(st.integers(0, 3))):
        field = draw(st.sampled_from([*event, "extra"]))
        action = draw(st.sampled_from(["replace", "drop", "nest", "huge"]))
        if action == "replace":
            event[field] = draw(json_values)
        elif action == "drop":
            event.pop(field, None)
        elif action == "nest":
            event[field] = json.loads("[" * 200 + "]" * 200)
        else:
            event[field] = 10 ** draw(st.integers(18, 80))
    raw = json.dumps(event).encode("utf-8")
    if draw(st.booleans()):  # then damage the bytes
        cut = draw(st.integers(0, len(raw)))
        raw = draw(st.sampled_from([raw[:cut], raw[:cut] + b"\xff" + raw[cut + 1 :], raw + b"}"]))
    if draw(st.integers(0, 9)) == 0:
        key = draw(st.sampled_from([None, b"other", b"\xfe"]))
    return raw, key


def run(topic: str, messages: list[tuple[bytes, bytes | None]]) -> None:
    async def go() -> None:
        worker = Worker()
        for raw, key in messages:
            fate = await worker.handle(topic, raw, key)
            assert fate.kinds == 1, (fate, raw[:200])

    asyncio.run(go())


POISON = [
    (b"[" * 100_000 + b"]" * 100_000, None),
    (b'{"note_id": "1", "subject_id": 1, "hadm_id": ' + b"9" * 5000 + b', "text": "x"}', None),
    (
        b'{"note_id": "1", "subject_id": 1, "hadm_id": 1, "text": "x", "x": '
        + b"[" * 5000
        + b"]" * 5000
        + b"}",
        None,
    ),
    (b'{"kind": "admit", "subject_id": 1, "hadm_id": 1e999999, "admit_time": "2150-01-01T00:00:00"}', None),
    (b'{"note_id": true, "subject_id": -5, "hadm_id": 700101.0, "text": "x"}', None),
    (b"\x00" * (6 * MAX_TEXT + 70_000), None),
]


@hsettings(max_examples=300)
@given(
    st.sampled_from(["notes", "admissions"]),
    st.lists(st.tuples(st.binary(max_size=300), st.none() | st.binary(max_size=8)), min_size=1, max_size=3),
)
def test_arbitrary_bytes_end_as_exactly_one_fate(
    topic: str, messages: list[tuple[bytes, bytes | None]]
) -> None:
    run(topic, messages)


@hsettings(max_examples=180)
@example([POISON[0]])
@example([POISON[1]])
@example([POISON[2]])
@example([POISON[4]])
@example([POISON[5]])
@given(st.lists(mutated(valid_note()), min_size=1, max_size=4))
def test_mutated_notes_end_as_exactly_one_fate(messages: list[tuple[bytes, bytes | None]]) -> None:
    run("notes", messages)


@hsettings(max_examples=100)
@example([POISON[0]])
@example([POISON[3]])
@given(st.lists(mutated(valid_admission()), min_size=1, max_size=4))
def test_mutated_admissions_end_as_exactly_one_fate(messages: list[tuple[bytes, bytes | None]]) -> None:
    run("admissions", messages)
