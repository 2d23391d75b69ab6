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
from collections.abc import Callable, Sequence
from typing import Protocol

from notestream.models.errors import BatchFailed, EngineError

log = logging.getLogger(__name__)


class Scorer(Protocol):
    """What scoring needs of :class:`notestream.models.engine.InferenceEngine`."""

    async def score(self, texts: Sequence[str], *, isolated: bool = False) -> list[float]: ...


def is_batch_failure(exc: Exception) -> bool:
    """The default test of a failure that one note may have caused: the engine's :class:`BatchFailed`."""
    return isinstance(exc, BatchFailed)


async def score_isolating(
    engine: Scorer,
    notes: Sequence[Sequence[str]],
    *,
    note_failure: Callable[[Exception], bool] = is_batch_failure,
    canary: str | None = None,
) -> list[list[float] | Exception]:
    """Chunk probabilities of each note (its chunk texts), in order; a note whose chunks fail again on
    their own gets the exception instead. A note without chunks gets ``[]``.

    ``note_failure`` says which failures a note may have caused (the others are raised: the engine or
    its device is gone, the queue is full); the stream's worker counts a tokenizer's or model's error
    too. With ``canary`` (a plain text the model always scores), the first note that fails alone is
    followed by the canary alone: if it fails too, the engine is broken, not the notes, and
    :class:`EngineError` is raised instead of blaming every note.
    """
    texts = [chunk for chunks in notes for chunk in chunks]
    if not texts:
        return [[] for _ in notes]
    try:
        probs = [float(p) for p in await engine.score(texts)]
    except Exception as exc:
        if not note_failure(exc):
            raise
        log.warning(
            "An engine call of %d chunks (%d notes) failed (%s); scoring each note on its own.",
            len(texts),
            len(notes),
            type(exc).__name__,
        )
        return await _each_alone(engine, notes, note_failure, canary)
    if len(probs) != len(texts):
        raise BatchFailed(f"The engine returned {len(probs)} probabilities for {len(texts)} chunks.")
    out: list[list[float] | Exception] = []
    i = 0
    for chunks in notes:
        out.append(probs[i : i + len(chunks)])
        i += len(chunks)
    return out


async def _each_alone(
    engine: Scorer,
    notes: Sequence[Sequence[str]],
    note_failure: Callable[[Exception], bool],
    canary: str | None,
) -> list[list[float] | Exception]:
    out: list[list[float] | Exception] = []
    checked = canary is None
    for chunks in notes:
        outcome = await _alone(engine, chunks, note_failure)
        if isinstance(outcome, Exception) and not checked:
            assert canary is not None
            if isinstance(await _alone(engine, [canary], note_failure), Exception):
                raise EngineError(
                    "The engine fails on a plain canary text too: the engine or its device is broken, "
                    "not the note."
                ) from outcome
            checked = True
        out.append(outcome)
    return out


async def _alone(
    engine: Scorer, chunks: Sequence[str], note_failure: Callable[[Exception], bool]
) -> list[float] | Exception:
    if not chunks:
        return []
    try:
        probs = [float(p) for p in await engine.score(chunks, isolated=True)]
    except Exception as exc:
        if not note_failure(exc):
            raise
        return exc
    if len(probs) != len(chunks):
        return BatchFailed(f"The engine returned {len(probs)} probabilities for {len(chunks)} chunks.")
    return probs
