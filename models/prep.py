"""The one function that turns a note into chunk texts, as the model was trained.

Training, offline scoring and the stream all call :func:`note_chunks`, so a note always gives the same
chunks wherever it is scored, and streamed scores equal offline scores.

>>> from notestream.models.spec import ModelSpec
>>> note = "Admission Date: [**2150-1-1**]\\n" + "patient was given lasix " * 100
>>> chunks = note_chunks(note, ModelSpec())
>>> [len(c.split()) for c in chunks]
[318, 82]
>>> note_chunks(None, ModelSpec())
[]
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from notestream.models.chunking import chunk_words, window_size, window_starts
from notestream.models.text import clean
from notestream.models.thread_copies import thread_copy

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

    from notestream.models.spec import ModelSpec


def note_chunks(text: Any, spec: ModelSpec, tokenizer: PreTrainedTokenizerBase | None = None) -> list[str]:
    """Clean ``text`` with the spec's mode and chunk it per ``spec.chunking``.

    ``words`` chunking (the reference) needs no tokenizer. ``tokens`` chunking needs the model's
    tokenizer: the cleaned text is tokenized once and each window of ``max_length - 2`` tokens (every
    ``stride`` tokens, the stride capped at the window) becomes the substring of the cleaned text it
    covers, so the classifier re-tokenizes it to the same tokens (a window that starts inside a word
    can re-tokenize a little differently at its first token).
    """
    cleaned = clean(text, spec.cleaning)
    chunking = spec.chunking
    if chunking.kind == "words":
        return chunk_words(cleaned, chunking.size, chunking.min_tail)
    if tokenizer is None:
        raise ValueError(
            "This model chunks notes by token windows; pass its tokenizer to note_chunks "
            "(LoadedModel.tokenizer)."
        )
    if not cleaned.strip():
        return []
    encoded = thread_copy(tokenizer)(  # this thread's own copy: see notestream.models.thread_copies
        cleaned, add_special_tokens=False, return_offsets_mapping=True, return_attention_mask=False
    )
    offsets = encoded["offset_mapping"]
    stride = min(chunking.stride, window_size(spec.max_length))
    size = window_size(spec.max_length)
    chunks = []
    for start in window_starts(len(offsets), spec.max_length, stride):
        last = min(start + size, len(offsets)) - 1
        chunks.append(cleaned[offsets[start][0] : offsets[last][1]])
    return chunks
