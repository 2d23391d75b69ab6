r"""HL7 v2 acknowledgements: which ACK a message gets (original or enhanced mode) and its text.

Original mode (MSH-15 and MSH-16 empty): every message is answered AA (its events are in Kafka), AE
(its content is wrong: a field is missing or invalid) or AR (it cannot be processed: not HL7, an
unsupported type, trigger, version or processing id; or Kafka did not take the events).
Enhanced mode (MSH-15 or MSH-16 set): the commit ACK CA / CE / CR, sent as MSH-15 asks (AL always,
NE never, ER on errors only, SU on success only; empty: AL). notestream commits only once Kafka holds
the events, so a CA means as much as an AA; no separate application ACK is sent (MSH-16 is not used).

An error ACK carries MSA-3 (text, for older engines) and an ERR segment (v2.5: ERR-2 location, ERR-3
code from HL7 table 0357, ERR-4 severity, ERR-8 the text). Texts name fields, never values.

>>> from notestream.stream.ingest.errors import Hl7Reject
>>> ack = build_ack(None, "AR", Hl7Reject("AR", 100, "not HL7"), control_id="ACK1",
...                 now=datetime(2026, 3, 1, 15, 0, tzinfo=UTC))
>>> print(ack.replace("\r", "\n"))
MSH|^~\&|NOTESTREAM||||20260301150000+0000||ACK|ACK1|P|2.5
MSA|AR||not HL7
ERR||MSH^1^1|100^Segment sequence error^HL70357|E||||not HL7
<BLANKLINE>
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Literal

from notestream.stream.ingest.errors import Hl7Reject
from notestream.stream.ingest.hl7_map import Header

Outcome = Literal["AA", "AE", "AR"]

ERROR_NAMES = {
    100: "Segment sequence error",
    101: "Required field missing",
    102: "Data type error",
    200: "Unsupported message type",
    201: "Unsupported event code",
    202: "Unsupported processing id",
    203: "Unsupported version id",
    207: "Application internal error",
}
"""HL7 table 0357 (message error condition codes) as used here."""

_ENHANCED = {"AA": "CA", "AE": "CE", "AR": "CR"}


def ack_code(header: Header | None, outcome: Outcome) -> str | None:
    r"""The acknowledgment code to send for ``outcome``, or None when the sender asked for none.

    >>> from dataclasses import replace
    >>> h = Header("1", "ADT", "A01", "2.5", "P", "", "", "", "", "", "", "ascii", "|~^&", "\\")
    >>> ack_code(h, "AE"), ack_code(replace(h, accept_ack="ER"), "AA"), ack_code(replace(h, accept_ack="ER"), "AR")
    ('AE', None, 'CR')
    """
    if header is None or not (header.accept_ack or header.app_ack):
        return outcome
    condition = header.accept_ack or "AL"
    if (
        condition == "NE"
        or (condition == "ER" and outcome == "AA")
        or (condition == "SU" and outcome != "AA")
    ):
        return None
    return _ENHANCED[outcome]


def _escape(text: str, header: Header | None) -> str:
    """Our own texts with the message's delimiters escaped (they never hold values from the message)."""
    seps, esc = (header.separators, header.escape) if header else ("|~^&", "\\")
    out = text.replace(esc, f"{esc}E{esc}")
    for char, code in zip(seps, "FRST", strict=True):
        out = out.replace(char, f"{esc}{code}{esc}")
    return out.replace("\r", " ").replace("\n", " ")


def _location(location: str, comp: str) -> str:
    """``PV1-19`` -> ERL ``PV1^1^19`` (segment, sequence, field)."""
    seg, _, fld = location.partition("-")
    return comp.join(part for part in (seg, "1", fld or "1"))


def build_ack(
    header: Header | None,
    code: str,
    error: Hl7Reject | None,
    *,
    control_id: str,
    now: datetime,
) -> str:
    """The ACK message (segments ended by ``\\r``) answering a message with ``header`` (None when the
    message could not even be read) with acknowledgment ``code`` (AA, AE, AR, CA, CE or CR)."""
    seps = header.separators if header else "|~^&"
    field, rep, comp = seps[0], seps[1], seps[2]
    encoding = f"{comp}{rep}{header.escape if header else chr(92)}{seps[3]}"
    stamp = now.strftime("%Y%m%d%H%M%S%z")
    if header is not None:
        msh = [
            "MSH",
            encoding,
            header.receiving_app or "NOTESTREAM",
            header.receiving_facility,
            header.sending_app,
            header.sending_facility,
            stamp,
            "",
            f"ACK{comp}{header.trigger}{comp}ACK" if header.trigger else "ACK",
            control_id,
            header.processing_id or "P",
            header.version or "2.5",
        ]
        original_id = header.control_id
    else:
        msh = ["MSH", encoding, "NOTESTREAM", "", "", "", stamp, "", "ACK", control_id, "P", "2.5"]
        original_id = ""
    segments = [field.join(msh)]
    text = _escape(error.detail, header) if error is not None else ""
    segments.append(field.join(["MSA", code, original_id] + ([text] if text else [])))
    if error is not None:
        where = _location(error.location or "MSH-1", comp)
        name = ERROR_NAMES.get(error.code, "Application error")
        err = ["ERR", "", where, f"{error.code}{comp}{name}{comp}HL70357", "E", "", "", "", text]
        segments.append(field.join(err))
    return "\r".join(segments) + "\r"


def now_utc() -> datetime:
    """The current time, aware UTC (the ACK's MSH-7)."""
    return datetime.now(UTC)
