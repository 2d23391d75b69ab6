"""Explanations of a chunk classifier's scores: attention maps, token importances, pictures.

::

    inputs.py      prepare_chunk: one chunk of a text, cleaned, chunked and tokenized as when scored
    attention.py   eager_copy, attention_maps (layers, heads, T, T), rollout
    methods.py     METHODS: the importance methods by name (no torch)
    importance.py  token_importance (integrated gradients, gradient x input, rollout), merge_wordpieces
    render.py      heatmaps and highlighted text (PNG, HTML), matplotlib without pyplot
    report.py      explain_text and write_explanation: the files `notestream explain --text` writes

Everything here holds note text in memory and writes it only where the caller says; nothing is logged.
Evidence across an admission's notes (from the risk store) lives in ``stream/evidence.py``.

The names below load their module on first use (PEP 562), so ``import notestream.models.explain.methods`` (the
CLI's help) does not import torch and matplotlib.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from notestream.models.explain.attention import AttentionMaps, attention_maps, eager_copy, rollout
    from notestream.models.explain.errors import ExplainError
    from notestream.models.explain.importance import TokenImportance, merge_wordpieces, token_importance
    from notestream.models.explain.inputs import ChunkInput, prepare_chunk
    from notestream.models.explain.methods import METHODS
    from notestream.models.explain.report import TextExplanation, explain_text, write_explanation

_HOMES = {
    "AttentionMaps": "attention",
    "attention_maps": "attention",
    "eager_copy": "attention",
    "rollout": "attention",
    "ExplainError": "errors",
    "TokenImportance": "importance",
    "merge_wordpieces": "importance",
    "token_importance": "importance",
    "ChunkInput": "inputs",
    "prepare_chunk": "inputs",
    "METHODS": "methods",
    "TextExplanation": "report",
    "explain_text": "report",
    "write_explanation": "report",
}


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(import_module(f"{__name__}.{home}"), name)


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
