"""No input stops ingest: any bytes become events or a reject that names what is wrong (property tests)."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from notestream.stream.ingest.errors import FhirReject, Hl7Reject
from notestream.stream.ingest.fhir_map import FhirOptions, map_body
from notestream.stream.ingest.hl7_map import Hl7Options, decode, map_message
from notestream.stream.ingest.hl7_values import unescape
from tests.ingest.messages import mdm
from tests.ingest.resources import document

OPTIONS = Hl7Options()
VALID = mdm("T02", "F1", "DOC-1", r"Line one\.br\line \T\ two", "Line three")


def _hl7(raw: bytes) -> None:
    reject: Hl7Reject | None = None
    try:
        map_message(decode(raw, OPTIONS), OPTIONS)
    except Hl7Reject as exc:
        reject = exc
    if reject is not None:
        assert reject.ack in ("AE", "AR")
        assert reject.detail


@settings(max_examples=100)
@given(st.binary(max_size=400))
def test_any_bytes_are_mapped_or_rejected(raw: bytes) -> None:
    _hl7(raw)
    _hl7(b"MSH|^~\\&|" + raw)


@settings(max_examples=100)
@given(st.integers(0, len(VALID) - 1), st.binary(min_size=1, max_size=8))
def test_a_damaged_message_is_mapped_or_rejected(at: int, junk: bytes) -> None:
    _hl7(VALID[:at] + junk + VALID[at + len(junk) :])


@settings(max_examples=100)
@given(st.text(max_size=200))
def test_unescape_never_fails(text: str) -> None:
    out = unescape(text, escape="\\", separators="|~^&")
    assert "\r" not in out


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4),
    max_leaves=20,
)


@settings(max_examples=100)
@given(
    st.sampled_from(["id", "status", "date", "content", "context", "subject", "relatesTo", "type"]),
    json_values,
)
def test_any_fhir_element_is_mapped_or_rejected(name: str, value: Any) -> None:
    resource = document() | {name: value}
    reject: FhirReject | None = None
    try:
        map_body(resource, FhirOptions())
    except FhirReject as exc:
        reject = exc
    if reject is not None:
        assert 400 <= reject.status < 500
        assert reject.detail
