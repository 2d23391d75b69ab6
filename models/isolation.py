"""One failing note costs only itself: score several notes' chunks in one engine call, and when that
call fails, score each note again in batches of its own.

An engine batch fails as a whole (one bad input, a device error), and a batch mixes notes; so a failure
does not say which note is at fault. Scoring every note again, isolated (``score(..., isolated=True)``:
its chunks never share a batch with another request's), finds it. The stream and offline scoring both
use :func:`score_isolating`.

>>> import asyncio
>>> class Engine:  # fails any batch that holds the word "bad"
...     async def score(self, texts, *, isolated=False):
...         if any("bad" in t for t in texts):
...             raise BatchFailed("a bad chunk")
...         return [0.5] * len(texts)
>>> results = asyncio.run(score_isolating(Engine(), [["ok one", "ok two"], ["bad"], []]))
>>> results[0], type(results[1]).__name__, results[2]
([0.5, 0.5], 'BatchFailed', [])
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Protocol

from notestream.models.errors import BatchFailed

log = logging.getLogger(__name__)


class Scorer(Protocol):
    """What scoring needs of :class:`notestream.models.engine.InferenceEngine`."""

    async def score(self, texts: Sequence[str], *, isolated: bool = False) -> list[float]: ...


async def score_isolating(engine: Scorer, notes: Sequence[Sequence[str]]) -> list[list[float] | BatchFailed]:
    """Chunk probabilities of each note (its chunk texts), in order; a note whose chunks fail again on
    their own gets its :class:`BatchFailed` instead. A note without chunks gets ``[]``."""
    texts = [chunk for chunks in notes for chunk in chunks]
    if not texts:
        return [[] for _ in notes]
    try:
        probs = [float(p) for p in await engine.score(texts)]
    except BatchFailed:
        log.warning(
            "An engine call of %d chunks (%d notes) failed; scoring each note on its own.",
            len(texts),
            len(notes),
        )
        return [await _alone(engine, chunks) for chunks in notes]
    if len(probs) != len(texts):
        raise BatchFailed(f"The engine returned {len(probs)} probabilities for {len(texts)} chunks.")
    out: list[list[float] | BatchFailed] = []
    i = 0
    for chunks in notes:
        out.append(probs[i : i + len(chunks)])
        i += len(chunks)
    return out


async def _alone(engine: Scorer, chunks: Sequence[str]) -> list[float] | BatchFailed:
    if not chunks:
        return []
    try:
        return [float(p) for p in await engine.score(chunks, isolated=True)]
    except BatchFailed as exc:
        return exc
