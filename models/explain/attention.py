"""Self-attention maps of a BERT chunk classifier, and attention rollout.

Fused attention kernels (``sdpa``, flash) never materialise the attention weights, so
:func:`eager_copy` gives an eager-attention copy of a served model (same weights, same outputs) that
returns them. :func:`attention_maps` runs one chunk and keeps every layer's weights as one array of
shape ``(layers, heads, T, T)``: row ``i`` of a head is how token ``i`` spreads its attention over the
``T`` tokens, so every row sums to 1.

Attention rollout (Abnar & Zuidema, 2020) follows attention through the layers: each layer's mean
over heads is mixed with the identity for the residual connection, rows renormalised, and the layers
multiplied. Row 0 of the result (``[CLS]``, which the classifier reads) spreads over the input tokens.

>>> import numpy as np
>>> uniform = np.full((2, 1, 3, 3), 1 / 3)   # 2 layers, 1 head, 3 tokens
>>> rollout(uniform).round(3)[0].tolist()
[0.5, 0.25, 0.25]
>>> bool(np.allclose(rollout(uniform).sum(axis=-1), 1.0))
True
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from notestream.models.explain.errors import ExplainError


def eager_copy(model: Any) -> Any:
    """The model itself when it already uses eager attention, else an eager-attention copy in eval mode.

    The copy shares nothing with the served model (a deep copy), so the worker's model is untouched.
    """
    if getattr(model.config, "_attn_implementation", "eager") == "eager":
        return model.eval()
    twin = copy.deepcopy(model)
    try:
        twin.set_attn_implementation("eager")
    except (AttributeError, ValueError) as exc:
        raise ExplainError(
            "This model cannot switch to eager attention, which attention maps need; "
            "load it with attn_implementation='eager'."
        ) from exc
    return twin.eval()


@dataclass(frozen=True)
class AttentionMaps:
    """Every layer's self-attention over one chunk, and the chunk's probability."""

    tokens: list[str]
    weights: np.ndarray  # (layers, heads, T, T); each row sums to 1
    probability: float

    @property
    def n_layers(self) -> int:
        return int(self.weights.shape[0])

    @property
    def n_heads(self) -> int:
        return int(self.weights.shape[1])

    def check(self, layer: int, head: int | None = None) -> None:
        """Raise a clear error for a layer or head the model does not have."""
        if not 0 <= layer < self.n_layers:
            raise ExplainError(
                f"Layer {layer} does not exist; this model has layers 0 to {self.n_layers - 1}."
            )
        if head is not None and not 0 <= head < self.n_heads:
            raise ExplainError(f"Head {head} does not exist; this model has heads 0 to {self.n_heads - 1}.")

    def head(self, layer: int, head: int) -> np.ndarray:
        """One head's ``(T, T)`` map."""
        self.check(layer, head)
        return self.weights[layer, head]

    def mean(self, layer: int) -> np.ndarray:
        """The mean over a layer's heads, ``(T, T)``; rows still sum to 1."""
        self.check(layer)
        return self.weights[layer].mean(axis=0)

    def rollout(self) -> np.ndarray:
        """Attention rollout through all layers, ``(T, T)``."""
        return rollout(self.weights)


def probability_of(logits: torch.Tensor) -> torch.Tensor:
    """The positive-class probability from a classifier's logits ``(B, labels)``.

    One label: sigmoid of the logit (the reference model). Two or more: softmax, last class.
    """
    if logits.shape[-1] == 1:
        return torch.sigmoid(logits[..., 0])
    return torch.softmax(logits, dim=-1)[..., -1]


def attention_maps(model: Any, input_ids: list[int], tokens: list[str]) -> AttentionMaps:
    """Run one chunk through an eager copy of ``model`` and collect all attention weights."""
    if len(input_ids) != len(tokens):
        raise ExplainError("input_ids and tokens differ in length; build both with prepare_chunk().")
    eager = eager_copy(model)
    device = next(eager.parameters()).device
    ids = torch.tensor([input_ids], device=device)
    with torch.inference_mode():
        out = eager(input_ids=ids, attention_mask=torch.ones_like(ids), output_attentions=True)
    if not out.attentions:
        raise ExplainError("The model returned no attention weights; load it with eager attention.")
    weights = torch.stack([a[0] for a in out.attentions]).float().cpu().numpy()  # (L, H, T, T)
    return AttentionMaps(
        tokens=list(tokens), weights=weights, probability=float(probability_of(out.logits)[0])
    )


def rollout(weights: np.ndarray, residual: float = 0.5) -> np.ndarray:
    """Attention rollout of ``(layers, heads, T, T)`` weights; ``residual`` is the identity's share."""
    if weights.ndim != 4 or weights.shape[-1] != weights.shape[-2]:
        raise ExplainError(f"Rollout needs weights of shape (layers, heads, T, T), not {weights.shape}.")
    size = weights.shape[-1]
    result = np.eye(size)
    for layer in weights:
        mixed = (1.0 - residual) * layer.mean(axis=0) + residual * np.eye(size)
        mixed = mixed / mixed.sum(axis=-1, keepdims=True)
        result = mixed @ result
    return result
