"""Hypothesis strategies for ids as hospitals have them (shared by the id, pipeline and fuzz tests)."""

from __future__ import annotations

from hypothesis import strategies as st

from notestream.stream.ids import MAX_ID_CHARS, MAX_ID_INT, parse_id

_PUNCT = "-_.:/^&{}#%$[]*\\|'\"@!"
_printable = st.characters(
    blacklist_categories=("Cc", "Cs", "Cf", "Co", "Cn", "Zl", "Zp", "Zs"), max_codepoint=0x2FFF
)
_chars = st.one_of(st.sampled_from(_PUNCT + " 0123456789"), _printable)


def _valid(text: str) -> bool:
    try:
        parse_id(text)
    except ValueError:
        return False
    return True


raw_ids = st.one_of(
    st.integers(min_value=0, max_value=MAX_ID_INT),
    st.text(_chars, min_size=1, max_size=MAX_ID_CHARS).map(str.strip).filter(_valid),
    st.from_regex(r"\A[1-9][0-9]{0,17}\Z").map(str),  # digit strings: the same admission as the int
)
"""Any allowed id as a feed may send it (an int, a string, a digit string)."""

ids = raw_ids.map(parse_id)
"""Allowed ids in canonical form."""
