"""The admission score over chunk probabilities (docs/reference.md §7) and its incremental state.

``score = (max(p) + sum(p) / c) / (1 + n / c)`` with ``c = 2``: a function of ``(max, sum, n)`` only.

An admission with no chunk has no score: :func:`admission_score` and :func:`score_from` raise
``ValueError`` for ``n == 0`` and :attr:`AggregateState.score` is ``None``.

Sums are exact. :func:`admission_score` uses ``math.fsum`` (the correctly rounded sum) and
:class:`AggregateState` keeps the sum as an exact integer multiple of 2**-1074 (every finite float is
one), so adding, removing and merging chunks in any order gives bit-for-bit the batch value.

>>> round(admission_score([0.9, 0.1, 0.2]), 6)
0.6
>>> s = AggregateState()
>>> for p in (0.9, 0.1, 0.2): s.add(p)
>>> s.score() == admission_score([0.9, 0.1, 0.2])
True
>>> s.remove(0.9); s.p_max, s.n
(0.2, 2)
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable
from fractions import Fraction

DEFAULT_C = 2.0
_SCALE_BITS = 1074  # 2**-1074 is the smallest positive float: every finite float is k * 2**-1074


def score_from(p_max: float, p_sum: float, n: int, c: float = DEFAULT_C) -> float:
    """Admission score from the aggregate ``(max, sum, n)``.

    >>> score_from(0.9, 1.2, 3)
    0.6
    """
    if n <= 0:
        raise ValueError("An admission without chunks has no score; check n > 0 before scoring.")
    if c <= 0:
        raise ValueError(f"The aggregation constant c must be positive, not {c}.")
    return (p_max + p_sum / c) / (1.0 + n / c)


def admission_score(probs: Iterable[float], c: float = DEFAULT_C) -> float:
    """Admission score of all its chunk probabilities (raises ``ValueError`` when there are none).

    >>> admission_score([0.5])
    0.5
    """
    values = [_check(p) for p in probs]
    if not values:
        raise ValueError("An admission without chunks has no score; it drops out of the task.")
    return score_from(max(values), math.fsum(values), len(values), c)


def _check(p: float) -> float:
    value = float(p)
    if not math.isfinite(value):
        raise ValueError(f"A chunk probability must be a finite number, not {p!r}.")
    return value


def _fixed(p: float) -> int:
    numerator, denominator = p.as_integer_ratio()
    return numerator << (_SCALE_BITS - (denominator.bit_length() - 1))


class AggregateState:
    """(max, sum, n) of an admission's chunk probabilities, with add, remove and merge.

    Costs: :meth:`add` is O(1); :meth:`remove` is O(1) unless it removes the last copy of the current
    maximum, which rescans the distinct values held (O(d)); :meth:`merge` is O(d of the other state).
    Removing needs to know what is held, so the state keeps a counted multiset of the probabilities;
    a store that only needs add can keep just ``(max, sum, n)``.
    """

    __slots__ = ("_counts", "_max", "_sum")

    def __init__(self, probs: Iterable[float] = ()) -> None:
        self._counts: Counter[float] = Counter()
        self._sum = 0
        self._max: float | None = None
        for p in probs:
            self.add(p)

    def add(self, p: float) -> None:
        """Add one chunk probability."""
        value = _check(p)
        self._counts[value] += 1
        self._sum += _fixed(value)
        if self._max is None or value > self._max:
            self._max = value

    def remove(self, p: float) -> None:
        """Remove one chunk probability that was added before (``ValueError`` if it is not held)."""
        value = _check(p)
        count = self._counts.get(value, 0)
        if count == 0:
            raise ValueError(f"Cannot remove probability {value!r}: this admission does not hold it.")
        if count == 1:
            del self._counts[value]
            if value == self._max:
                self._max = max(self._counts) if self._counts else None
        else:
            self._counts[value] = count - 1
        self._sum -= _fixed(value)

    def merge(self, other: AggregateState) -> None:
        """Add every probability of ``other`` (which is left unchanged)."""
        for value, count in other._counts.items():
            self._counts[value] += count
            self._sum += _fixed(value) * count
            if self._max is None or value > self._max:
                self._max = value

    @property
    def n(self) -> int:
        return self._counts.total()

    @property
    def p_max(self) -> float | None:
        return self._max

    @property
    def p_sum(self) -> float:
        """The correctly rounded sum (equal to ``math.fsum`` of the probabilities held)."""
        return float(Fraction(self._sum, 1 << _SCALE_BITS))

    @property
    def p_mean(self) -> float | None:
        n = self.n
        return self.p_sum / n if n else None

    def score(self, c: float = DEFAULT_C) -> float | None:
        """The admission score, or None while no chunk is held."""
        if self._max is None:
            return None
        return score_from(self._max, self.p_sum, self.n, c)

    def __repr__(self) -> str:
        return f"AggregateState(n={self.n}, p_max={self.p_max}, p_sum={self.p_sum})"
