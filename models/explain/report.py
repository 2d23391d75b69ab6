"""Explain one chunk of a text and write the pictures and JSON where the caller says.

:func:`explain_text` cleans and chunks the text as the model does, picks one chunk, and computes its
attention maps (on an eager-attention copy) and token importances. :func:`write_explanation` writes:

- ``attention_layer{L}_head{H}.png``: one head's map; ``attention_layer{L}_heads.png``: every head of
  the layer as a grid; ``attention_layer{L}_mean.png``: the mean over the layer's heads;
  ``attention_rollout.png``: attention rollout through all layers;
- ``importance.png`` and ``importance.html``: the chunk's words highlighted by importance;
- ``explanation.json``: the chunk's probability, which chunk it is, and the (token, weight) and
  (word, weight) lists.

These files hold note text. Nothing is written anywhere else, and nothing is logged.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from notestream.models.explain.attention import AttentionMaps, attention_maps
from notestream.models.explain.errors import ExplainError
from notestream.models.explain.importance import TokenImportance, token_importance
from notestream.models.explain.inputs import ChunkInput, prepare_chunk
from notestream.models.explain.render import (
    highlighted_html,
    plot_attention,
    plot_head_grid,
    plot_highlighted_text,
)
from notestream.models.spec import ModelSpec


@dataclass(frozen=True)
class TextExplanation:
    """Attention maps and token importances of one chunk. Holds note text: never log it."""

    chunk: ChunkInput
    maps: AttentionMaps
    importance: TokenImportance

    def to_json(self, *, layer: int | None = None, head: int | None = None) -> dict[str, Any]:
        """What ``explanation.json`` holds."""
        return {
            "chunk": self.chunk.chunk,
            "n_chunks": self.chunk.n_chunks,
            "truncated": self.chunk.truncated,
            "n_tokens": len(self.chunk.input_ids),
            "layers": self.maps.n_layers,
            "heads": self.maps.n_heads,
            "layer": layer,
            "head": head,
            "probability": self.maps.probability,
            "importance": self.importance.to_json(),
        }


def explain_text(
    model: Any,
    tokenizer: Any,
    spec: ModelSpec,
    text: str,
    *,
    chunk: int = 0,
    method: str = "integrated_gradients",
    steps: int = 32,
) -> TextExplanation:
    """Attention maps and token importances of chunk ``chunk`` of ``text`` under this model."""
    positions = int(getattr(model.config, "max_position_embeddings", spec.max_length))
    prepared = prepare_chunk(text, spec, tokenizer, chunk=chunk, max_length=min(spec.max_length, positions))
    maps = attention_maps(model, prepared.input_ids, prepared.tokens)
    importance = token_importance(model, prepared.input_ids, prepared.tokens, method=method, steps=steps)
    return TextExplanation(chunk=prepared, maps=maps, importance=importance)


def write_explanation(
    explanation: TextExplanation, out: Path, *, layer: int | None = None, head: int = 0
) -> list[Path]:
    """Write the explanation's pictures and JSON into ``out`` (created if missing); return the paths.

    ``layer`` defaults to the last layer; negative values count from the end.
    """
    maps = explanation.maps
    chosen = maps.n_layers - 1 if layer is None else layer
    if chosen < 0:
        chosen += maps.n_layers
    maps.check(chosen, head)
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ExplainError(f"{out} is a file; give --out a folder (it is created when missing).")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ExplainError(f"Cannot create the output folder {out}: {exc.strerror}.") from exc
    tokens = maps.tokens
    where = explanation.chunk.describe()
    p = maps.probability
    imp = explanation.importance
    words = imp.words()
    how = "red raised the score, blue lowered it" if imp.signed else "darker = more important"
    caption = f"{imp.method.replace('_', ' ')} (p = {p:.3f}); {how}"
    paths = [
        plot_attention(
            maps.head(chosen, head),
            tokens,
            out / f"attention_layer{chosen}_head{head}.png",
            title=f"layer {chosen}, head {head} (p = {p:.3f})",
        ),
        plot_head_grid(
            maps.weights[chosen],
            tokens,
            out / f"attention_layer{chosen}_heads.png",
            title=f"layer {chosen}: all {maps.n_heads} heads",
        ),
        plot_attention(
            maps.mean(chosen),
            tokens,
            out / f"attention_layer{chosen}_mean.png",
            title=f"layer {chosen}, mean over {maps.n_heads} heads",
        ),
        plot_attention(maps.rollout(), tokens, out / "attention_rollout.png", title="attention rollout"),
        plot_highlighted_text(words, out / "importance.png", title=f"{where} {caption}"),
    ]
    html_path = out / "importance.html"
    html_path.write_text(highlighted_html(words, title=f"{where} {caption}") + "\n", encoding="utf-8")
    json_path = out / "explanation.json"
    json_path.write_text(
        json.dumps(explanation.to_json(layer=chosen, head=head), indent=2) + "\n", encoding="utf-8"
    )
    return [*paths, html_path, json_path]
