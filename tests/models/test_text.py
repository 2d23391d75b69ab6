"""Cleaning modes and sentence segmentation."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from notestream.models.chunking import chunk_words
from notestream.models.text import LONG_RUN_CHARS, _sentencizer, clean, is_missing, sentences


def pandas_reference(values: list[object]) -> list[str]:
    """docs/reference.md §3 written as the reference wrote it: a pandas column, step by step."""
    col = pd.Series(values, dtype=object).fillna(" ").astype(str)
    col = col.str.replace("\n", " ", regex=False).str.replace("\r", " ", regex=False)
    col = col.str.strip().str.lower()
    for pattern, repl in [
        (r"\[(.*?)\]", ""),
        (r"[0-9]+\.", ""),
        (r"dr\.", "doctor"),
        (r"m\.d\.", "md"),
        (r"admission date:", ""),
        (r"discharge date:", ""),
        (r"--|__|==", ""),
    ]:
        col = col.str.replace(pattern, repl, regex=True)
    return col.tolist()


EDGE_TEXTS = [
    "",
    " ",
    "Admission Date: [**2150-1-1**] Discharge Date: [**2150-1-9**]",
    "T 98.6 HR 88, given 0.5 mg; 12. items",
    "Dr. Smith M.D. saw the pt.\r\nPlan: --- === ___ ok",
    "[unclosed bracket and [two] [pairs]",
    "Ünïcödé naïve café — 37.5°C ½ tab",
    "line\n\nbreaks\r\rand\ttabs",
    "a" * 50,
]


@pytest.mark.parametrize("text", EDGE_TEXTS)
def test_huang2019_equals_the_pandas_reference(text: str) -> None:
    assert clean(text) == pandas_reference([text])[0]


@given(st.text(alphabet=st.sampled_from(list("ab .:-_=[]*0123456789\n\r\tDrMAdmission")), max_size=80))
@settings(max_examples=200)
def test_huang2019_equals_the_pandas_reference_on_generated_text(text: str) -> None:
    assert clean(text) == pandas_reference([text])[0]


@pytest.mark.parametrize("missing", [None, float("nan"), np.nan, pd.NA, pd.NaT])
def test_missing_text_is_empty_in_both_modes(missing: object) -> None:
    assert is_missing(missing)
    assert clean(missing) == ""
    assert clean(missing, mode="clinical") == ""


def test_reference_flaws_are_kept_in_huang2019() -> None:
    assert clean("Temp 98.6") == "temp 6"
    assert clean("a  b") == "a  b"  # whitespace not collapsed
    assert clean("x---y") == "x-y"  # pairwise removal


def test_clinical_mode_keeps_numbers_and_removes_placeholders() -> None:
    text = "Admitted [**2150-1-1**] to [**Hospital1 18**]. T 98.6, lasix 0.5 mg (IV) [PRN]. Name: ___ .\n---"
    out = clean(text, mode="clinical")
    assert "98.6" in out
    assert "0.5 mg" in out
    assert "[prn]" in out
    assert "**" not in out
    assert "___" not in out
    assert "2150" not in out
    assert "  " not in out
    assert out == out.strip()


def test_unknown_mode_is_refused() -> None:
    with pytest.raises(ValueError, match="Unknown cleaning mode"):
        clean("x", mode="bert")


def test_five_megabyte_note_is_cleaned_quickly() -> None:
    note = ("Pt given 0.5 mg [**Name**] at 10. Dr. Who M.D. -- ok\n" * 100_000)[: 5 * 1024 * 1024]
    out = clean(note)
    assert "[" not in out
    assert "\n" not in out
    assert len(out) < len(note)
    assert len(clean(note, mode="clinical")) > 0


def test_sentences_fuse_short_segments_into_the_previous_one() -> None:
    text = "The patient was admitted with chest pain. BP ok. Troponin was negative twice overnight."
    got = sentences(text)
    assert got == [
        "The patient was admitted with chest pain. BP ok.",
        "Troponin was negative twice overnight.",
    ]
    assert all(len(s) >= 20 for s in got[1:])


def test_sentences_keep_every_character_of_content() -> None:
    text = "Ok. Fine. Patient discharged home today in stable condition! Follow up with PCP in 2 weeks?"
    assert "".join(sentences(text)).replace(" ", "") == text.replace(" ", "")


@pytest.mark.parametrize("text", [None, float("nan"), "", "   \n "])
def test_sentences_of_nothing(text: object) -> None:
    assert sentences(text) == []


# The regex implementations cleaning had before it was made linear: the oracles of the linear code on
# inputs short enough for them to be fast (on a long unclosed run of "[", "[**" or digits they take time
# quadratic in the run).
OLD_HUANG2019 = [
    (r"\[(.*?)\]", ""),
    (r"[0-9]+\.", ""),
    (r"dr\.", "doctor"),
    (r"m\.d\.", "md"),
    (r"admission date:", ""),
    (r"discharge date:", ""),
    (r"--|__|==", ""),
]


def old_huang2019(text: str) -> str:
    value = text.replace("\n", " ").replace("\r", " ").strip().lower()
    for pattern, replacement in OLD_HUANG2019:
        value = re.sub(pattern, replacement, value)
    return value


def old_clinical(text: str) -> str:
    value = re.sub(r"\[\*\*.*?\*\*\]|_{3,}", " ", text, flags=re.DOTALL)
    value = re.sub(r"(?:-{2,}|={2,}|_{2,}|\*{3,}|~{3,})", " ", value)
    return re.sub(r"\s+", " ", value).strip().lower()


def old_sentences(text: str) -> list[str]:
    segments: list[str] = []
    for sent in _sentencizer()(text).sents:
        piece = sent.text.strip()
        if piece and segments and len(piece) < 20:
            segments[-1] = f"{segments[-1]} {piece}"
        elif piece:
            segments.append(piece)
    return segments


def pieces(alphabet: str, extra: list[str], min_size: int = 0, max_size: int = 120) -> st.SearchStrategy[str]:
    return st.lists(st.sampled_from([*alphabet, *extra]), min_size=min_size, max_size=max_size).map("".join)


HOSTILE = pieces("[]*_-=~.:09 a\n\r\tdrmAD", ["[**", "**]", "dr.", "m.d.", "___"])


@given(HOSTILE)
@settings(max_examples=500)
def test_linear_cleaning_equals_the_regex_cleaning(text: str) -> None:
    assert clean(text) == old_huang2019(text)
    assert clean(text, mode="clinical") == old_clinical(text)


@given(st.text(max_size=200))
@settings(max_examples=300)
def test_linear_cleaning_equals_the_regex_cleaning_on_any_unicode(text: str) -> None:
    assert clean(text) == old_huang2019(text)
    assert clean(text, mode="clinical") == old_clinical(text)


@given(pieces("Ab. !?()[]\"'1\n", ["Dr. ", "e.g. "], max_size=LONG_RUN_CHARS // 5))
@settings(max_examples=200)
def test_sentences_equal_spacy_when_no_run_is_long(text: str) -> None:
    assert sentences(text) == old_sentences(text)


@given(pieces("a.([ ", ["[**"], min_size=LONG_RUN_CHARS, max_size=400))
@settings(max_examples=100)
def test_sentences_of_long_runs_keep_every_character(text: str) -> None:
    assert "".join(sentences(text)).replace(" ", "") == text.replace(" ", "")


ONE_MB = 1024 * 1024
K = ONE_MB // 4
# name -> (text, huang2019 cleaning, clinical cleaning): each would take hours with the regex cleaning
ADVERSARIAL = {
    "unclosed brackets": ("[" * ONE_MB, "[" * ONE_MB, "[" * ONE_MB),
    "digits": ("1" * ONE_MB, "1" * ONE_MB, "1" * ONE_MB),
    "unclosed placeholders": ("[**" * K, "[**" * K, "[**" * K),
    "brackets and newlines": ("[a\n" * K, " ".join(["[a"] * K), " ".join(["[a"] * K)),
    "short rules and placeholders": ("__[**" * K, "[**" * K, " ".join(["[**"] * K)),
}


@pytest.mark.timeout(120)
@pytest.mark.parametrize("name", sorted(ADVERSARIAL))
def test_a_megabyte_of_adversarial_text_is_cleaned_and_chunked(name: str) -> None:
    # the regex cleaning took ~64 s on 100 kB of "[" (4x per doubling: hours on 1 MB); the linear
    # cleaning finishes far inside the timeout on each of these
    text, huang2019, clinical = ADVERSARIAL[name]
    assert clean(text) == huang2019
    assert clean(text, mode="clinical") == clinical
    assert " ".join(chunk_words(clinical, size=50, min_tail=0)).split() == clinical.split()


@pytest.mark.timeout(120)
def test_sentences_of_a_long_run_without_spaces() -> None:
    # spaCy alone peels a run's prefixes one at a time: ~0.4 s for 1,000 "(" and 4x per doubling
    text = "Pt ok. " + "(" * 200_000 + " then. " + "[" * 200_000
    got = sentences(text)
    assert "".join(got).replace(" ", "") == text.replace(" ", "")
