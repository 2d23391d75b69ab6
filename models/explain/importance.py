"""Which tokens raised a chunk's score: integrated gradients, gradient x input, attention rollout.

Attention says where the model looked, not what moved its output. The gradient methods attribute the
chunk's log-odds (the logit of the reference one-label model) to its input tokens through the word
embeddings ``x`` (position and segment embeddings are added inside the model and not attributed):

- ``gradient_x_input``: ``|x . d logit / d x|`` per token: one forward and backward pass; a local,
  first-order picture. Only its magnitude is reported: its sign is not trustworthy through BERT's
  embedding LayerNorm (on the planted-word test model the deciding word gets a large *negative*
  ``x . grad`` although it raises the score), so it says how much a word matters, not which way.
- ``integrated_gradients`` (Sundararajan et al., 2017; the default): ``(x - x0) . mean over the
  straight path from x0 to x of d logit / d x``, with the baseline ``x0`` the ``[PAD]`` embedding at
  every word position (``[CLS]`` and ``[SEP]`` kept). The weights add up to ``logit(x) - logit(x0)``
  (completeness), so they are in log-odds units: positive raised the score, negative lowered it.
  ``delta`` reports how far the sum is from that difference. The path integral is a midpoint sum
  over ``steps`` segments, refined where the output jumps (:func:`path_segments`: small,
  over-confident models switch within a sliver of the path, which plain uniform steps miss); a
  ``|delta|`` still large against the logit difference means "raise ``steps``".
- ``rollout``: row ``[CLS]`` of attention rollout (:mod:`notestream.models.explain.attention`); unsigned.

:func:`merge_wordpieces` sums the weights of a word's WordPiece pieces back into the word:

>>> merge_wordpieces(["[CLS]", "pul", "##mon", "##ary", "edema", "[SEP]"], [0.0, 0.5, 0.25, 0.25, -1.0, 0.0])
[('pulmonary', 1.0), ('edema', -1.0)]
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from notestream.models.explain.attention import attention_maps, probability_of
from notestream.models.explain.errors import ExplainError
from notestream.models.explain.methods import METHODS

SPECIAL_TOKENS = frozenset({"[CLS]", "[SEP]", "[PAD]"})


@dataclass(frozen=True)
class TokenImportance:
    """Per-token weights of one chunk. Holds note text (the tokens): never log it."""

    method: str
    tokens: list[str]
    weights: list[float]
    probability: float
    delta: float | None = None  # integrated gradients: sum(weights) - (logit(x) - logit(x0))

    @property
    def signed(self) -> bool:
        """Whether a weight's sign says which way the token moved the score (integrated gradients)."""
        return self.method == "integrated_gradients"

    def words(self) -> list[tuple[str, float]]:
        """The weights merged back into words (pieces summed), special tokens left out."""
        return merge_wordpieces(self.tokens, self.weights)

    def top(self, k: int = 10) -> list[tuple[str, float]]:
        """The ``k`` words with the largest weights (most raising the score first)."""
        return sorted(self.words(), key=lambda item: item[1], reverse=True)[:k]

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict: method, probability, (token, weight) pairs and (word, weight) pairs."""
        return {
            "method": self.method,
            "signed": self.signed,
            "probability": self.probability,
            "delta": self.delta,
            "tokens": [[t, w] for t, w in zip(self.tokens, self.weights, strict=True)],
            "words": [[t, w] for t, w in self.words()],
        }


def merge_wordpieces(tokens: list[str], weights: list[float]) -> list[tuple[str, float]]:
    """Join ``##`` continuation pieces to their word and add their weights; drop special tokens."""
    if len(tokens) != len(weights):
        raise ExplainError("tokens and weights differ in length; they must come from the same chunk.")
    words: list[tuple[str, float]] = []
    for token, weight in zip(tokens, weights, strict=True):
        if token in SPECIAL_TOKENS:
            continue
        if token.startswith("##") and words:
            word, total = words[-1]
            words[-1] = (word + token[2:], total + float(weight))
        else:
            words.append((token, float(weight)))
    return words


def log_odds(logits: torch.Tensor) -> torch.Tensor:
    """The positive class's log-odds from logits ``(B, labels)``: the logit itself for one label."""
    if logits.shape[-1] == 1:
        return logits[..., 0]
    return logits[..., -1] - torch.logsumexp(logits[..., :-1], dim=-1)


def _special_mask(tokens: list[str], device: torch.device) -> torch.Tensor:
    return torch.tensor([t in SPECIAL_TOKENS for t in tokens], device=device)


def token_importance(
    model: Any,
    input_ids: list[int],
    tokens: list[str],
    *,
    method: str = "integrated_gradients",
    steps: int = 32,
    batch_size: int = 8,
) -> TokenImportance:
    """Weight every token of one chunk by ``method`` (see the module docstring)."""
    if method not in METHODS:
        raise ExplainError(f"Unknown importance method {method!r}; choose one of {', '.join(METHODS)}.")
    if len(input_ids) != len(tokens):
        raise ExplainError("input_ids and tokens differ in length; build both with prepare_chunk().")
    if method == "rollout":
        maps = attention_maps(model, input_ids, tokens)
        weights = maps.rollout()[0]
        weights = np.where(_special_mask(tokens, torch.device("cpu")).numpy(), 0.0, weights)
        return TokenImportance(method, list(tokens), [float(w) for w in weights], maps.probability)
    if steps < 1 or batch_size < 1:
        raise ExplainError("steps and batch_size must be at least 1.")
    model.eval()
    device = next(model.parameters()).device
    ids = torch.tensor([input_ids], device=device)
    mask = torch.ones_like(ids)
    embed = model.get_input_embeddings()
    with torch.no_grad():
        x = embed(ids)  # (1, T, D)
        probability = float(probability_of(model(input_ids=ids, attention_mask=mask).logits)[0])
    if method == "gradient_x_input":
        grads = _gradients(model, x, mask)
        attribution = (x * grads).sum(dim=-1)[0].abs()
    else:
        pad_id = getattr(model.config, "pad_token_id", None) or 0
        special = _special_mask(tokens, device)
        with torch.no_grad():
            x0 = embed(torch.where(special, ids[0], torch.full_like(ids[0], pad_id)))[None]

        def batched(alphas: np.ndarray, grads: bool) -> torch.Tensor:
            parts = []
            for start in range(0, len(alphas), batch_size):
                a = torch.tensor(alphas[start : start + batch_size], device=device, dtype=x.dtype)[
                    :, None, None
                ]
                path = x0 + a * (x - x0)  # (b, T, D)
                rows = mask.expand(len(a), -1)
                if grads:
                    parts.append(_gradients(model, path, rows))
                else:
                    with torch.no_grad():
                        parts.append(log_odds(model(inputs_embeds=path, attention_mask=rows).logits))
            return torch.cat(parts)

        mids, widths = path_segments(lambda a: batched(a, False).float().cpu().numpy(), steps)
        weights_along = torch.tensor(widths, device=device, dtype=x.dtype)[:, None, None]
        total = (batched(mids, True) * weights_along).sum(dim=0, keepdim=True)  # (1, T, D)
        attribution = ((x - x0) * total).sum(dim=-1)[0]
        with torch.no_grad():
            gap = log_odds(model(inputs_embeds=x, attention_mask=mask).logits)
            gap = gap - log_odds(model(inputs_embeds=x0, attention_mask=mask).logits)
        delta = float(attribution.sum() - gap[0])
        return TokenImportance(
            method, list(tokens), [float(w) for w in attribution.cpu()], probability, delta
        )
    weights = [float(w) for w in attribution.float().cpu()]
    return TokenImportance(method, list(tokens), weights, probability)


def _gradients(model: Any, embeddings: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """d log-odds / d embeddings for a batch of embedded inputs ``(B, T, D)``."""
    with torch.enable_grad():
        inputs = embeddings.detach().requires_grad_(True)
        out = model(inputs_embeds=inputs, attention_mask=mask)
        (grads,) = torch.autograd.grad(log_odds(out.logits).sum(), inputs)
    return grads.detach()


def path_segments(
    output: Callable[[np.ndarray], np.ndarray],
    steps: int,
    *,
    rounds: int = 8,
    parts: int = 8,
    jump: float = 0.2,
) -> tuple[np.ndarray, np.ndarray]:
    """Midpoints and widths of the segments of the path ``[0, 1]`` that integrated gradients sample.

    ``steps`` equal segments; then, found with forward passes only, the segment that holds the largest
    part of the output's total variation along the path is split into ``parts`` equal segments while
    that part is over ``jump``, at most ``rounds`` times (so at most ``steps + rounds * (parts - 1)``
    gradients): a model whose output jumps within a sliver of the path gets its gradients sampled
    there, and a smooth model keeps the plain midpoint rule. ``output`` maps path positions to outputs.

    >>> mids, widths = path_segments(lambda a: (a > 0.613).astype(float), 4, rounds=2, parts=4)
    >>> round(float(widths.sum()), 12), len(mids), float(widths.min())
    (1.0, 10, 0.015625)
    >>> len(path_segments(lambda a: a, 8)[0])  # smooth: no segment holds over a fifth
    8
    """
    edges = np.linspace(0.0, 1.0, steps + 1)
    values = np.asarray(output(edges), dtype=np.float64)
    for _ in range(rounds):
        change = np.abs(np.diff(values))
        variation = change.sum()
        worst = int(change.argmax())
        if parts < 2 or variation <= 1e-12 or change[worst] <= jump * variation:
            break
        inner = np.linspace(edges[worst], edges[worst + 1], parts + 1)[1:-1]
        edges = np.concatenate([edges[: worst + 1], inner, edges[worst + 1 :]])
        values = np.concatenate(
            [values[: worst + 1], np.asarray(output(inner), dtype=np.float64), values[worst + 1 :]]
        )
    return (edges[:-1] + edges[1:]) / 2.0, np.diff(edges)
