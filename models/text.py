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

CleaningMode = Literal["huang2019", "clinical"]
MODES: tuple[str, ...] = ("huang2019", "clinical")
MIN_SEGMENT_CHARS = 20

_HUANG2019 = [
    (re.compile(r"\[(.*?)\]"), ""),
    (re.compile(r"[0-9]+\."), ""),
    (re.compile(r"dr\."), "doctor"),
    (re.compile(r"m\.d\."), "md"),
    (re.compile(r"admission date:"), ""),
    (re.compile(r"discharge date:"), ""),
    (re.compile(r"--|__|=="), ""),
]
_PLACEHOLDER = re.compile(r"\[\*\*.*?\*\*\]|_{3,}", re.DOTALL)
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
    for pattern, replacement in _HUANG2019:
        value = pattern.sub(replacement, value)
    return value


def _clean_clinical(text: Any) -> str:
    if is_missing(text):
        return ""
    value = _PLACEHOLDER.sub(" ", str(text))
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

    >>> sentences("Pt stable. BP ok. He was discharged home with his family today.")
    ['Pt stable. BP ok.', 'He was discharged home with his family today.']
    >>> sentences(None), sentences("   ")
    ([], [])
    """
    if is_missing(text) or not str(text).strip():
        return []
    segments: list[str] = []
    for sent in _sentencizer()(str(text)).sents:
        piece = sent.text.strip()
        if not piece:
            continue
        if segments and len(piece) < MIN_SEGMENT_CHARS:
            segments[-1] = f"{segments[-1]} {piece}"
        else:
            segments.append(piece)
    return segments
