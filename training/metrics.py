"""Admission-level metrics exactly as the reference (docs/reference.md §7-§8).

- ``auroc``: area under sklearn's ROC curve.
- ``auprc``: the TRAPEZOID area under sklearn's precision-recall curve, ``auc(recall, precision)``, as the
  reference reports it (it is not average precision; both are reported, named apart).
- ``average_precision``: sklearn's step-wise average precision.
- ``rp80``: the recall at the lowest threshold whose precision exceeds 0.799999 (the final
  precision=1/recall=0 point has no threshold and is left out); 0 when no threshold qualifies.

>>> m = admission_metrics([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8])
>>> round(m["auroc"], 4), round(m["average_precision"], 4), m["rp80"]
(0.75, 0.8333, 0.5)
>>> rp80([0, 1], [0.9, 0.1])
(0.0, None)
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike

from notestream.models.aggregate import admission_score

PRECISION_FLOOR = 0.799999


def _arrays(labels: ArrayLike, scores: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(labels, dtype=np.int64)
    s = np.asarray(scores, dtype=np.float64)
    if y.shape != s.shape or y.ndim != 1:
        raise ValueError(f"labels and scores must be 1-D and of one length, not {y.shape} and {s.shape}.")
    return y, s


def rp80(labels: ArrayLike, scores: ArrayLike) -> tuple[float, float | None]:
    """(recall, threshold) at the reference's RP80 point; (0.0, None) when precision never exceeds 0.8.

    >>> rp80([0, 1, 1, 0, 1], [0.2, 0.9, 0.7, 0.6, 0.5])
    (0.6666666666666666, 0.7)
    """
    from sklearn.metrics import precision_recall_curve

    y, s = _arrays(labels, scores)
    precision, recall, thresholds = precision_recall_curve(y, s)
    precision, recall = precision[:-1], recall[:-1]  # the last point has no threshold
    ok = precision > PRECISION_FLOOR
    if not ok.any():
        return 0.0, None
    i = int(np.argmin(np.where(ok, thresholds, np.inf)))
    return float(recall[i]), float(thresholds[i])


def admission_metrics(labels: ArrayLike, scores: ArrayLike) -> dict[str, Any]:
    """auroc, auprc (trapezoid), average_precision, rp80 (+ its threshold), n and positives."""
    from sklearn.metrics import auc, average_precision_score, precision_recall_curve, roc_auc_score

    y, s = _arrays(labels, scores)
    out: dict[str, Any] = {"n": len(y), "positives": int(y.sum())}
    if len(np.unique(y)) < 2:
        out.update(auroc=None, auprc=None, average_precision=None, rp80=None, rp80_threshold=None)
        out["note"] = "only one class present: the metrics are undefined"
        return out
    precision, recall, _ = precision_recall_curve(y, s)
    recall_80, threshold = rp80(y, s)
    out.update(
        auroc=float(roc_auc_score(y, s)),
        auprc=float(auc(recall, precision)),
        average_precision=float(average_precision_score(y, s)),
        rp80=recall_80,
        rp80_threshold=threshold,
    )
    return out


def admission_scores(chunks: pd.DataFrame, *, c: float = 2.0) -> pd.DataFrame:
    """Chunk rows (ID, Label, pred_score) -> admission rows (ID, Label, score, n_chunks).

    The score is (max + sum / c) / (1 + n / c) (docs/reference.md §7); the label is the minimum of the
    admission's chunk labels.

    >>> df = pd.DataFrame({"ID": [7, 7, 9], "Label": [1, 1, 0], "pred_score": [0.2, 0.6, 0.3]})
    >>> admission_scores(df).round(4).to_dict("list")
    {'ID': [7, 9], 'Label': [1, 0], 'score': [0.5, 0.3], 'n_chunks': [2, 1]}
    """
    missing = {"ID", "Label", "pred_score"} - set(chunks.columns)
    if missing:
        raise ValueError(
            f"Chunk scores need the columns ID, Label and pred_score; missing {sorted(missing)}."
        )
    grouped = chunks.groupby("ID", sort=True)
    return pd.DataFrame(
        {
            "ID": list(grouped.groups),
            "Label": grouped["Label"].min().to_numpy().astype(int),
            "score": [admission_score(p, c=c) for _, p in grouped["pred_score"]],
            "n_chunks": grouped.size().to_numpy(),
        }
    )
