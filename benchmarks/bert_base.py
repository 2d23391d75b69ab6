"""The benchmarks' shared pieces for BERT-base: its folder, and timing models in interleaved rounds.

:func:`bert_base_folder` writes a BERT-base classifier (12 layers x 768, 512 positions, random weights:
speed does not depend on them) with a WordPiece vocabulary trained on generated notes.
:func:`interleaved_rates` times several scorers on the same items, taking turns within each round so
that neighbours in time share the machine's state; ratios are then taken round by round.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

BERT_BASE: dict[str, Any] = {"hidden": 768, "layers": 12, "heads": 12, "intermediate": 3072}


def bert_base_folder(out: Path, *, vocab_size: int = 8000) -> Path:
    """A BERT-base model folder at ``out`` (random weights, 512 positions)."""
    from notestream.models.build import build_small_bert, clinical_corpus

    return build_small_bert(
        out, clinical_corpus(300, seed=1), vocab_size=vocab_size, max_length=512, **BERT_BASE
    )


def interleaved_rates(
    calls: Mapping[str, Callable[[], object]], items: int, rounds: int
) -> dict[str, list[float]]:
    """Items/s of each call in each round, the calls taking turns within a round.

    >>> rates = interleaved_rates({"a": lambda: None, "b": lambda: None}, items=10, rounds=2)
    >>> sorted(rates), [len(r) for r in rates.values()]
    (['a', 'b'], [2, 2])
    """
    rates: dict[str, list[float]] = {k: [] for k in calls}
    for _ in range(rounds):
        for key, call in calls.items():
            start = time.perf_counter()
            call()
            rates[key].append(items / (time.perf_counter() - start))
    return rates


def median_ratio(rates: Mapping[str, list[float]], key: str, reference: str) -> float:
    """The median over rounds of ``key``'s rate over ``reference``'s in the same round.

    >>> median_ratio({"a": [2.0, 6.0, 3.0], "b": [1.0, 2.0, 2.0]}, "a", "b")
    2.0
    """
    return statistics.median(a / b for a, b in zip(rates[key], rates[reference], strict=True))
