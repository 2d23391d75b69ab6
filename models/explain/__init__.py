"""Explanations of a chunk classifier's scores: attention maps, token importances, pictures.

::

    inputs.py      prepare_chunk: one chunk of a text, cleaned, chunked and tokenized as when scored
    attention.py   eager_copy, attention_maps (layers, heads, T, T), rollout
    importance.py  token_importance (integrated gradients, gradient x input, rollout), merge_wordpieces
    render.py      heatmaps and highlighted text (PNG, HTML), matplotlib without pyplot
    report.py      explain_text and write_explanation: the files `notestream explain --text` writes

Everything here holds note text in memory and writes it only where the caller says; nothing is logged.
Evidence across an admission's notes (from the risk store) lives in ``stream/evidence.py``.
"""

from notestream.models.explain.attention import AttentionMaps, attention_maps, eager_copy, rollout
from notestream.models.explain.errors import ExplainError
from notestream.models.explain.importance import METHODS, TokenImportance, merge_wordpieces, token_importance
from notestream.models.explain.inputs import ChunkInput, prepare_chunk
from notestream.models.explain.report import TextExplanation, explain_text, write_explanation

__all__ = [
    "METHODS",
    "AttentionMaps",
    "ChunkInput",
    "ExplainError",
    "TextExplanation",
    "TokenImportance",
    "attention_maps",
    "eager_copy",
    "explain_text",
    "merge_wordpieces",
    "prepare_chunk",
    "rollout",
    "token_importance",
    "write_explanation",
]
