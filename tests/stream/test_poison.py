"""No message can stop a worker, and no note text reaches a log: poison messages, in-process.

The worker runs in this process (:func:`notestream.stream.worker.run`) against the embedded broker (tansu) and a
real redis-server, at DEBUG, with the default size limits, for exactly the messages produced. Each
poison message (a JSON array nested 100,000 deep, a note with a deeply nested extra field, an admission
id of 5,000 digits, a note just over ``max_note_bytes``, a 900 kB note with a schema error: both too
large for a dead letter to carry whole) is dead-lettered with a reason while the good notes around it are scored; a marker planted in
every field of every message, good and bad, appears in no log record and no output.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from notestream.core.logging import setup_logging
from notestream.core.settings import Settings
from notestream.core.topics import ADMISSIONS, NOTES, NOTES_DLQ, RISK_UPDATES
from notestream.stream.events import DeadLetter, admission_key
from notestream.stream.worker import run
from tests.fixtures.kafka import produce, read_topic
from tests.stream.feed import discharges, feed, final_updates

pytestmark = pytest.mark.slow

MARKER = "ZQXJMARKER"
DEEP = 100_000


def deep_array(depth: int) -> bytes:
    return b"[" * depth + json.dumps(MARKER).encode() + b"]" * depth


def poison_notes(max_note_bytes: int) -> list[tuple[str, bytes]]:
    """(expected reason, message) of the notes topic; every field holds the marker."""
    nested: Any = MARKER
    for _ in range(DEEP):
        nested = [nested]
    base = {"note_id": MARKER, "subject_id": 1, "category": MARKER, "description": MARKER}
    return [
        ("too_deep", deep_array(DEEP)),
        (
            "too_deep",
            # a valid note with an extra field nested 100,000 deep (json.dumps itself recurses: by hand)
            b'{"note_id": "'
            + MARKER.encode()
            + b'", "subject_id": 1, "hadm_id": 100000, "text": "'
            + MARKER.encode()
            + b' x", "extra": '
            + deep_array(DEEP)
            + b"}",
        ),
        (
            "number_too_long",
            b'{"note_id": "'
            + MARKER.encode()
            + b'", "subject_id": 1, "hadm_id": '
            + b"7" * 5000
            + b', "text": "'
            + MARKER.encode()
            + b'"}',
        ),
        (  # just over the size limit: too large for a dead letter to carry whole
            "text_too_large",
            json.dumps(
                {**base, "hadm_id": 100001, "text": f"{MARKER} " * (max_note_bytes // 10 + 10)}
            ).encode(),
        ),
        (  # a 900 kB note with a schema error: its dead letter would be 1.2 MB whole
            "schema",
            json.dumps(
                {**base, "hadm_id": 100001, "subject_id": [MARKER], "text": f"{MARKER} " * 90_000}
            ).encode(),
        ),
        (  # a 500 kB one is carried whole
            "schema",
            json.dumps(
                {**base, "hadm_id": 100001, "subject_id": [MARKER], "text": f"{MARKER} " * 50_000}
            ).encode(),
        ),
    ]


@pytest.fixture
def debug_logs() -> Iterator[tuple[io.StringIO, list[logging.LogRecord]]]:
    """Every log line the worker writes at DEBUG (formatted), and every record that reached the root."""
    out = io.StringIO()
    records: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    root = logging.getLogger()
    level, handlers = root.level, list(root.handlers)
    setup_logging(level="DEBUG", stream=out)
    keep = Keep()
    root.addHandler(keep)
    try:
        yield out, records
    finally:
        for handler in list(root.handlers):
            if handler not in handlers:
                root.removeHandler(handler)
        for handler in handlers:
            if handler not in root.handlers:
                root.addHandler(handler)
        root.setLevel(level)


async def test_poison_messages_are_dead_lettered_and_good_notes_flow(
    kafka_settings: Settings,
    redis_url: str,
    tiny_model_dir: Path,
    debug_logs: tuple[io.StringIO, list[logging.LogRecord]],
    capfd: pytest.CaptureFixture[str],
) -> None:
    settings = kafka_settings.model_copy(
        update={
            "store": redis_url,
            "model_dir": tiny_model_dir,
            "take_max": 8,
            "log_level": "DEBUG",
        }
    )
    admissions, notes = feed(3, 3, seed=5)
    notes = [
        n.model_copy(update={"text": f"{n.text} {MARKER}", "description": MARKER, "category": MARKER})
        for n in notes
    ]
    brackets = notes[0].model_copy(update={"note_id": f"{MARKER}-b", "text": "[" * 2_000 + MARKER})
    bad = poison_notes(settings.max_note_bytes)
    bad_admission = b'{"kind": "admit", "subject_id": 1, "hadm_id": ' + b"9" * 5000 + b"}"
    produce(settings, ADMISSIONS, [(admission_key(a.hadm_id), a.to_bytes()) for a in admissions])
    good = [(admission_key(n.hadm_id), n.to_bytes()) for n in notes]
    stream = good[:3] + [(b"100000", raw) for _, raw in bad] + good[3:] + [(b"100000", brackets.to_bytes())]
    produce(settings, NOTES, stream)
    ends = [(admission_key(a.hadm_id), a.to_bytes()) for a in discharges(admissions)]
    produce(settings, ADMISSIONS, [(b"9", bad_admission), *ends])
    total = len(stream) + 2 * len(admissions) + 1

    summary = await run(settings, stop_after=total, idle_timeout_s=120)

    assert summary.stopped == "stop_after"
    assert summary.messages == total
    letters = [
        DeadLetter.from_bytes(m.value())
        for m in read_topic(settings, NOTES_DLQ, until=lambda ms: len(ms) >= len(bad) + 1, timeout_s=30)
    ]
    assert sorted(dl.reason for dl in letters) == sorted([r for r, _ in bad] + ["number_too_long"])
    by_offset = {(dl.topic, dl.offset): dl for dl in letters}
    assert len(by_offset) == len(letters)
    for dl in letters:
        assert dl.partition is not None
        assert dl.offset is not None
        assert len(dl.to_bytes()) <= settings.dead_letter_max_bytes
        originals = [raw for _, raw in bad] + [bad_admission]
        if dl.original:
            assert dl.original in originals
        else:  # too large to carry whole: its digest and size find it on its topic
            [raw] = [r for r in originals if hashlib.sha256(r).hexdigest() == dl.original_sha256]
            assert dl.original_size == len(raw)
    assert sum(1 for dl in letters if not dl.original) == 2  # the two large ones
    # the good notes of every admission were scored, the bracket run too (no chunk: 1 word)
    updates = read_topic(
        settings,
        RISK_UPDATES,
        until=lambda ms: (
            all(u.final for u in final_updates(ms).values()) and len(final_updates(ms)) == len(admissions)
        ),
        timeout_s=30,
    )
    last = final_updates(updates)
    assert {h: u.n_notes for h, u in last.items()} == {
        a.hadm_id: 3 + (a.hadm_id == brackets.hadm_id) for a in admissions
    }
    # no marker in any log line, log record (message, arguments, traceback) or output
    out, records = debug_logs
    assert any(r.levelno == logging.DEBUG for r in records), "the worker logged at DEBUG"
    assert any("Dead letter from" in r.getMessage() for r in records)
    assert MARKER not in out.getvalue()
    for record in records:
        text = record.getMessage() + repr(record.args) + repr(record.__dict__.get("exc_text"))
        if record.exc_info:
            text += logging.Formatter().formatException(record.exc_info)
        assert MARKER not in text, record.name
    captured = capfd.readouterr()
    assert MARKER not in captured.out + captured.err
    # the run stopped cleanly: its offsets were committed, so the group's next run has nothing to redo
    again = await run(settings, idle_timeout_s=2.0)
    assert (again.stopped, again.messages) == ("idle", 0)
