r"""HL7 v2 values: times (DTM/TS), escape sequences, and the character sets of MSH-18.

Pure functions, no I/O. HL7 times keep the offset they carry (``-0500``); times without one are read
in the ``source_timezone`` setting. Escapes are decoded here rather than by python-hl7's own
``unescape``, which logs the whole field (note text) when it meets a sequence it does not know.

>>> from zoneinfo import ZoneInfo
>>> parse_dtm("202603011015-0500", ZoneInfo("UTC")).isoformat()
'2026-03-01T10:15:00-05:00'
>>> unescape(r"BP 120\S\80\.br\Seen \T\ discharged", escape="\\", separators="|~^&")
'BP 120^80\nSeen & discharged'
>>> codec_of("8859/1"), codec_of(""), codec_of("UNICODE UTF-8")
('latin-1', None, 'utf-8')
"""

from __future__ import annotations

import codecs
import re
from datetime import UTC, datetime, timedelta, timezone, tzinfo

_DTM = re.compile(
    r"^(?P<y>\d{4})(?P<mo>\d{2})?(?P<d>\d{2})?(?P<h>\d{2})?(?P<mi>\d{2})?(?P<s>\d{2})?"
    r"(?:\.(?P<f>\d{1,6}))?(?P<z>[+-]\d{4})?$"
)

CHARSETS: dict[str, str] = {
    "ASCII": "ascii",
    "8859/1": "latin-1",
    "8859/2": "iso8859-2",
    "8859/3": "iso8859-3",
    "8859/4": "iso8859-4",
    "8859/5": "iso8859-5",
    "8859/6": "iso8859-6",
    "8859/7": "iso8859-7",
    "8859/8": "iso8859-8",
    "8859/9": "iso8859-9",
    "8859/15": "iso8859-15",
    "ISO IR6": "ascii",
    "ISO IR14": "iso2022_jp",
    "ISO IR87": "iso2022_jp",
    "ISO IR159": "iso2022_jp_2",
    "ISO IR100": "latin-1",
    "ISO IR101": "iso8859-2",
    "ISO IR109": "iso8859-3",
    "ISO IR110": "iso8859-4",
    "ISO IR126": "iso8859-7",
    "ISO IR127": "iso8859-6",
    "ISO IR138": "iso8859-8",
    "ISO IR144": "iso8859-5",
    "ISO IR148": "iso8859-9",
    "ISO IR192": "utf-8",
    "UNICODE": "utf-8",
    "UNICODE UTF-8": "utf-8",
    "GB 18030-2000": "gb18030",
    "KS X 1001": "euc_kr",
    "BIG-5": "big5",
}
"""HL7 table 0211 (MSH-18) -> Python codec. Other names are tried as Python codec names (``UTF-8``,
``windows-1252``), so a feed that declares its code page in the common non-standard way still reads."""


def codec_of(charset: str) -> str | None:
    """The Python codec of an MSH-18 value; None when MSH-18 is empty (the ``hl7_default_charset``
    setting applies). Raises LookupError for a name neither HL7 nor Python knows.

    >>> codec_of("windows-1252")
    'cp1252'
    """
    name = charset.strip().upper()
    if not name:
        return None
    if name in CHARSETS:
        return CHARSETS[name]
    if name.startswith("UNICODE UTF-16") or name.startswith("UNICODE UTF-32"):
        # the MSH segment itself would not be readable as ASCII; HL7 v2 over MLLP cannot carry these
        raise LookupError(f"character set {charset!r} cannot frame an HL7 v2 message")
    return codecs.lookup(name).name


def parse_dtm(text: str, tz: tzinfo) -> datetime:
    """An HL7 DTM/TS value ``YYYY[MM[DD[HH[MM[SS[.S...]]]]]][+/-ZZZZ]`` as an aware datetime; without an
    offset it is read in ``tz``. Raises ValueError naming the value's shape (never the value).

    >>> from zoneinfo import ZoneInfo
    >>> parse_dtm("20260301101530.25", ZoneInfo("America/New_York")).isoformat()
    '2026-03-01T10:15:30.250000-05:00'
    >>> parse_dtm("20260301-0030", UTC).isoformat()
    '2026-03-01T00:00:00-00:30'
    >>> parse_dtm("2026-03-01", UTC)
    Traceback (most recent call last):
    ...
    ValueError: not an HL7 time (YYYYMMDD[HHMM[SS[.S]]][+/-ZZZZ]); 10 characters
    """
    match = _DTM.match(text.strip())
    if match is None:
        raise ValueError(f"not an HL7 time (YYYYMMDD[HHMM[SS[.S]]][+/-ZZZZ]); {len(text.strip())} characters")
    g = match.groupdict()
    fraction = (g["f"] or "").ljust(6, "0")
    try:
        moment = datetime(
            int(g["y"]),
            int(g["mo"] or 1),
            int(g["d"] or 1),
            int(g["h"] or 0),
            int(g["mi"] or 0),
            int(g["s"] or 0),
            int(fraction or 0),
        )
    except ValueError as exc:
        raise ValueError(f"not a valid calendar time ({exc})") from exc
    if g["z"]:
        sign = -1 if g["z"][0] == "-" else 1
        hours, minutes = int(g["z"][1:3]), int(g["z"][3:5])
        if hours > 23 or minutes > 59:
            raise ValueError("the time's offset is out of range")
        return moment.replace(tzinfo=timezone(sign * timedelta(hours=hours, minutes=minutes)))
    return moment.replace(tzinfo=tz)


def revision_of(moment: datetime) -> int:
    """A note revision from the time of an edit: milliseconds since 1970 (UTC). Later edits give
    higher revisions, and a resent message gives the same one (the store counts it once).

    >>> revision_of(datetime(2026, 3, 1, 10, 15, tzinfo=UTC))
    1772360100000
    """
    return int((moment - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(milliseconds=1))


def unescape(value: str, *, escape: str, separators: str, codec: str = "utf-8") -> str:
    r"""Decode HL7 escape sequences (v2.x chapter 2.7): ``\F\ \S\ \T\ \R\ \E\`` give the
    delimiters back, ``\.br\``, ``\.sp\`` (``\.spN\``) and ``\.ce\`` give line breaks, ``\Xhh..\``
    gives bytes in the message's character set (``\X0D0A\`` a line break), formatting (``\H\ \N\
    \.fi\ \.nf\ \.in\ \.ti\ \.sk\``) and local (``\Z..\``) or character-set switching
    (``\C..\ \M..\``) sequences are dropped; an unterminated escape is kept as it is. Line breaks
    come out as ``\n``. ``separators`` are the field, repetition, component and sub-component
    delimiters (python-hl7's order without the segment separator).

    >>> unescape(r"caf\XC3A9\ \H\bold\N\\X0D0A\next\.sp2\end", escape="\\", separators="|~^&")
    'café bold\nnext\n\nend'
    >>> unescape(r"50\E\ off \R\ \F\ trailing\\", escape="\\", separators="|~^&")
    '50\\ off ~ | trailing\\\\'

    """
    if not escape or escape not in value:
        return _newlines(value)
    simple = dict(zip("FRST", separators, strict=True)) | {"E": escape, "H": "", "N": ""}
    out: list[str] = []
    i = 0
    while i < len(value):
        start = value.find(escape, i)
        if start < 0:
            out.append(value[i:])
            break
        out.append(value[i:start])
        end = value.find(escape, start + 1)
        if end < 0:  # unterminated: keep the rest literally
            out.append(value[start:])
            break
        seq = value[start + 1 : end]
        i = end + 1
        if seq in simple:
            out.append(simple[seq])
        elif seq.startswith(".br") or seq.startswith(".ce"):
            out.append("\n")
        elif seq.startswith(".sp"):
            count = seq[3:].strip().lstrip("+")
            out.append("\n" * (int(count) if count.isdigit() else 1))
        elif seq.startswith(".") or seq[:1] in ("Z", "C", "M"):
            continue
        elif seq[:1] == "X" and len(seq) % 2 == 1 and all(c in "0123456789abcdefABCDEF" for c in seq[1:]):
            raw = bytes.fromhex(seq[1:])
            try:
                out.append(raw.decode(codec))
            except UnicodeDecodeError:
                out.append(raw.decode("latin-1"))
        else:  # an unknown sequence: keep it as written, escape characters included
            out.append(value[start : end + 1])
    return _newlines("".join(out))


def _newlines(text: str) -> str:
    return text.replace("\r\n", "\n").replace("\r", "\n")
