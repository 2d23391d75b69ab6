"""Reference word chunks and token windows."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from notestream.models.chunking import chunk_token_windows, chunk_words


def words(n: int) -> str:
    return " ".join(f"w{i}" for i in range(n))


@pytest.mark.parametrize(
    ("n", "sizes"),
    [
        (0, []),
        (1, []),
        (10, []),
        (11, [11]),
        (318, [318]),
        (319, [318]),
        (328, [318]),
        (329, [318, 11]),
        (636, [318, 318]),
        (647, [318, 318, 11]),
    ],
)
def test_reference_chunk_sizes(n: int, sizes: list[int]) -> None:
    assert [len(c.split()) for c in chunk_words(words(n))] == sizes


def test_chunks_split_on_any_whitespace_and_keep_word_order() -> None:
    text = "a\tb\n\nc  d\r\ne " * 10
    chunks = chunk_words(text, size=7, min_tail=2)
    assert len(text.split()) == 50
    assert " ".join(chunks).split() == text.split()[:49]  # 7 chunks of 7; the 1-word tail is dropped
    assert all("  " not in c and "\t" not in c and "\n" not in c for c in chunks)


def test_unicode_words_are_words() -> None:
    text = " ".join(["café", "naïve", "½", "°C", "日本"] * 70)
    chunks = chunk_words(text)
    assert [len(c.split()) for c in chunks] == [318, 32]
    assert chunks[0].split()[:5] == ["café", "naïve", "½", "°C", "日本"]


def test_five_megabyte_note_chunks_quickly() -> None:
    text = ("patient given lasix 40 mg iv overnight " * 140_000)[: 5 * 1024 * 1024]
    chunks = chunk_words(text)
    n = len(text.split())
    assert len(chunks) == n // 318 + (1 if n % 318 > 10 else 0)


@given(
    st.lists(st.text(alphabet="abcé½", min_size=1, max_size=5), max_size=900),
    st.integers(1, 400),
    st.integers(0, 50),
)
@settings(max_examples=200)
def test_chunks_rejoin_to_the_words_less_a_dropped_short_tail(
    tokens: list[str], size: int, min_tail: int
) -> None:
    text = " ".join(tokens)
    chunks = chunk_words(text, size=size, min_tail=min_tail)
    rejoined = " ".join(chunks).split()
    original = text.split()
    assert original[: len(rejoined)] == rejoined
    dropped = len(original) - len(rejoined)
    assert dropped == 0 or (dropped <= min_tail and dropped == len(original) % size)
    assert all(len(c.split()) == size for c in chunks[:-1])


@given(st.integers(0, 3000), st.integers(3, 600), st.data())
@settings(max_examples=200)
def test_token_windows_cover_every_token_and_never_exceed_the_model(
    n: int, max_length: int, data: st.DataObject
) -> None:
    stride = data.draw(st.integers(1, max_length - 2))
    ids = list(range(n))
    windows = chunk_token_windows(ids, max_length=max_length, stride=stride)
    assert all(1 <= len(w) <= max_length - 2 for w in windows)
    assert sorted({i for w in windows for i in w}) == ids
    assert all(w == list(range(w[0], w[0] + len(w))) for w in windows)  # contiguous
    if windows:
        assert windows[-1][-1] == n - 1
        assert [w[0] for w in windows] == [k * stride for k in range(len(windows))]


def test_token_windows_reject_a_stride_that_would_skip_tokens() -> None:
    with pytest.raises(ValueError, match="Stride"):
        chunk_token_windows(list(range(100)), max_length=12, stride=11)
    with pytest.raises(ValueError, match="Stride"):
        chunk_token_windows(list(range(100)), max_length=12, stride=0)
