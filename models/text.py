"""Cleaning modes and sentence segmentation of clinical notes.

Two cleaning modes; a model must be served with the mode it was trained with (``ModelSpec.cleaning``):

``huang2019``
    Exactly the reference pipeline (docs/reference.md §3): missing -> ``' '``, newlines and carriage returns
    -> spaces, strip, lower-case, then the regexes in order. Its flaws are kept on purpose: anything
    in brackets goes, ``[0-9]+\\.`` turns ``98.6`` into ``6``, whitespace is not collapsed.

``clinical``
    Keeps what the reference destroys (decimals such as ``98.6``, dosages such as ``0.5 mg``, ordinary
    brackets) while removing de-identification placeholders: MIMIC-III ``[** ... **]`` and MIMIC-IV
    ``___``. Decorative rules (``----``, ``====``, ``____``) go, the text is lower-cased and whitespace
    collapses to single spaces. Missing text gives ``''``.

>>> clean("Admission Date: [**2150-1-1**]\\nT 98.6, Dr. Smith M.D. --- ok")
'  t 6, doctor smith md - ok'
>>> clean("Admission Date: [**2150-1-1**]\\nT 98.6, Dr. Smith M.D. --- ok", mode="clinical")
'admission date: t 98.6, dr. smith m.d. ok'
>>> clean(None), clean(float("nan")), clean(None, mode="clinical")
('', '', '')
"""

from __future__ import annotations

import math
import re
from functools import lru_cache
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from spacy.language import Language
    from spacy.tokens import Doc

CleaningMode = Literal["huang2019", "clinical"]
MODES: tuple[str, ...] = ("huang2019", "clinical")
MIN_SEGMENT_CHARS = 20

# The reference's regexes in order. The first two are quadratic on some inputs when run by ``re`` (an
# unclosed run of ``[`` or a long run of digits makes every start position scan to the end), so they
# run as the linear-time equivalents below; the rest are literals and stay regexes.
_HUANG2019_LITERALS = [
    (re.compile(r"dr\."), "doctor"),
    (re.compile(r"m\.d\."), "md"),
    (re.compile(r"admission date:"), ""),
    (re.compile(r"discharge date:"), ""),
    (re.compile(r"--|__|=="), ""),
]
# ``[0-9]+\.`` can only match from the first digit of a run (a match starting inside a run would need a
# dot right after the same run), so the lookbehind changes nothing but lets every other start fail at once.
_DIGITS_DOT = re.compile(r"(?<![0-9])[0-9]+\.")
_PLACEHOLDER_OPEN, _PLACEHOLDER_CLOSE = "[**", "**]"
_UNDERSCORES = re.compile(r"_{3,}")
_RULES = re.compile(r"(?:-{2,}|={2,}|_{2,}|\*{3,}|~{3,})")
_WHITESPACE = re.compile(r"\s+")


def is_missing(value: Any) -> bool:
    """True for None, NaN and pandas' NA / NaT (missing note text).

    >>> is_missing(None), is_missing(float("nan")), is_missing(""), is_missing("x")
    (True, True, False, False)
    """
    if value is None:
        return True
    if isinstance(value, float):
        return math.isnan(value)
    return type(value).__name__ in {"NAType", "NaTType"}


def clean(text: Any, mode: str = "huang2019") -> str:
    """Clean one note (or an admission's joined notes) with the given mode; see the module docstring.

    >>> clean("  Line one\\r\\nline TWO  ")
    'line one  line two'
    >>> clean("dose 0.5 mg [**Hospital1 18**] ___ x", mode="clinical")
    'dose 0.5 mg x'
    """
    if mode == "huang2019":
        return _clean_huang2019(text)
    if mode == "clinical":
        return _clean_clinical(text)
    raise ValueError(f"Unknown cleaning mode {mode!r}; use one of {', '.join(MODES)}.")


def _clean_huang2019(text: Any) -> str:
    value = " " if is_missing(text) else str(text)
    value = value.replace("\n", " ").replace("\r", " ").strip().lower()
    value = drop_bracketed(value)
    value = _DIGITS_DOT.sub("", value)
    for pattern, replacement in _HUANG2019_LITERALS:
        value = pattern.sub(replacement, value)
    return value


def drop_bracketed(text: str) -> str:
    """``re.sub(r"\\[(.*?)\\]", "", text)`` in time linear in ``text``.

    Left to right, each ``[`` is removed with everything up to the first ``]`` after it, unless a
    newline (which ``.`` does not match) comes first; then that ``[`` stays and the scan goes on.

    >>> drop_bracketed("a [b] c [[d] e] [f")
    'a  c  e] [f'
    >>> drop_bracketed("[x\\n[y] [")
    '[x\\n ['
    """
    out: list[str] = []
    pos = 0
    n = len(text)
    close = newline = -2  # cached positions of the next "]" and "\n" at or after the scan; -1: none
    while pos < n:
        start = text.find("[", pos)
        if start < 0:
            break
        if close != -1 and close <= start:
            close = text.find("]", start + 1)
        if newline != -1 and newline <= start:
            newline = text.find("\n", start + 1)
        if close < 0:
            break  # no "]" after this "[", so none after any later "[" either
        if 0 <= newline < close:
            out.append(text[pos : newline + 1])  # every "[" before this newline fails to close
            pos = newline + 1
            continue
        out.append(text[pos:start])
        pos = close + 1
    out.append(text[pos:])
    return "".join(out)


def drop_placeholders(text: str) -> str:
    """``re.sub(r"\\[\\*\\*.*?\\*\\*\\]|_{3,}", " ", text, flags=re.DOTALL)`` in time linear in ``text``.

    >>> drop_placeholders("a [**b**] c ____ d [**e **] [**f")
    'a   c   d   [**f'
    >>> drop_placeholders("[**]**] x [***] y")
    '  x [***] y'
    """
    out: list[str] = []
    pos = 0
    n = len(text)
    # cached next "[**", "**]" and "___" at or after the scan (-1: none left; -2: not looked up yet)
    opened = closed = under = under_end = -2
    while pos < n:
        if opened != -1 and opened < pos:
            opened = text.find(_PLACEHOLDER_OPEN, pos)
        if opened >= 0 and closed != -1 and closed < opened + 3:
            closed = text.find(_PLACEHOLDER_CLOSE, opened + 3)
            if closed < 0:
                opened = -1  # no "**]" after this "[**", so none after any later "[**" either
        if under != -1 and under < pos:
            match = _UNDERSCORES.search(text, pos)
            under, under_end = (match.start(), match.end()) if match else (-1, -1)
        if opened < 0 and under < 0:
            break
        out.append(text[pos : min(p for p in (opened, under) if p >= 0)])
        out.append(" ")
        pos = closed + 3 if opened >= 0 and (under < 0 or opened < under) else under_end
    out.append(text[pos:])
    return "".join(out)


def _clean_clinical(text: Any) -> str:
    if is_missing(text):
        return ""
    value = drop_placeholders(str(text))
    value = _RULES.sub(" ", value)
    return _WHITESPACE.sub(" ", value).strip().lower()


@lru_cache(maxsize=1)
def _sentencizer() -> Language:
    import spacy

    nlp = spacy.blank("en")
    nlp.add_pipe("sentencizer")
    nlp.max_length = 100_000_000
    return nlp


def sentences(text: Any) -> list[str]:
    """Split a note into sentences with spaCy's rule-based sentencizer (no model download).

    As in the reference pre-training code (docs/reference.md §10), a segment shorter than 20 characters is
    appended to the previous one (a leading short segment stays on its own). Empty segments vanish.

    spaCy's tokenizer takes time quadratic in the length of a run without whitespace (it peels prefixes
    and suffixes one at a time, re-scanning the rest each time), so a run longer than
    ``LONG_RUN_CHARS`` is tokenized in pieces of that length (see :func:`_tokens`): linear on any text,
    and unchanged on text without such runs.

    >>> sentences("Pt stable. BP ok. He was discharged home with his family today.")
    ['Pt stable. BP ok.', 'He was discharged home with his family today.']
    >>> sentences(None), sentences("   ")
    ([], [])
    """
    if is_missing(text) or not str(text).strip():
        return []
    nlp = _sentencizer()
    doc = nlp.get_pipe("sentencizer")(_tokens(nlp, str(text)))
    segments: list[str] = []
    for sent in doc.sents:
        piece = sent.text.strip()
        if not piece:
            continue
        if segments and len(piece) < MIN_SEGMENT_CHARS:
            segments[-1] = f"{segments[-1]} {piece}"
        else:
            segments.append(piece)
    return segments


LONG_RUN_CHARS = 100
_LONG_RUN = re.compile(rf"\S{{{LONG_RUN_CHARS + 1},}}")
_PLACEHOLDER_WORD = "x"


def _tokens(nlp: Language, text: str) -> Doc:
    """spaCy's tokens of ``text``, with each run longer than ``LONG_RUN_CHARS`` tokenized in pieces.

    spaCy tokenizes every whitespace-delimited run on its own, so such a run is first replaced by one
    placeholder word, the text tokenized, and the placeholder's token replaced by the tokens of the run's
    pieces. The tokens' texts and trailing spaces
    rebuild ``text`` exactly.

    >>> nlp = _sentencizer()
    >>> long = "a" * 150 + "." + "b" * 80
    >>> doc = _tokens(nlp, f"Hi {long} there")
    >>> doc.text == f"Hi {long} there", [len(t) for t in doc]
    (True, [2, 100, 100, 31, 5])
    """
    from spacy.tokens import Doc

    runs = list(_LONG_RUN.finditer(text))
    if not runs:
        return nlp.make_doc(text)
    parts: list[str] = []
    placeholders: dict[int, str] = {}  # offset of a placeholder in the replaced text -> the run
    pos = offset = 0
    for run in runs:
        before = text[pos : run.start()]
        parts.append(before)
        offset += len(before)
        placeholders[offset] = run.group()
        parts.append(_PLACEHOLDER_WORD)
        offset += len(_PLACEHOLDER_WORD)
        pos = run.end()
    parts.append(text[pos:])
    words: list[str] = []
    spaces: list[bool] = []
    for token in nlp.make_doc("".join(parts)):
        run_text = placeholders.get(token.idx) if token.text == _PLACEHOLDER_WORD else None
        if run_text is None:
            words.append(token.text)
            spaces.append(bool(token.whitespace_))
            continue
        for start in range(0, len(run_text), LONG_RUN_CHARS):
            for piece in nlp.make_doc(run_text[start : start + LONG_RUN_CHARS]):
                words.append(piece.text)
                spaces.append(False)
        spaces[-1] = bool(token.whitespace_)
    return Doc(nlp.vocab, words=words, spaces=spaces)
