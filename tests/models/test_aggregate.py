"""Admission score and its incremental state."""

from __future__ import annotations

import math
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from notestream.models.aggregate import AggregateState, admission_score, score_from

probs = st.floats(0.0, 1.0, allow_nan=False)


def reference_score(p: list[float], c: float = 2.0) -> float:
    """docs/reference.md §7 in its second form: (P_max + P_mean * n / c) / (1 + n / c)."""
    n = len(p)
    return (max(p) + (math.fsum(p) / n) * n / c) / (1 + n / c)


@pytest.mark.parametrize("p", [[0.3], [0.9, 0.1, 0.2], [0.0] * 5, [1.0, 1.0], [0.5] * 318])
def test_admission_score_matches_the_reference_formula(p: list[float]) -> None:
    assert admission_score(p) == pytest.approx(reference_score(p), rel=1e-12)


def test_one_chunk_scores_its_probability_and_more_chunks_weigh_the_mean() -> None:
    assert admission_score([0.7]) == pytest.approx(0.7)
    few = admission_score([0.9, 0.1])
    many = admission_score([0.9] + [0.1] * 50)
    assert 0.1 < many < few < 0.9


def test_empty_admission_has_no_score() -> None:
    with pytest.raises(ValueError, match="no score"):
        admission_score([])
    with pytest.raises(ValueError, match="no score"):
        score_from(0.0, 0.0, 0)
    assert AggregateState().score() is None


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_non_finite_probabilities_are_refused(bad: float) -> None:
    with pytest.raises(ValueError, match="finite"):
        AggregateState([bad])
    with pytest.raises(ValueError, match="finite"):
        admission_score([0.2, bad])


def test_removing_what_was_never_added_is_refused() -> None:
    state = AggregateState([0.2])
    with pytest.raises(ValueError, match="does not hold"):
        state.remove(0.3)


@given(st.lists(probs, min_size=1, max_size=60), st.lists(probs, max_size=30), st.randoms())
@settings(max_examples=300)
def test_incremental_equals_batch_under_any_order_of_add_and_remove(
    kept: list[float], removed: list[float], rnd: random.Random
) -> None:
    ops = [("add", p) for p in kept + removed]
    rnd.shuffle(ops)
    # each removal happens at a random moment after its own add
    for p in removed:
        at = max(i for i, op in enumerate(ops) if op == ("add", p)) + 1
        ops.insert(rnd.randint(at, len(ops)), ("remove", p))
    state = AggregateState()
    for op, p in ops:
        state.add(p) if op == "add" else state.remove(p)
    assert state.n == len(kept)
    assert state.p_max == max(kept)
    assert state.p_sum == math.fsum(kept)
    assert state.score() == admission_score(kept)
    assert state.score(c=3.5) == admission_score(kept, c=3.5)


@given(st.lists(probs, max_size=40), st.lists(probs, max_size=40))
@settings(max_examples=200)
def test_merge_equals_adding_everything(a: list[float], b: list[float]) -> None:
    left, right = AggregateState(a), AggregateState(b)
    left.merge(right)
    assert right.n == len(b)
    assert left.n == len(a) + len(b)
    if a or b:
        assert left.score() == admission_score(a + b)
        assert left.p_mean == pytest.approx(math.fsum(a + b) / len(a + b))
    else:
        assert left.score() is None


def test_removing_the_maximum_falls_back_to_the_next_one() -> None:
    state = AggregateState([0.9, 0.9, 0.4, 0.1])
    state.remove(0.9)
    assert state.p_max == 0.9
    state.remove(0.9)
    assert state.p_max == 0.4
    state.remove(0.4)
    state.remove(0.1)
    assert state.p_max is None
    assert state.n == 0
    assert state.p_sum == 0.0
