"""Identifiers as hospitals have them: one type for every admission, patient and note id.

An id is either a non-negative integer below ``2**63`` (MIMIC's ``HADM_ID``, ``SUBJECT_ID``) or a
string of 1 to 128 printable characters (letters, digits, spaces and punctuation such as
``-_.:/^&{}#``) with no leading or trailing whitespace, such as the encounter number
``V2026-000123``. Parsing is strict: booleans, floats, negative or oversized integers, empty strings,
control characters and padded strings are refused, never coerced.

**One admission, one id.** A string of digits without leading zeros that fits the integer range *is*
that integer: ``"167853"`` and ``167853`` name the same admission, so its Kafka key, partition and
Redis keys never split in two. Leading zeros are significant (``"007"`` is not ``7``; hospital
numbers are often zero-padded and the padding is part of the number). So :func:`parse_id` returns a
canonical form, and ``str(id)`` of a canonical id parses back to the same id:

>>> parse_id("167853"), parse_id(167853), parse_id("V2026-000123"), parse_id("007")
(167853, 167853, 'V2026-000123', '007')
>>> all(parse_id(str(i)) == i for i in (0, 167853, "007", "{a}:b", "12345678901234567890"))
True
>>> for bad in (True, 1.0, -5, 2**63, "", " 7", "a\\nb", "x" * 129):
...     try:
...         parse_id(bad)
...     except ValueError as exc:
...         print(exc)
a boolean is not an id
an id is an integer or a string, not a float
an integer id must be non-negative
an integer id must be below 2**63
an id string must not be empty
an id string must not start or end with whitespace
an id string must hold printable characters only (no control characters)
an id string has at most 128 characters

Ids as keys (:func:`id_key`) escape what Redis hash tags and key separators use (``{``, ``}``,
``:``, ``%`` and everything outside a safe ASCII set), so every key of one admission stays in one
Redis Cluster slot whatever the id holds.
"""

from __future__ import annotations

from numbers import Integral
from typing import Annotated, Any
from urllib.parse import quote

from pydantic import PlainValidator, WithJsonSchema

MAX_ID_INT = 2**63 - 1
"""The largest integer id (Kafka, Redis and Java's ``long`` all hold it)."""
MAX_ID_CHARS = 128
"""The longest string id, in characters."""

ID_STRING_PATTERN = r"^[^\s\x00-\x1f\x7f-\x9f](?:[^\x00-\x1f\x7f-\x9f]*[^\s\x00-\x1f\x7f-\x9f])?$"
"""The JSON Schema pattern of a string id: no control character, no whitespace at either end (the
worker also refuses other non-printable characters: format, private-use and unassigned ones)."""

_DIGITS = frozenset("0123456789")


def parse_id(value: Any) -> int | str:
    """The canonical id of ``value`` (an int or a str), or ValueError saying what is wrong."""
    if isinstance(value, bool):
        raise ValueError("a boolean is not an id")
    if isinstance(value, Integral):  # int, and numpy's integers from tables (JSON only gives int)
        number = int(value)
        if number < 0:
            raise ValueError("an integer id must be non-negative")
        if number > MAX_ID_INT:
            raise ValueError("an integer id must be below 2**63")
        return number
    if not isinstance(value, str):
        kind = "a float" if isinstance(value, float) else f"a {type(value).__name__}"
        raise ValueError(f"an id is an integer or a string, not {kind}")
    if not value:
        raise ValueError("an id string must not be empty")
    if len(value) > MAX_ID_CHARS:
        raise ValueError(f"an id string has at most {MAX_ID_CHARS} characters")
    if value != value.strip():
        raise ValueError("an id string must not start or end with whitespace")
    if not value.isprintable():
        raise ValueError("an id string must hold printable characters only (no control characters)")
    if set(value) <= _DIGITS and (value == "0" or value[0] != "0") and len(value) <= 19:
        number = int(value)
        if number <= MAX_ID_INT:
            return number  # the same admission as the integer: one Kafka key, one set of Redis keys
    return value


def parse_note_id(value: Any) -> str:
    """A note id: the same rules as :func:`parse_id`, always held as a string (MIMIC's ROW_ID "174").

    >>> parse_note_id(174), parse_note_id("DOC-9/1")
    ('174', 'DOC-9/1')
    """
    return str(parse_id(value))


def id_key(value: int | str) -> str:
    """An id as a key fragment: ASCII, with ``{ } : %`` and every other unsafe character escaped.

    >>> id_key(167853), id_key("V2026-000123"), id_key("{a}:b c")
    ('167853', 'V2026-000123', '%7Ba%7D%3Ab%20c')
    """
    return quote(str(value), safe="-_.~")


_INT_SCHEMA = {"type": "integer", "minimum": 0, "maximum": MAX_ID_INT}
_STR_SCHEMA = {
    "type": "string",
    "minLength": 1,
    "maxLength": MAX_ID_CHARS,
    "pattern": ID_STRING_PATTERN,
}

Id = Annotated[
    int | str,
    PlainValidator(parse_id),
    WithJsonSchema(
        {
            "oneOf": [_INT_SCHEMA, _STR_SCHEMA],
            "description": "An id: a non-negative integer below 2**63, or a string of 1 to 128 printable "
            "characters without surrounding whitespace. A string of digits without leading zeros that "
            "fits the integer range is that integer (sent as a JSON integer).",
        }
    ),
]
"""An admission or patient id (see :func:`parse_id`); the type every event uses."""

NoteId = Annotated[
    str,
    PlainValidator(parse_note_id),
    WithJsonSchema(
        {
            "oneOf": [_INT_SCHEMA, _STR_SCHEMA],
            "description": "A note id: an id as for admissions, always sent back as a JSON string.",
        }
    ),
]
"""A note id (see :func:`parse_note_id`)."""
