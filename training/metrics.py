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


CI_METRICS = ("auroc", "auprc", "average_precision", "rp80")


def ranking_metrics(y: np.ndarray, s: np.ndarray) -> tuple[float, float, float, float]:
    """(auroc, auprc, average_precision, rp80) of labels ``y`` (both classes present) and scores ``s``,
    in plain numpy with sklearn's definitions (the same numbers as :func:`admission_metrics`, which
    the tests check), for the thousands of bootstrap resamples.

    >>> [round(v, 4) for v in ranking_metrics(np.array([0, 0, 1, 1]), np.array([0.1, 0.4, 0.35, 0.8]))]
    [0.75, 0.7917, 0.8333, 0.5]
    """
    order = np.argsort(-s, kind="mergesort")
    ys, ss = y[order], s[order]
    last = np.r_[np.flatnonzero(ss[1:] != ss[:-1]), len(ss) - 1]  # the last row of each tied run
    tps = np.cumsum(ys)[last].astype(np.float64)
    fps = (last + 1) - tps
    positives, negatives = tps[-1], fps[-1]
    tpr = np.r_[0.0, tps / positives]
    fpr = np.r_[0.0, fps / negatives]
    auroc = float(np.sum(np.diff(fpr) * (tpr[1:] + tpr[:-1]) / 2.0))
    # sklearn's precision-recall curve stops at the first threshold that reaches full recall
    stop = int(np.searchsorted(tps, positives)) + 1
    precision = tps[:stop] / (tps[:stop] + fps[:stop])
    recall = tps[:stop] / positives
    rec = np.r_[0.0, recall]
    prec = np.r_[1.0, precision]
    auprc = float(np.sum(np.diff(rec) * (prec[1:] + prec[:-1]) / 2.0))
    ap = float(np.sum(np.diff(rec) * prec[1:]))
    ok = precision > PRECISION_FLOOR
    rp = float(recall[np.flatnonzero(ok)[-1]]) if ok.any() else 0.0  # the lowest such threshold
    return auroc, auprc, ap, rp


def bootstrap_ci(
    labels: ArrayLike, scores: ArrayLike, *, n_boot: int = 1000, seed: int = 0, level: float = 0.95
) -> dict[str, list[float] | None]:
    """Percentile bootstrap confidence intervals of auroc, auprc, average_precision and rp80: the
    admissions are resampled with replacement ``n_boot`` times (a resample with one class only is
    drawn again), each metric computed on each resample (:func:`ranking_metrics`), and the
    ``(1 - level) / 2`` and ``(1 + level) / 2`` quantiles reported as ``[low, high]``. None when the
    metric is undefined (one class).

    >>> ci = bootstrap_ci([0, 0, 1, 1, 0, 1, 0, 1] * 10, [0.1, 0.4, 0.35, 0.8, 0.2, 0.7, 0.5, 0.9] * 10, n_boot=200)
    >>> low, high = ci["auroc"]
    >>> bool(low < 0.875 < high), bool(0.7 < low), sorted(ci)
    (True, True, ['auprc', 'auroc', 'average_precision', 'rp80'])
    """
    y, s = _arrays(labels, scores)
    if len(np.unique(y)) < 2:
        return dict.fromkeys(CI_METRICS)
    rng = np.random.default_rng(seed)
    draws: list[tuple[float, float, float, float]] = []
    while len(draws) < n_boot:
        idx = rng.integers(0, len(y), len(y))
        yb = y[idx]
        if yb.min() == yb.max():
            continue
        draws.append(ranking_metrics(yb, s[idx]))
    values = np.asarray(draws)
    tail = (1.0 - level) / 2.0
    return {
        name: [float(np.quantile(values[:, k], tail)), float(np.quantile(values[:, k], 1.0 - tail))]
        for k, name in enumerate(CI_METRICS)
    }


def metrics_with_ci(
    labels: ArrayLike, scores: ArrayLike, *, n_boot: int = 1000, seed: int = 0
) -> dict[str, Any]:
    """:func:`admission_metrics` with ``prevalence`` (share of positives) and ``ci`` (95% bootstrap
    intervals, :func:`bootstrap_ci`; ``n_boot`` 0 leaves them out).

    >>> m = metrics_with_ci([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8], n_boot=0)
    >>> m["n"], m["prevalence"], m["auroc"], m["ci"]
    (4, 0.5, 0.75, {})
    """
    y, s = _arrays(labels, scores)
    out = admission_metrics(y, s)
    out["prevalence"] = float(y.mean()) if len(y) else None
    out["ci"] = bootstrap_ci(y, s, n_boot=n_boot, seed=seed) if n_boot > 0 else {}
    return out


def calibration_bins(
    labels: ArrayLike, probs: ArrayLike, *, bins: int = 10, by: str = "width"
) -> list[dict[str, float | int]]:
    """Observed vs predicted per bin of the predicted probability: ``by="width"`` (equal-width bins on
    [0, 1], the reliability diagram) or ``"quantile"`` (deciles with ``bins=10``). Empty bins are left out.

    >>> calibration_bins([0, 1, 0, 1], [0.1, 0.2, 0.8, 0.9], bins=2)
    [{'low': 0.0, 'high': 0.5, 'n': 2, 'predicted': 0.15, 'observed': 0.5}, {'low': 0.5, 'high': 1.0, 'n': 2, 'predicted': 0.85, 'observed': 0.5}]
    """
    y, p = _arrays(labels, probs)
    if by == "quantile":
        edges = np.unique(np.quantile(p, np.linspace(0, 1, bins + 1))) if len(p) else np.array([0.0, 1.0])
    else:
        edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.searchsorted(edges, p, side="right") - 1, 0, len(edges) - 2)
    out: list[dict[str, float | int]] = []
    for b in range(len(edges) - 1):
        mask = which == b
        if mask.any():
            out.append(
                {
                    "low": round(float(edges[b]), 6),
                    "high": round(float(edges[b + 1]), 6),
                    "n": int(mask.sum()),
                    "predicted": round(float(p[mask].mean()), 6),
                    "observed": round(float(y[mask].mean()), 6),
                }
            )
    return out


def calibration_metrics(labels: ArrayLike, probs: ArrayLike, *, bins: int = 10) -> dict[str, Any]:
    """Brier score, expected calibration error (``ece``: the n-weighted mean |observed - predicted| over
    equal-width bins) and the bins themselves.

    >>> m = calibration_metrics([0, 1, 0, 1], [0.1, 0.2, 0.8, 0.9], bins=2)
    >>> round(m["brier"], 4), round(m["ece"], 4), m["n"]
    (0.325, 0.35, 4)
    """
    y, p = _arrays(labels, probs)
    table = calibration_bins(y, p, bins=bins)
    n = len(y)
    ece = (
        sum(int(b["n"]) * abs(float(b["observed"]) - float(b["predicted"])) for b in table) / n if n else None
    )
    return {
        "n": n,
        "prevalence": float(y.mean()) if n else None,
        "mean_predicted": float(p.mean()) if n else None,
        "brier": float(np.mean((p - y) ** 2)) if n else None,
        "ece": ece,
        "bins": table,
    }


def operating_points(labels: ArrayLike, scores: ArrayLike) -> pd.DataFrame:
    """Every threshold (each distinct score, alerting at ``score >= threshold``), highest first, with its
    alerts, true positives, precision, recall and alerts per 100 admissions.

    >>> operating_points([0, 1, 1, 0], [0.2, 0.9, 0.6, 0.6]).to_dict("list")
    {'threshold': [0.9, 0.6, 0.2], 'alerts': [1, 3, 4], 'tp': [1, 2, 2], 'precision': [1.0, 0.6666666666666666, 0.5], 'recall': [0.5, 1.0, 1.0], 'alerts_per_100': [25.0, 75.0, 100.0]}
    """
    y, s = _arrays(labels, scores)
    order = np.argsort(-s, kind="stable")
    ys, ss = y[order], s[order]
    last = np.r_[ss[1:] != ss[:-1], True]  # the last row of each run of tied scores
    alerts = np.arange(1, len(ss) + 1)[last]
    tp = np.cumsum(ys)[last]
    positives = max(int(y.sum()), 1)
    return pd.DataFrame(
        {
            "threshold": ss[last],
            "alerts": alerts,
            "tp": tp,
            "precision": tp / alerts,
            "recall": tp / positives,
            "alerts_per_100": 100.0 * alerts / max(len(y), 1),
        }
    )


def choose_threshold(
    labels: ArrayLike, scores: ArrayLike, kind: str = "rp80", target: float | None = None
) -> Any:
    """The alert threshold of a policy (:mod:`notestream.models.policy`) on these admissions, with its expected
    precision, recall and alerts per 100 admissions. When no threshold reaches the target, the nearest
    one is used and ``met`` is False.

    >>> y = [0] * 80 + [1] * 20
    >>> s = [i / 100 for i in range(80)] + [0.5 + i / 50 for i in range(20)]
    >>> choose_threshold(y, s, "precision", 0.5).describe()
    'precision >= 0.5: threshold 0.7, expected precision 0.500, recall 0.500, 20.00 alerts per 100 admissions at prevalence 0.200 (n=100)'
    >>> choose_threshold(y, s, "budget", 10).threshold, choose_threshold(y, s, "sensitivity", 0.5).threshold
    (0.77, 0.7)
    """
    from notestream.models.policy import AlertPolicyChoice

    y, s = _arrays(labels, scores)
    if len(y) == 0:
        raise ValueError("No admissions to choose an alert threshold on.")
    points = operating_points(y, s)
    met = True
    if kind == "rp80":
        _, threshold = rp80(y, s)
        if threshold is None:
            met, row = False, points.iloc[points["precision"].to_numpy().argmax()]
        else:
            row = points.loc[points["threshold"] == threshold].iloc[0]
    elif target is None:
        raise ValueError(f"The {kind} alert policy needs a target.")
    elif kind == "precision":
        ok = points[points["precision"] >= target]
        met = not ok.empty
        row = ok.iloc[-1] if met else points.iloc[points["precision"].to_numpy().argmax()]
    elif kind == "sensitivity":
        ok = points[points["recall"] >= target]
        row = ok.iloc[0]  # the lowest threshold has recall 1
    elif kind == "budget":
        ok = points[points["alerts_per_100"] <= target]
        met = not ok.empty
        row = ok.iloc[-1] if met else points.iloc[0]
    else:
        raise ValueError(f"Unknown alert policy {kind!r}: rp80, precision, sensitivity or budget.")
    return AlertPolicyChoice(
        kind=kind,  # type: ignore[arg-type]
        target=target if kind != "rp80" else None,
        threshold=float(row["threshold"]),
        precision=float(row["precision"]),
        recall=float(row["recall"]) if y.sum() else None,
        alerts_per_100=float(row["alerts_per_100"]),
        prevalence=float(y.mean()),
        n=len(y),
        met=met,
    )
