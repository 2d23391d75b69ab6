"""Pictures of explanations: attention heatmaps (PNG) and highlighted text (PNG and an HTML snippet).

Drawn with matplotlib's object API (``Figure`` + Agg canvas: no pyplot state, no display needed).
Heatmaps use the ``Greys`` colour map, darker = more weight, with the WordPiece tokens on both axes:
rows are the attending tokens (queries), columns the tokens attended to (keys). Highlighted text
colours each word by its importance: red raised the score, blue lowered it, the stronger the colour
the larger the weight relative to the chunk's largest.

Every function writes only the path it is given; the pictures hold note text, so put them where
note text may go.

>>> word_colour(0.5, scale=1.0)
(0.84, 0.15, 0.16, 0.5)
>>> snippet = highlighted_html([("fever", 1.0), ("<b>", -0.5)], title="chunk 1")
>>> snippet.count("<span"), "&lt;b&gt;" in snippet, 'title="-0.5"' in snippet
(2, True, True)
"""

from __future__ import annotations

import html
import math
import textwrap
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

RED = (0.84, 0.15, 0.16)  # raised the score
BLUE = (0.12, 0.47, 0.71)  # lowered the score
MONO_ADVANCE = 0.602  # width of one DejaVu Sans Mono character, in ems


def _label_size(n_tokens: int) -> float:
    return float(max(2.0, min(9.0, 360.0 / max(n_tokens, 1))))


def plot_attention(matrix: np.ndarray, tokens: Sequence[str], path: Path, *, title: str) -> Path:
    """One ``(T, T)`` attention map with the tokens on both axes; returns ``path``."""
    size = len(tokens)
    side = float(min(max(4.0, 0.2 * size + 1.5), 28.0))
    fig = Figure(figsize=(side + 1.2, side))
    ax = fig.add_subplot()
    image = ax.imshow(matrix, cmap="Greys", vmin=0.0, vmax=max(float(matrix.max()), 1e-9))
    ax.set_xticks(range(size), labels=list(tokens), rotation=90, fontsize=_label_size(size))
    ax.set_yticks(range(size), labels=list(tokens), fontsize=_label_size(size))
    ax.set_xlabel("attended to")
    ax.set_ylabel("attending")
    ax.set_title(title)
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.02, label="attention weight")
    fig.savefig(path, dpi=100, bbox_inches="tight")
    return path


def plot_head_grid(layer: np.ndarray, tokens: Sequence[str], path: Path, *, title: str) -> Path:
    """All heads ``(H, T, T)`` of one layer as a grid of heatmaps; tokens shown when there are few."""
    heads, size = layer.shape[0], len(tokens)
    cols = math.ceil(math.sqrt(heads))
    rows = math.ceil(heads / cols)
    labelled = size <= 48
    panel = 3.6 if labelled else 2.6
    fig = Figure(figsize=(cols * panel, rows * panel + 0.6))
    vmax = max(float(layer.max()), 1e-9)
    for h in range(rows * cols):
        ax = fig.add_subplot(rows, cols, h + 1)
        if h >= heads:
            ax.axis("off")
            continue
        ax.imshow(layer[h], cmap="Greys", vmin=0.0, vmax=vmax)
        ax.set_title(f"head {h}", fontsize=9)
        if labelled:
            small = min(_label_size(size), 4.0)
            ax.set_xticks(range(size), labels=list(tokens), rotation=90, fontsize=small)
            ax.set_yticks(range(size), labels=list(tokens), fontsize=small)
        else:
            ax.set_xticks([])
            ax.set_yticks([])
    fig.suptitle(title)
    fig.savefig(path, dpi=100, bbox_inches="tight")
    return path


def word_colour(weight: float, *, scale: float) -> tuple[float, float, float, float]:
    """RGBA of a word: red for a positive weight, blue for a negative one, alpha = |weight| / scale."""
    base = RED if weight >= 0 else BLUE
    alpha = min(abs(weight) / scale, 1.0) if scale > 0 else 0.0
    return (*base, round(alpha, 4))


def _scale(words: Sequence[tuple[str, float]]) -> float:
    return max((abs(w) for _, w in words), default=0.0)


def plot_highlighted_text(
    words: Sequence[tuple[str, float]], path: Path, *, title: str, width: int = 88
) -> Path:
    """The words as wrapped monospace text, each on its importance colour; returns ``path``."""
    scale = _scale(words)
    lines: list[list[tuple[str, float]]] = [[]]
    used = 0
    for word, weight in words:
        word = word[:width]
        if lines[-1] and used + 1 + len(word) > width:
            lines.append([])
            used = 0
        used += len(word) + (1 if lines[-1] else 0)
        lines[-1].append((word, weight))
    font = 10.0
    char_in = font * MONO_ADVANCE / 72.0
    line_in = font * 1.9 / 72.0
    margin = 0.3
    title_lines = textwrap.wrap(title, width=int(width * 0.9)) or [""]
    head_in = 0.25 * len(title_lines) + 0.2
    fig_w = width * char_in + 2 * margin
    fig_h = len(lines) * line_in + head_in + 2 * margin
    fig = Figure(figsize=(fig_w, fig_h))
    fig.text(margin / fig_w, 1 - margin / fig_h, "\n".join(title_lines), fontsize=9, va="top")
    for row, line in enumerate(lines):
        y = 1 - (margin + head_in + (row + 0.7) * line_in) / fig_h
        col = 0
        for word, weight in line:
            x = (margin + col * char_in) / fig_w
            fig.text(
                x,
                y,
                word,
                family="DejaVu Sans Mono",
                fontsize=font,
                va="baseline",
                bbox={"facecolor": word_colour(weight, scale=scale), "edgecolor": "none", "pad": 1.0},
            )
            col += len(word) + 1
    fig.savefig(path, dpi=110)
    return path


def highlighted_html(words: Sequence[tuple[str, float]], *, title: str = "") -> str:
    """An HTML snippet of the words on their importance colours (weights in the tooltips), escaped."""
    scale = _scale(words)
    spans = []
    for word, weight in words:
        r, g, b, a = word_colour(weight, scale=scale)
        spans.append(
            f'<span style="background-color: rgba({round(r * 255)}, {round(g * 255)}, {round(b * 255)}, '
            f'{a:.2f})" title="{weight:+.4g}">{html.escape(word)}</span>'
        )
    head = f"<p><b>{html.escape(title)}</b></p>" if title else ""
    return (
        '<div class="notestream-explanation" style="font-family: monospace; line-height: 1.9">'
        + head
        + " ".join(spans)
        + "</div>"
    )


def plot_evidence(
    labels: Sequence[str],
    probabilities: Sequence[float],
    shares: Sequence[float],
    path: Path,
    *,
    title: str,
) -> Path:
    """Ranked chunks as two bar panels: each chunk's probability and its share of the score."""
    rows = len(labels)
    fig = Figure(figsize=(9.0, max(2.0, 0.32 * rows + 1.2)))
    left = fig.add_subplot(1, 2, 1)
    right = fig.add_subplot(1, 2, 2, sharey=left)
    y = np.arange(rows)
    left.barh(y, probabilities, color="0.35")
    left.set_xlim(0, 1)
    left.set_xlabel("chunk probability")
    left.set_yticks(y, labels=list(labels), fontsize=8)
    left.invert_yaxis()
    right.barh(y, shares, color="0.6")
    right.set_xlim(0, max(max(shares, default=0.0) * 1.15, 0.05))
    right.set_xlabel("share of the admission score")
    right.tick_params(labelleft=False)
    for row, share in enumerate(shares):
        right.text(share, row, f" {share:.1%}", va="center", fontsize=7)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    return path
