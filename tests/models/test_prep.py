"""note_chunks: the one note -> chunk texts function."""

from __future__ import annotations

from pathlib import Path

import pytest

from notestream.models.checkpoint import load_model_folder
from notestream.models.chunking import chunk_words
from notestream.models.prep import note_chunks
from notestream.models.spec import Chunking, ModelSpec
from notestream.models.text import clean


@pytest.mark.parametrize("mode", ["huang2019", "clinical"])
def test_word_chunks_are_the_cleaned_reference_chunks(mode: str, tiny_corpus: list[str]) -> None:
    spec = ModelSpec(cleaning=mode)
    note = " ".join(tiny_corpus[:20])
    assert note_chunks(note, spec) == chunk_words(clean(note, mode))
    assert len(note_chunks(note, spec)) > 2


@pytest.mark.parametrize("text", [None, float("nan"), "", "ten words " * 5])
def test_notes_of_ten_words_or_fewer_give_no_chunk(text: object) -> None:
    assert note_chunks(text, ModelSpec()) == []


def test_token_windows_fit_the_model_and_cover_the_note(tiny_model_dir: Path, tiny_corpus: list[str]) -> None:
    tok = load_model_folder(tiny_model_dir).tokenizer
    spec = ModelSpec(cleaning="clinical", chunking=Chunking(kind="tokens", stride=96), max_length=130)
    note = " ".join(tiny_corpus[:10])
    chunks = note_chunks(note, spec, tok)
    n_tokens = len(tok(clean(note, "clinical"), add_special_tokens=False)["input_ids"])
    assert len(chunks) == 1 + -(-(n_tokens - 128) // 96)
    for chunk in chunks:
        assert len(tok(chunk, add_special_tokens=False)["input_ids"]) <= 128
    cleaned = clean(note, "clinical")
    assert cleaned.startswith(chunks[0])
    assert cleaned.endswith(chunks[-1])


def test_token_windows_need_the_tokenizer() -> None:
    with pytest.raises(ValueError, match="tokenizer"):
        note_chunks("some text " * 20, ModelSpec(chunking=Chunking(kind="tokens")))


def test_a_five_megabyte_note_is_chunked_in_one_pass() -> None:
    note = ("Pt given lasix 40 mg [**Name**] Dr. Who M.D. -- 98.6 ok\n" * 90_000)[: 5 * 1024 * 1024]
    for mode in ("huang2019", "clinical"):
        chunks = note_chunks(note, ModelSpec(cleaning=mode))
        words = clean(note, mode).split()
        assert len(chunks) == len(words) // 318 + (1 if len(words) % 318 > 10 else 0)
        assert chunks[0].split() == words[:318]
