"""Cleaning modes and sentence segmentation."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from notestream.models.text import clean, is_missing, sentences


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
