"""docs/reference.md §7-§8 on hand-computed cases: AUROC, trapezoid AUPRC, average precision, RP80."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from notestream.training.metrics import admission_metrics, admission_scores, ranking_metrics, rp80


def test_hand_computed_case() -> None:
    # Scores descending: 0.9 (+), 0.8 (-), 0.7 (+), 0.6 (+), 0.2 (-).
    labels = [1, 0, 1, 1, 0]
    scores = [0.9, 0.8, 0.7, 0.6, 0.2]
    m = admission_metrics(labels, scores)
    # Pairs (pos, neg): 0.9>0.8, 0.9>0.2, 0.7<0.8, 0.7>0.2, 0.6<0.8, 0.6>0.2 -> 4/6.
    assert m["auroc"] == pytest.approx(4 / 6)
    # PR points (recall, precision) by threshold 0.2, 0.6, 0.7, 0.8, 0.9 and the final (0, 1):
    # (1, 3/5), (1, 3/4), (2/3, 2/3), (1/3, 1/2), (1/3, 1), (0, 1).
    trapezoid = 0.0 + (1 / 3) * 1 + 0 + (1 / 3) * (1 / 2 + 2 / 3) / 2 + (1 / 3) * (2 / 3 + 3 / 4) / 2
    assert m["auprc"] == pytest.approx(trapezoid)
    # Average precision: sum of precision at each recall step: 1/3 * (1 + 2/3 + 3/4).
    assert m["average_precision"] == pytest.approx((1 + 2 / 3 + 3 / 4) / 3)
    # Precision > 0.8 only at threshold 0.9 (recall 1/3).
    assert m["rp80"] == pytest.approx(1 / 3)
    assert m["rp80_threshold"] == pytest.approx(0.9)


def test_rp80_zero_when_precision_never_exceeds_point_eight() -> None:
    assert rp80([0, 1, 0, 1], [0.9, 0.8, 0.7, 0.6]) == (0.0, None)
    # Precision exactly 0.8 (4 of 5) passes the reference's '> 0.799999'; 4 of 6 at 0.1 does not.
    recall, threshold = rp80([1, 1, 1, 1, 0, 0], [0.9, 0.8, 0.7, 0.6, 0.5, 0.1])
    assert threshold == pytest.approx(0.5)
    assert recall == pytest.approx(1.0)


def test_ties_share_one_threshold() -> None:
    # All scores tied: one threshold, precision = prevalence.
    assert rp80([1, 1, 1, 1, 1, 0], [0.5] * 6) == (pytest.approx(1.0), 0.5)
    m = admission_metrics([1, 0, 1, 0], [0.5, 0.5, 0.5, 0.5])
    assert m["auroc"] == pytest.approx(0.5)
    assert m["rp80"] == 0.0
    # A tie across classes at the top.
    m = admission_metrics([1, 0, 1, 0], [0.9, 0.9, 0.3, 0.1])
    assert m["auroc"] == pytest.approx((0.5 + 1 + 0 + 1) / 4)


def test_one_class_is_undefined_not_an_error() -> None:
    m = admission_metrics([1, 1], [0.2, 0.3])
    assert m["auroc"] is None
    assert "one class" in m["note"]


def test_admission_scores_aggregate_and_min_label() -> None:
    chunks = pd.DataFrame({"ID": [5, 5, 5, 3], "Label": [1, 0, 1, 0], "pred_score": [0.9, 0.1, 0.2, 0.4]})
    adm = admission_scores(chunks)
    assert adm["ID"].tolist() == [3, 5]
    assert adm["Label"].tolist() == [0, 0]  # min of the chunk labels
    assert adm["score"].tolist() == pytest.approx([0.4, (0.9 + 1.2 / 2) / (1 + 3 / 2)])
    with pytest.raises(ValueError, match="pred_score"):
        admission_scores(chunks.drop(columns="pred_score"))


@settings(max_examples=40)
@given(st.lists(st.tuples(st.integers(0, 1), st.floats(0, 1)), min_size=2, max_size=30))
def test_rp80_point_has_precision_above_floor(pairs: list[tuple[int, float]]) -> None:
    labels = np.array([p[0] for p in pairs])
    scores = np.array([p[1] for p in pairs])
    if labels.sum() == 0:
        return
    recall, threshold = rp80(labels, scores)
    if threshold is None:
        assert recall == 0.0
        return
    flagged = scores >= threshold
    assert labels[flagged].mean() > 0.799999
    assert recall == pytest.approx(labels[flagged].sum() / labels.sum())
    # No lower threshold qualifies with a higher recall.
    for t in np.unique(scores[scores < threshold]):
        sel = scores >= t
        assert labels[sel].mean() <= 0.799999


@given(
    st.lists(st.tuples(st.integers(0, 1), st.integers(0, 20)), min_size=2, max_size=60).filter(
        lambda pairs: len({y for y, _ in pairs}) == 2
    )
)
def test_the_bootstrap_metrics_equal_sklearns(pairs: list[tuple[int, int]]) -> None:
    # scores on a coarse grid: many ties, where the curves' details matter
    y = np.array([p[0] for p in pairs])
    s = np.array([p[1] / 20 for p in pairs])
    reference = admission_metrics(y, s)
    fast = ranking_metrics(y, s)
    for value, name in zip(fast, ("auroc", "auprc", "average_precision", "rp80"), strict=True):
        assert value == pytest.approx(reference[name], abs=1e-12), name
