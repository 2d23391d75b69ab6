"""Chunks of cleaned text: the reference 318-word chunks and token windows with a stride.

Reference chunks (docs/reference.md §4): ``words = text.split()``; ``len(words) // size`` full chunks, and
the remaining ``r`` words form one more chunk only if ``r > min_tail``. A text of ``min_tail`` words or
fewer gives no chunk at all.

>>> text = " ".join(f"w{i}" for i in range(329))
>>> [len(c.split()) for c in chunk_words(text)]
[318, 11]
>>> chunk_words(" ".join(["w"] * 10))
[]
>>> chunk_token_windows(list(range(10)), max_length=6, stride=3)
[[0, 1, 2, 3], [3, 4, 5, 6], [6, 7, 8, 9]]
"""

from __future__ import annotations

from collections.abc import Sequence

REFERENCE_SIZE = 318
REFERENCE_MIN_TAIL = 10
SPECIAL_TOKENS_PER_WINDOW = 2  # [CLS] and [SEP]


def chunk_words(text: str, size: int = REFERENCE_SIZE, min_tail: int = REFERENCE_MIN_TAIL) -> list[str]:
    """Split ``text`` into chunks of ``size`` words joined by single spaces (docs/reference.md §4).

    >>> chunk_words("a b c d e", size=2, min_tail=0)
    ['a b', 'c d', 'e']
    >>> chunk_words("a b c d e", size=2, min_tail=1)
    ['a b', 'c d']
    """
    if size < 1:
        raise ValueError(f"Chunk size must be at least 1 word, not {size}.")
    words = text.split()
    full = len(words) // size
    chunks = [" ".join(words[i * size : (i + 1) * size]) for i in range(full)]
    tail = words[full * size :]
    if len(tail) > min_tail:
        chunks.append(" ".join(tail))
    return chunks


def window_size(max_length: int) -> int:
    """Content tokens of one window: the model's maximum length less [CLS] and [SEP].

    >>> window_size(512)
    510
    """
    size = max_length - SPECIAL_TOKENS_PER_WINDOW
    if size < 1:
        raise ValueError(f"max_length {max_length} leaves no room for tokens besides [CLS] and [SEP].")
    return size


def window_starts(n_tokens: int, max_length: int, stride: int) -> list[int]:
    """Start offsets of the windows over ``n_tokens`` content tokens (see :func:`chunk_token_windows`).

    >>> window_starts(0, 512, 384), window_starts(510, 512, 384), window_starts(511, 512, 384)
    ([], [0], [0, 384])
    """
    size = window_size(max_length)
    if not 1 <= stride <= size:
        raise ValueError(
            f"Stride {stride} must be between 1 and max_length - 2 = {size}, or tokens would be skipped."
        )
    starts: list[int] = []
    start = 0
    while start < n_tokens:
        starts.append(start)
        if start + size >= n_tokens:
            break
        start += stride
    return starts


def chunk_token_windows(ids: Sequence[int], max_length: int, stride: int) -> list[list[int]]:
    """Windows of at most ``max_length - 2`` content token ids, starting every ``stride`` tokens.

    Every token lies in at least one window; consecutive windows overlap by ``max_length - 2 - stride``
    tokens; the last window ends at the last token. No ids give no window. Add [CLS]/[SEP] afterwards.

    >>> chunk_token_windows([1, 2, 3], max_length=512, stride=384)
    [[1, 2, 3]]
    >>> chunk_token_windows([], max_length=512, stride=384)
    []
    """
    size = window_size(max_length)
    return [list(ids[start : start + size]) for start in window_starts(len(ids), max_length, stride)]
