"""Fuzz: any bytes on ``notes`` or ``admissions`` end as exactly one of an update, a counted drop or a
dead letter, never an exception and never nothing.

Drives what the worker does with one message (parse with the topic's bounds, check the key, then the
:class:`~notestream.stream.pipeline.Pipeline` with a real memory store), with a fake scorer at the engine seam so
that thousands of inputs run in seconds. Inputs: arbitrary bytes, and valid events mutated (fields
replaced by any JSON value, removed, nested deep, numbers made huge, bytes flipped or cut).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from hypothesis import example, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from notestream.models.errors import BatchFailed
from notestream.models.spec import ModelSpec, Window
from notestream.stream.errors import EventError
from notestream.stream.events import (
    DEAD_LETTER_REASONS,
    AdmissionEvent,
    DeadLetter,
    admission_key,
    check_key,
    parse_event,
    parse_note,
)
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


def pipeline() -> Pipeline:
    spec = ModelSpec(window=Window(kind="hours", value=48))
    return Pipeline(FakeScorer(), MemoryRiskStore(), spec, model="fake", admission_wait_s=0.0)


async def handle(pipe: Pipeline, topic: str, raw: bytes, key: bytes | None) -> Fate:
    """One message as the worker handles it; returns what became of it."""
    fate = Fate()
    error: EventError | None = None
    try:
        if topic == "notes":
            note = parse_note(raw, max_text_bytes=MAX_TEXT)
            check_key(key, note.hadm_id)
        else:
            admission = parse_event(raw, AdmissionEvent)
            check_key(key, admission.hadm_id)
    except EventError as exc:
        error = exc
    if error is not None:
        letter = DeadLetter.from_error(raw, error, topic=topic, key=key)  # a reason it knows, or it raises
        assert DeadLetter.from_bytes(letter.to_bytes()).original == raw  # it can be sent and read back
        fate.dead += 1
        return fate
    if topic == "notes":
        result = await pipe.process([note])
        assert sum(result.outcomes.values()) + sum(result.dropped.values()) + len(result.rejected) == 1
        for rej in result.rejected:
            assert rej.reason in DEAD_LETTER_REASONS
        fate.dead += len(result.rejected)
        fate.counted += sum(result.outcomes.values()) + sum(result.dropped.values())
        fate.updates += len(result.updates)
        if result.outcomes.keys() & {"new", "revision"}:
            assert result.updates, "an applied note is announced"
    else:
        before = sum(v for k, v in pipe.counters.items() if k.startswith("admission_"))
        update = await pipe.admission(admission)
        fate.counted += sum(v for k, v in pipe.counters.items() if k.startswith("admission_")) - before
        fate.updates += update is not None
    return fate


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
        pipe = pipeline()
        for raw, key in messages:
            fate = await handle(pipe, topic, raw, key)
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
