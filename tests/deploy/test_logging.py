"""Structured logs: JSON lines carry identifiers, never note text."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest

from notestream.core.logging import NOTE_TEXT_FIELDS, setup_logging

NOTE = "Pt is a 67 yo man admitted with CHF exacerbation; lives alone."


@pytest.fixture
def captured() -> Iterator[tuple[io.StringIO, logging.Logger]]:
    out = io.StringIO()
    handler = setup_logging(level="DEBUG", json_lines=True, stream=out)
    try:
        yield out, logging.getLogger("notestream.test.logging")
    finally:
        logging.getLogger().removeHandler(handler)


def lines(out: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in out.getvalue().splitlines()]


def test_json_lines_keep_extra_identifiers(captured: tuple[io.StringIO, logging.Logger]) -> None:
    out, log = captured
    log.info("note scored", extra={"hadm_id": 100001, "note_id": "n-7", "chunks": 3})
    (entry,) = lines(out)
    assert entry["msg"] == "note scored"
    assert entry["level"] == "INFO"
    assert (entry["hadm_id"], entry["note_id"], entry["chunks"]) == (100001, "n-7", 3)
    assert entry["logger"] == "notestream.test.logging"
    assert str(entry["ts"]).endswith("+00:00")


@pytest.mark.parametrize("field", sorted(NOTE_TEXT_FIELDS))
def test_records_carrying_note_text_are_withheld(
    captured: tuple[io.StringIO, logging.Logger], field: str
) -> None:
    out, log = captured
    log.warning("scored %s", "n-1", extra={field: NOTE, "hadm_id": 5})
    log.warning("by name %(text)s", {"text": NOTE})
    text = out.getvalue()
    assert NOTE not in text
    assert "CHF" not in text
    first, second = lines(out)
    assert "withheld" in str(first["msg"])
    assert field in str(first["msg"])
    assert first["hadm_id"] == 5  # identifiers survive
    assert "withheld" in str(second["msg"])


def test_plain_format_and_one_handler_after_repeated_setup() -> None:
    out = io.StringIO()
    first = setup_logging(level="INFO", json_lines=False, stream=out)
    second = setup_logging(level="INFO", json_lines=False, stream=out)
    try:
        logging.getLogger("notestream.test").info("hello %d", 42)
        assert first not in logging.getLogger().handlers
        assert out.getvalue().count("hello 42") == 1
        assert "INFO notestream.test: hello 42" in out.getvalue()
    finally:
        logging.getLogger().removeHandler(second)
