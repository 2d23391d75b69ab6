"""Errors of EHR ingest (a branch of :mod:`notestream.stream.errors`).

::

    StreamError
    └── IngestError           a source message cannot become events; says why, never with note text
        ├── Hl7Reject         an HL7 v2 message is answered AE or AR (with its ERR code and location)
        └── FhirReject        a FHIR resource or Bundle is answered 4xx (with an OperationOutcome)
"""

from __future__ import annotations

from typing import Literal

from notestream.stream.errors import StreamError


class IngestError(StreamError):
    """A source message cannot become events.

    ``reason`` is the dead-letter reason the rejected message is filed under (one of
    :data:`notestream.stream.events.DEAD_LETTER_REASONS`), ``detail`` says what is wrong in words a person at the
    interface engine can act on. Neither ever holds note text.
    """

    def __init__(self, reason: str, detail: str, *, key: bytes | None = None) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail
        self.key = key


class Hl7Reject(IngestError):
    """An HL7 v2 message is rejected: ``ack`` is AE (the content is wrong) or AR (the message cannot be
    processed at all: not HL7, unsupported type or trigger), ``code`` an HL7 table 0357 error code and
    ``location`` the field at fault (``PV1-19``), '' when none."""

    def __init__(
        self,
        ack: Literal["AE", "AR"],
        code: int,
        detail: str,
        *,
        location: str = "",
        reason: str = "schema",
        key: bytes | None = None,
    ) -> None:
        super().__init__(reason, detail, key=key)
        self.ack = ack
        self.code = code
        self.location = location


class FhirReject(IngestError):
    """A FHIR resource or Bundle is rejected; ``status`` is the HTTP status answered (400, 422...),
    ``issue`` the OperationOutcome issue code (``invalid``, ``required``, ``not-supported``...) and
    ``expression`` the FHIRPath of the element at fault, '' when none."""

    def __init__(
        self,
        status: int,
        issue: str,
        detail: str,
        *,
        expression: str = "",
        reason: str = "schema",
        key: bytes | None = None,
    ) -> None:
        super().__init__(reason, detail, key=key)
        self.status = status
        self.issue = issue
        self.expression = expression
