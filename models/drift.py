"""Distribution drift: shares of values per bin, and the population stability index between two.

``train evaluate`` stores the validation admissions' shares per tenth of the score and of p_max in
``notestream.json`` (``metrics.val.distributions``); ``notestream monitor`` compares live traffic with
them. PSI = sum over bins of (live - reference) * ln(live / reference), with empty bins floored at
``1e-4``; by convention under 0.1 is stable, 0.1-0.25 a moderate shift, over 0.25 a major one.

>>> shares([0.05, 0.15, 0.15, 0.95])
[0.25, 0.5, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.25]
>>> psi([0.5, 0.5], [0.5, 0.5]), round(psi([0.9, 0.1], [0.5, 0.5]), 4)
(0.0, 0.8789)
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from numpy.typing import ArrayLike

EDGES = [round(i / 10, 1) for i in range(11)]
FLOOR = 1e-4


def shares(values: ArrayLike, edges: Sequence[float] = EDGES) -> list[float]:
    """The share of ``values`` (clipped to the edges' range) in each bin."""
    v = np.clip(np.asarray(values, dtype=np.float64), edges[0], edges[-1])
    counts = np.histogram(v, bins=np.asarray(edges))[0]
    return (counts / max(len(v), 1)).tolist()


def psi(live: Sequence[float], reference: Sequence[float]) -> float:
    """Population stability index of ``live`` shares against ``reference`` shares (same bins)."""
    if len(live) != len(reference):
        raise ValueError(f"PSI needs the same bins: {len(live)} vs {len(reference)} shares.")
    total = 0.0
    for a, b in zip(live, reference, strict=True):
        a, b = max(a, FLOOR), max(b, FLOOR)
        total += (a - b) * math.log(a / b)
    return total
