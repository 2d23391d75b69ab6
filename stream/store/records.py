"""What a risk store holds and returns, the :class:`RiskStore` protocol, and exact probability sums.

An admission's state is ``(p_max, p_sum, n_chunks, n_notes, seq)`` over the chunk probabilities of its
live notes. ``p_sum`` is kept exactly (as an integer count of ``2**-1200``; every finite float is one)
and rounded once when read, so it equals ``math.fsum`` of the probabilities held whatever the order of
additions, revisions and retractions, and the streamed score equals the offline one bit for bit.

>>> total = exact_add(exact_add(0, 0.1), 0.2)
>>> exact_to_float(total) == math.fsum([0.1, 0.2]), exact_to_float(exact_add(total, 0.2, -1))
(True, 0.1)
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from fractions import Fraction
from typing import Literal, Protocol, runtime_checkable

from notestream.models.aggregate import score_from
from notestream.stream.errors import StoreError
from notestream.stream.events import AdmissionEvent
from notestream.stream.ids import Id

MAX_HELD = 1000
"""The most notes one admission holds while they wait for its admission event."""
EXACT_BITS = 1200  # p * 2**1200 is an integer for every finite float p (the smallest is 2**-1074)
ApplyReason = Literal["new", "revision", "retracted", "duplicate", "stale", "conflict"]


def exact_add(total: int, p: float, sign: int = 1) -> int:
    """``total`` (in units of 2**-1200) plus ``sign * p``, exactly."""
    numerator, denominator = float(p).as_integer_ratio()
    return total + sign * (numerator << (EXACT_BITS - (denominator.bit_length() - 1)))


def exact_to_float(total: int) -> float:
    """The float nearest to an exact sum (correctly rounded, like ``math.fsum``)."""
    return float(Fraction(total, 1 << EXACT_BITS))


def check_probs(probs: Sequence[float]) -> list[float]:
    """Chunk probabilities as floats; anything not finite in [0, 1] is a caller bug.

    >>> check_probs([0.5, 1])
    [0.5, 1.0]
    """
    values = [float(p) for p in probs]
    for p in values:
        if not (math.isfinite(p) and 0.0 <= p <= 1.0):
            raise StoreError(
                f"A chunk probability must be a finite number in [0, 1], not {p!r}; check the model output."
            )
    return values


def check_revision(revision: int) -> int:
    """A note revision: a non-negative integer of any size (both stores compare revisions exactly).

    >>> check_revision(2**64 + 1)
    18446744073709551617
    """
    if isinstance(revision, bool) or not isinstance(revision, int) or revision < 0:
        raise StoreError(f"A note revision must be a non-negative integer, not {revision!r}.")
    return revision


def check_digest(content_hash: str | None) -> str:
    """A note's content hash as the stores keep it: lower-case hex (``""`` when unknown).

    >>> check_digest(None), check_digest("AB12")
    ('', 'ab12')
    """
    if content_hash is None:
        return ""
    digest = content_hash.lower()
    if not digest or any(c not in "0123456789abcdef" for c in digest):
        raise StoreError(
            "A note's content hash must be a hex digest (see notestream.stream.store.records.content_hash)."
        )
    return digest


def content_hash(text: str) -> str:
    """The content hash the stores keep for a note: sha256 of its text (UTF-8), never the text itself.
    Two notes with the same id and revision but different hashes are a ``conflict``.

    >>> content_hash("abc")[:16]
    'ba7816bf8f01cfea'
    """
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


@dataclass(frozen=True)
class AdmissionInfo:
    """The admission record (from the admissions topic). ``applied``: this event changed it."""

    hadm_id: Id
    subject_id: Id | None
    admit_time: datetime | None = None
    discharge_time: datetime | None = None
    admission_type: str | None = None
    death_time: datetime | None = None
    discharged: bool = False
    applied: bool = False


@dataclass(frozen=True)
class NoteProbs:
    """The chunk probabilities of one live note, at its latest revision."""

    revision: int
    probs: tuple[float, ...]


@dataclass(frozen=True)
class AdmissionState:
    """The aggregate of one admission's live notes. ``p_max`` is None while no chunk is held."""

    hadm_id: Id
    subject_id: Id | None
    p_max: float | None
    p_sum: float
    n_chunks: int
    n_notes: int
    seq: int
    top_note_id: str | None = None
    top_chunk: int | None = None
    discharged: bool = False

    @property
    def p_mean(self) -> float | None:
        return self.p_sum / self.n_chunks if self.n_chunks else None

    def score(self, c: float = 2.0) -> float | None:
        """The admission score (``notestream.models.aggregate.score_from``), None while no chunk is held.

        >>> AdmissionState(1, 2, p_max=0.9, p_sum=1.2, n_chunks=3, n_notes=1, seq=1).score()
        0.6
        """
        if self.p_max is None or self.n_chunks == 0:
            return None
        return score_from(self.p_max, self.p_sum, self.n_chunks, c)


@dataclass(frozen=True)
class ApplyResult:
    """What :meth:`RiskStore.apply_note` did.

    ``reason``: ``new`` (first revision held), ``revision`` (a higher revision replaced the note, or
    re-added a retracted one), ``retracted`` (``is_error``; ``applied`` is False when the note was not
    held, a tombstone then keeps earlier revisions out), ``duplicate`` (same note and revision again),
    ``stale`` (a lower revision than the one held), ``conflict`` (same note and revision as the one
    held, but another content hash: the feed sent two different notes under one id and revision; the
    held one stays). Only applied changes raise ``seq``.
    """

    applied: bool
    reason: ApplyReason
    state: AdmissionState | None = field(default=None)


@runtime_checkable
class RiskStore(Protocol):
    """Per-admission chunk probabilities and their aggregate; see docs/architecture.md."""

    async def record_admission(self, event: AdmissionEvent) -> AdmissionInfo:
        """Record an admit or a discharge. A first discharge raises ``seq`` by one (the final update)
        and makes the admission expire ``retention`` after now."""
        ...

    async def admission(self, hadm_id: Id) -> AdmissionInfo | None:
        """The admission record, or None when neither admit nor discharge was recorded."""
        ...

    async def apply_note(
        self,
        *,
        hadm_id: Id,
        subject_id: Id,
        note_id: str,
        revision: int,
        is_error: bool,
        chunk_probs: Sequence[float],
        note_time: datetime | None = None,
        content_hash: str | None = None,
    ) -> ApplyResult:
        """Apply one note atomically (dedupe, replace, retract) and return the new state.
        ``content_hash`` (:func:`content_hash` of the text; None when unknown) tells a duplicate from
        a ``conflict``; revisions compare exactly at any size."""
        ...

    async def state(self, hadm_id: Id) -> AdmissionState | None:
        """The admission's aggregate, or None when the store holds nothing for it."""
        ...

    async def note_probs(self, hadm_id: Id) -> dict[str, NoteProbs]:
        """Live notes of the admission: note_id -> (revision, chunk probabilities)."""
        ...

    async def hold_note(self, hadm_id: Id, record: str, deadline: float) -> int:
        """Keep ``record`` (a note waiting for its admission: scored chunk probabilities and metadata,
        never text) until :meth:`drop_held` removes it; :meth:`due_held` lists it once ``deadline``
        (wall-clock seconds) has passed. Returns how many records the admission holds now; at most
        :data:`MAX_HELD`, :class:`~notestream.stream.errors.StoreError` beyond."""
        ...

    async def held_notes(self, hadm_id: Id) -> list[str]:
        """The records held for the admission, oldest first (they stay held)."""
        ...

    async def drop_held(self, hadm_id: Id, records: Sequence[str]) -> None:
        """Remove these records of the admission (once each; absent ones are ignored). Callers act on
        a record first and drop it after, so a crash in between repeats the act, never loses it."""
        ...

    async def due_held(self, now: float, limit: int = 100) -> list[tuple[Id, str]]:
        """Up to about ``limit`` held records whose deadline is before ``now`` (they stay held)."""
        ...

    async def claim(self, model: str) -> str:
        """Record ``model`` (a :func:`notestream.models.fingerprint.model_fingerprint`) as the model whose
        probabilities the store holds, unless one is recorded already; return the recorded one. The
        record never expires: it outlives every admission (:func:`notestream.stream.store.claim_store`)."""
        ...

    async def ping(self) -> bool:
        """True when the store answers (readiness)."""
        ...

    async def close(self) -> None:
        """Release connections (idempotent)."""
        ...
