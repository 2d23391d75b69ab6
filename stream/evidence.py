"""Which notes and chunks make an admission's score: read from the store, never re-scored.

The admission score over ``n`` chunk probabilities is ``S = (p_max + p_sum / c) / (1 + n / c)``
(docs/reference.md §7). It is a sum of one term per chunk, so it splits exactly:

- every chunk ``i`` contributes ``(p_i / c) / (1 + n / c)``;
- the top chunk (the one holding ``p_max``) contributes ``p_max / (1 + n / c)`` on top of that.

A chunk's *share* is its contribution divided by ``S``, i.e. ``(p_i / c + [i is top] p_max) /
(p_max + p_sum / c)``; the shares of an admission's chunks add up to 1, and a note's share is the sum
of its chunks'. With ``c = 2`` and chunks ``0.9, 0.1, 0.2``: ``S = 0.6``, the top chunk holds
``(0.45 + 0.9) / 1.5 = 0.9`` of it, the others ``0.05 / 1.5`` and ``0.1 / 1.5``:

>>> [(c.note_id, c.chunk, round(c.share, 4)) for c in chunk_shares({"a": [0.9, 0.1], "b": [0.2]}, c=2.0)]
[('a', 0, 0.9), ('b', 0, 0.0667), ('a', 1, 0.0333)]

When every probability is 0 the score is 0 and no chunk has a share (all shares are 0).
Probabilities come from the store exactly as the worker wrote them; nothing here runs a model, and
nothing here reads or prints note text (the store holds none).
"""

from __future__ import annotations

import json
import math
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from notestream.models.aggregate import score_from
from notestream.stream.errors import StreamError
from notestream.stream.ids import Id, id_key
from notestream.stream.store.records import AdmissionState, NoteProbs, RiskStore


class EvidenceError(StreamError):
    """An admission's evidence cannot be read (not in the store, or no chunk held)."""


@dataclass(frozen=True)
class ChunkEvidence:
    """One chunk of one note: its probability and its share of the admission score."""

    note_id: str
    chunk: int
    probability: float
    share: float
    top: bool = False


@dataclass(frozen=True)
class NoteEvidence:
    """One live note: its best chunk and its share of the admission score (the sum of its chunks')."""

    note_id: str
    revision: int
    n_chunks: int
    p_max: float
    top_chunk: int
    share: float


@dataclass(frozen=True)
class AdmissionEvidence:
    """An admission's notes and chunks ranked by probability, with their shares of the score."""

    hadm_id: Id
    subject_id: Id | None
    c: float
    score: float
    p_max: float
    p_sum: float
    n_chunks: int
    n_notes: int
    seq: int | None
    discharged: bool
    top_note_id: str
    top_chunk: int
    notes: list[NoteEvidence] = field(default_factory=list)
    chunks: list[ChunkEvidence] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict (no note text: the store holds none)."""
        return asdict(self)


def _top_of(note_probs: Mapping[str, Sequence[float]], prefer: tuple[str, int] | None) -> tuple[str, int]:
    """The chunk holding the maximum: ``prefer`` (the store's choice) when it does, else the first
    maximum in (note_id, chunk) order."""
    p_max = max(p for probs in note_probs.values() for p in probs)
    if prefer is not None:
        note_id, chunk = prefer
        probs = note_probs.get(note_id, ())
        if 0 <= chunk < len(probs) and probs[chunk] == p_max:
            return note_id, chunk
    for note_id in sorted(note_probs):
        probs = note_probs[note_id]
        if p_max in probs:
            return note_id, list(probs).index(p_max)
    raise AssertionError("unreachable: the maximum is one of the probabilities")


def chunk_shares(
    note_probs: Mapping[str, Sequence[float]], *, c: float, top: tuple[str, int] | None = None
) -> list[ChunkEvidence]:
    """Every chunk with its share of the admission score, highest probability first.

    ``top`` names the chunk that holds ``p_max`` when several tie (the store's ``top_note_id`` and
    ``top_chunk``); ties in the ranking are broken by (note_id, chunk).

    >>> [round(c.share, 3) for c in chunk_shares({"x": [0.5]}, c=2.0)]
    [1.0]
    >>> chunk_shares({}, c=2.0)
    []
    """
    if c <= 0:
        raise EvidenceError(f"The aggregation constant c must be positive, not {c}.")
    held = {k: [float(p) for p in v] for k, v in note_probs.items() if len(v)}
    if not held:
        return []
    top_note, top_chunk = _top_of(held, top)
    p_max = held[top_note][top_chunk]
    denominator = p_max + math.fsum(p for probs in held.values() for p in probs) / c
    chunks = []
    for note_id, probs in held.items():
        for i, p in enumerate(probs):
            is_top = (note_id, i) == (top_note, top_chunk)
            part = p / c + (p_max if is_top else 0.0)
            share = part / denominator if denominator > 0 else 0.0
            chunks.append(ChunkEvidence(note_id, i, p, share, is_top))
    chunks.sort(key=lambda ch: (-ch.probability, not ch.top, ch.note_id, ch.chunk))
    return chunks


def rank_evidence(
    hadm_id: Id,
    note_probs: Mapping[str, NoteProbs],
    *,
    c: float,
    state: AdmissionState | None = None,
) -> AdmissionEvidence:
    """Rank an admission's notes and chunks from what the store holds (see the module docstring).

    The score and aggregate are recomputed from the chunk probabilities shown, so shares and score
    always agree; ``state`` supplies the store's tie-break of the top chunk, ``seq`` and discharge.
    """
    probs = {k: v.probs for k, v in note_probs.items()}
    prefer = None
    if state is not None and state.top_note_id is not None and state.top_chunk is not None:
        prefer = (state.top_note_id, state.top_chunk)
    chunks = chunk_shares(probs, c=c, top=prefer)
    if not chunks:
        raise EvidenceError(
            f"Admission {hadm_id} holds no scored chunk yet (no live note in the model's window); "
            "there is nothing to explain."
        )
    top = next(ch for ch in chunks if ch.top)
    values = [p for v in probs.values() for p in v]
    p_sum = math.fsum(values)
    notes = []
    for note_id, held in note_probs.items():
        if not held.probs:
            continue
        best = max(held.probs)
        best_chunk = top.chunk if note_id == top.note_id else list(held.probs).index(best)
        share = math.fsum(ch.share for ch in chunks if ch.note_id == note_id)
        notes.append(NoteEvidence(note_id, held.revision, len(held.probs), best, best_chunk, share))
    notes.sort(key=lambda n: (-n.p_max, n.note_id != top.note_id, n.note_id))
    return AdmissionEvidence(
        hadm_id=hadm_id,
        subject_id=state.subject_id if state is not None else None,
        c=c,
        score=score_from(top.probability, p_sum, len(values), c),
        p_max=top.probability,
        p_sum=p_sum,
        n_chunks=len(values),
        n_notes=len(notes),
        seq=state.seq if state is not None else None,
        discharged=state.discharged if state is not None else False,
        top_note_id=top.note_id,
        top_chunk=top.chunk,
        notes=notes,
        chunks=chunks,
    )


async def admission_evidence(store: RiskStore, hadm_id: Id, *, c: float) -> AdmissionEvidence:
    """Read one admission from ``store`` and rank its notes and chunks (no model is run)."""
    state = await store.state(hadm_id)
    note_probs = await store.note_probs(hadm_id)
    if state is None and not note_probs:
        raise EvidenceError(
            f"Admission {hadm_id} is not in the store (never seen, or expired after its retention); "
            "check the admission id and the store or snapshot you gave."
        )
    return rank_evidence(hadm_id, note_probs, c=c, state=state)


def _plain(value: object) -> str:
    """An id as plain plot text: matplotlib reads ``$...$`` as math, so ``$`` is escaped.

    >>> print(_plain("A$1$"))
    A\\$1\\$
    """
    return str(value).replace("$", r"\$")


def write_evidence(evidence: AdmissionEvidence, out: Path, *, top: int = 30) -> list[Path]:
    """Write ``evidence_<hadm_id>.json`` (all chunks) and ``evidence_<hadm_id>.png`` (the ``top``
    chunks as bars) into ``out`` (created if missing); returns the two paths."""
    from notestream.models.explain.render import plot_evidence

    out = Path(out)
    if out.exists() and not out.is_dir():
        raise EvidenceError(f"{out} is a file; give --out a folder (it is created when missing).")
    out.mkdir(parents=True, exist_ok=True)
    # the id escaped (no "/", no ".." path): any allowed id names a file inside ``out``
    json_path, png = (out / f"evidence_{id_key(evidence.hadm_id)}.{ext}" for ext in ("json", "png"))
    for path in (json_path, png):
        if path.is_symlink():
            raise EvidenceError(f"{path} is a symbolic link; remove it, or give --out another folder.")
    json_path.write_text(json.dumps(evidence.to_json(), indent=2) + "\n", encoding="utf-8")
    shown = evidence.chunks[:top]
    with warnings.catch_warnings():  # a glyph the font lacks (ids of any script) is drawn as a box
        warnings.filterwarnings("ignore", message="Glyph .* missing from font")
        png_path = plot_evidence(
            [f"note {_plain(ch.note_id)} / chunk {ch.chunk}" for ch in shown],
            [ch.probability for ch in shown],
            [ch.share for ch in shown],
            png,
            title=f"admission {_plain(evidence.hadm_id)}: score {evidence.score:.3f} over {evidence.n_chunks} chunks "
            f"of {evidence.n_notes} notes (c = {evidence.c:g})",
        )
    return [json_path, png_path]
