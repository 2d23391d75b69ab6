"""Which notes count for an admission: the one rule, shared by the stores, the stream, offline scoring,
the demo and the tests' oracle.

A note is known by its admission and its note id. Every event of a note carries a ``revision`` and
whether it retracts the note (``is_error``). Events are ordered by their *version*, the pair
``(revision, is_error)``: a later version replaces the note (a higher revision) or retracts it (the same
or a higher revision with ``is_error``); an equal version is a duplicate and a lower one is stale, and
neither changes anything. A retraction leaves a tombstone, so an older revision that arrives late
cannot bring the note back.

Which notes a model scores is the second half of the rule: :func:`window_verdict` applies the
model's note window (``all``, ``discharge``, ``days``/``hours`` after admission) with explicit time
zones, so that a feed that stamps its times with an offset and one that sends naive local times agree.

>>> ledger = AdmissionLedger[int, str]()
>>> [ledger.apply(1, "n1", 0, False, "first"), ledger.apply(1, "n1", 0, False, "again")]
['new', 'duplicate']
>>> [ledger.apply(1, "n1", 2, False, "edited"), ledger.apply(1, "n1", 1, False, "late")]
['revision', 'stale']
>>> ledger.live(1)
{'n1': 'edited'}
>>> ledger.apply(1, "n1", 2, True), ledger.live(1)
('retracted', {})
"""

from __future__ import annotations

from collections.abc import Hashable, Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, tzinfo
from typing import TYPE_CHECKING, Generic, Literal, TypeVar

if TYPE_CHECKING:
    from notestream.models.spec import ModelSpec

Outcome = Literal["new", "revision", "retracted", "duplicate", "stale"]
"""What an event does to its note: ``new``, ``revision`` and ``retracted`` change the admission (a
retraction of a note that holds no live version changes nothing but leaves its tombstone)."""

Verdict = Literal["admission_unknown", "outside_window"]
"""Why a model does not score a note (``None``: it does)."""

K = TypeVar("K", bound=Hashable)
T = TypeVar("T")


def note_outcome(held: tuple[int, bool] | None, revision: int, is_error: bool) -> Outcome:
    """The outcome of an event of version ``(revision, is_error)`` for a note holding version ``held``.

    >>> note_outcome(None, 0, False), note_outcome((0, False), 0, False), note_outcome((3, False), 2, False)
    ('new', 'duplicate', 'stale')
    >>> note_outcome((0, False), 1, False), note_outcome((0, False), 0, True), note_outcome((0, True), 1, False)
    ('revision', 'retracted', 'revision')

    Revisions compare as Python integers: exactly, at any size.

    >>> note_outcome((2**53, False), 2**53 + 1, False)
    'revision'
    """
    if held is not None and (revision, is_error) <= held:
        return "duplicate" if (revision, is_error) == held else "stale"
    if is_error:
        return "retracted"
    return "new" if held is None else "revision"


@dataclass
class _Held(Generic[T]):
    revision: int
    is_error: bool
    payload: T | None


class AdmissionLedger(Generic[K, T]):
    """The live notes of many admissions under :func:`note_outcome`, each with a payload of the
    caller's choosing (the note itself, its chunk probabilities, ...)."""

    def __init__(self) -> None:
        self._notes: dict[K, dict[str, _Held[T]]] = {}

    def apply(
        self, hadm_id: K, note_id: str, revision: int, is_error: bool, payload: T | None = None
    ) -> Outcome:
        """Apply one event; a retraction's payload is ignored."""
        notes = self._notes.setdefault(hadm_id, {})
        held = notes.get(note_id)
        outcome = note_outcome(None if held is None else (held.revision, held.is_error), revision, is_error)
        if outcome not in ("duplicate", "stale"):
            notes[note_id] = _Held(revision, is_error, None if is_error else payload)
        return outcome

    def live(self, hadm_id: K) -> dict[str, T]:
        """The admission's live notes (latest version, not retracted), by note id, in first-seen order."""
        return {
            note_id: held.payload  # type: ignore[misc]
            for note_id, held in self._notes.get(hadm_id, {}).items()
            if not held.is_error
        }

    def admissions(self) -> Iterator[K]:
        """Every admission an event was applied to, in first-seen order."""
        return iter(self._notes)


def aware(moment: datetime | None, tz: tzinfo = UTC) -> datetime | None:
    """``moment`` with a time zone: naive times are read in ``tz`` (the feed's source time zone).

    >>> from datetime import timedelta, timezone
    >>> aware(datetime(2150, 1, 1, 8)).isoformat()
    '2150-01-01T08:00:00+00:00'
    >>> aware(datetime(2150, 1, 1, 8, tzinfo=timezone(timedelta(hours=-5)))).isoformat()
    '2150-01-01T08:00:00-05:00'
    """
    if moment is None or moment.tzinfo is not None:
        return moment
    return moment.replace(tzinfo=tz)


def window_verdict(
    spec: ModelSpec,
    *,
    admit: datetime | None,
    chart_time: datetime | None,
    chart_date: date | None,
    category: str | None,
    tz: tzinfo = UTC,
) -> Verdict | None:
    """Whether the model scores a note (``None``) or why not. Naive times are read in ``tz``; a
    ``chart_date`` without a time is that day in ``tz``.

    >>> from notestream.models.spec import ModelSpec, Window
    >>> spec = ModelSpec(window=Window(kind="hours", value=24))
    >>> window_verdict(spec, admit=datetime(2150, 1, 1, 1), chart_time=datetime(2150, 1, 2),
    ...                chart_date=None, category="Nursing")
    >>> window_verdict(spec, admit=None, chart_time=datetime(2150, 1, 2), chart_date=None, category=None)
    'admission_unknown'
    >>> from datetime import timedelta, timezone
    >>> est = timezone(timedelta(hours=-5))
    >>> window_verdict(spec, admit=datetime(2150, 1, 1, 1), chart_time=datetime(2150, 1, 1, 21, tzinfo=est),
    ...                chart_date=None, category="Nursing")
    'outside_window'
    """
    if spec.window.kind in ("days", "hours") and admit is None:
        return "admission_unknown"
    admitted = spec.window.admits(
        admit=_local(admit, tz), chart_time=_local(chart_time, tz), chart_date=chart_date, category=category
    )
    return None if admitted else "outside_window"


def _local(moment: datetime | None, tz: tzinfo) -> datetime | None:
    """The wall-clock time in ``tz`` (naive, as the window arithmetic and chart dates are): naive times
    are already read in ``tz``, aware ones are converted to it."""
    if moment is None or moment.tzinfo is None:
        return moment
    return moment.astimezone(tz).replace(tzinfo=None)
