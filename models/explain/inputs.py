"""The one chunk an explanation looks at: the text cleaned and chunked exactly as the model scores it.

A model scores a note chunk by chunk (``notestream.models.prep.note_chunks``: the model's cleaning mode, then its
chunking), each chunk tokenized into at most ``spec.max_length`` WordPiece tokens (``[CLS] ... [SEP]``,
the head kept). Attention maps and token importances are per chunk, so :func:`prepare_chunk` picks one
chunk of a text and says how many there were and whether the tokenizer cut its tail.

>>> split_tokens([101, 7, 8, 9, 102], max_length=4, cls_id=101, sep_id=102)
([101, 7, 8, 102], True)
>>> split_tokens([101, 7, 102], max_length=512, cls_id=101, sep_id=102)
([101, 7, 102], False)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from notestream.models.explain.errors import ExplainError
from notestream.models.prep import note_chunks
from notestream.models.spec import ModelSpec
from notestream.models.text import clean


@dataclass(frozen=True)
class ChunkInput:
    """One tokenized chunk of a text, ready for the model. Holds note text: never log it."""

    input_ids: list[int]  # [CLS] ... [SEP], at most spec.max_length ids
    tokens: list[str]  # the WordPiece token of each id
    chunk: int  # index of this chunk among the text's chunks
    n_chunks: int  # chunks the model scores for this text (0: too short, the model would skip it)
    truncated: bool  # the chunk had more tokens than fit and lost its tail, as when it is scored

    def describe(self) -> str:
        """One sentence about which part of the text is explained (no text in it)."""
        if self.n_chunks == 0:
            where = "the whole cleaned text (too short for the model's chunking, which would skip it)"
        else:
            where = f"chunk {self.chunk + 1} of {self.n_chunks}"
        cut = ", cut to the model's maximum length" if self.truncated else ""
        return f"Explaining {where}: {len(self.input_ids)} WordPiece tokens{cut}."


def split_tokens(ids: list[int], *, max_length: int, cls_id: int, sep_id: int) -> tuple[list[int], bool]:
    """Keep the head of ``[CLS] ... [SEP]`` ids within ``max_length``; say whether anything was cut."""
    if len(ids) <= max_length:
        return list(ids), False
    body = [i for i in ids if i not in (cls_id, sep_id)]
    return [cls_id, *body[: max_length - 2], sep_id], True


def prepare_chunk(
    text: str, spec: ModelSpec, tokenizer: Any, *, chunk: int = 0, max_length: int | None = None
) -> ChunkInput:
    """Clean and chunk ``text`` as the model does, then tokenize chunk number ``chunk`` (from 0).

    ``max_length`` (default ``spec.max_length``) is the most tokens a chunk keeps, as when scored
    (``LoadedModel.max_length``: the spec's, capped by the model's position embeddings).

    A text too short to make any chunk (the reference drops 10 words or fewer) is explained whole,
    cleaned, so short examples still work; :meth:`ChunkInput.describe` says so.
    """
    if chunk < 0:
        raise ExplainError(f"Chunk index {chunk} is negative; chunks are numbered from 0.")
    chunks = note_chunks(text, spec, tokenizer)
    if chunks:
        if chunk >= len(chunks):
            raise ExplainError(
                f"The text has {len(chunks)} chunk(s) under this model's chunking; "
                f"choose a chunk index from 0 to {len(chunks) - 1}."
            )
        chosen = chunks[chunk]
    else:
        if chunk != 0:
            raise ExplainError("The text is too short to make chunks; explain it whole with chunk 0.")
        chosen = clean(text, spec.cleaning)
    try:
        ids = list(tokenizer(chosen, add_special_tokens=True, truncation=False)["input_ids"])
    except Exception as exc:  # tokenizers raise plain exceptions
        raise ExplainError(f"The model's tokenizer could not encode the text: {type(exc).__name__}.") from exc
    cls_id, sep_id = tokenizer.cls_token_id, tokenizer.sep_token_id
    if cls_id is None or sep_id is None:
        raise ExplainError(
            "The model's tokenizer has no [CLS]/[SEP] tokens; explanations need a BERT tokenizer."
        )
    ids, truncated = split_tokens(ids, max_length=max_length or spec.max_length, cls_id=cls_id, sep_id=sep_id)
    if len(ids) <= 2:
        raise ExplainError("The text has no words left after cleaning; give a text with words in it.")
    tokens = list(tokenizer.convert_ids_to_tokens(ids))
    return ChunkInput(input_ids=ids, tokens=tokens, chunk=chunk, n_chunks=len(chunks), truncated=truncated)
