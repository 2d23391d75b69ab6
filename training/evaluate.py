"""Evaluate chunk classifiers at the admission level: metrics, ROC / PR plots, JSON reports, threshold.

- :func:`score_chunks` scores a chunk file (ID, TEXT, Label) with a model folder -> ``pred_score``.
- :func:`calibrate` scores the validation file and writes the metrics and the decision threshold (the
  RP80 point: the lowest threshold whose precision exceeds 0.8; else the best-F1 point) into the model
  folder's ``notestream.json``.
- :func:`evaluate_model` scores a test file, adds the bag-of-words baseline trained on the same split
  when a training file is given, and writes ``report.json``, ``roc.png``, ``pr.png`` and the scores.
- :func:`evaluate_chunk_scores` evaluates a chunk-score file alone (ID, Label, pred_score) and writes
  ``metrics.json`` with the keys auroc, auprc, average_precision and rp80.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from notestream.models.spec import ModelSpec
from notestream.training.chunk_files import read_chunks
from notestream.training.errors import TrainRunError
from notestream.training.metrics import admission_metrics, admission_scores
from notestream.training.plots import plot_curves


def score_chunks(
    model_dir: str | Path, chunks: pd.DataFrame, *, batch_size: int = 64, device: str | None = None
) -> pd.DataFrame:
    """``chunks`` with a ``pred_score`` column: the model's probability for each chunk text."""
    import torch

    from notestream.models.checkpoint import load_model_folder
    from notestream.models.classifier import ChunkClassifier

    dev = device or ("cuda" if torch.cuda.is_available() else "cpu")
    loaded = load_model_folder(model_dir, device=dev)
    classifier = ChunkClassifier(loaded, dev, max_batch_size=batch_size)
    out = chunks.copy()
    out["pred_score"] = classifier.predict(out["TEXT"].astype(str).tolist()) if len(out) else []
    return out


def _best_f1_threshold(labels: np.ndarray, scores: np.ndarray) -> float | None:
    from sklearn.metrics import precision_recall_curve

    precision, recall, thresholds = precision_recall_curve(labels, scores)
    f1 = 2 * precision[:-1] * recall[:-1] / np.maximum(precision[:-1] + recall[:-1], 1e-12)
    return float(thresholds[int(np.argmax(f1))]) if len(thresholds) else None


def calibrate(model_dir: str | Path, val_csv: str | Path, *, batch_size: int = 64) -> dict[str, Any]:
    """Score ``val_csv`` and write validation metrics and the decision threshold into the model folder."""
    spec = ModelSpec.read(model_dir)
    scored = score_chunks(model_dir, read_chunks(val_csv), batch_size=batch_size)
    adm = admission_scores(scored, c=spec.c)
    metrics = admission_metrics(adm["Label"], adm["score"])
    threshold = metrics.get("rp80_threshold")
    rule = "rp80"
    if threshold is None and adm["Label"].nunique() == 2:
        threshold, rule = _best_f1_threshold(adm["Label"].to_numpy(), adm["score"].to_numpy()), "best_f1"
    new = spec.model_copy(
        update={
            "threshold": threshold,
            "metrics": {
                **spec.metrics,
                "val": metrics,
                "threshold_rule": rule if threshold is not None else None,
            },
        }
    )
    new.write(model_dir)
    return metrics


def evaluate_chunk_scores(scores_file: str | Path, out_dir: str | Path, *, c: float = 2.0) -> dict[str, Any]:
    """Admission metrics of a chunk-score file (ID, Label, pred_score) -> ``out_dir/metrics.json``."""
    path = Path(scores_file)
    try:
        chunks = pd.read_csv(path)
        adm = admission_scores(chunks, c=c)
    except (OSError, ValueError) as exc:
        raise TrainRunError(f"Cannot evaluate {path}: {exc}") from exc
    metrics = admission_metrics(adm["Label"], adm["score"])
    folder = Path(out_dir)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n", encoding="utf-8")
    plot_curves({"model": (adm["Label"].to_numpy(), adm["score"].to_numpy())}, folder)
    return metrics


def evaluate_model(
    model_dir: str | Path,
    test_csv: str | Path,
    out_dir: str | Path,
    *,
    val_csv: str | Path | None = None,
    train_csv: str | Path | None = None,
    batch_size: int = 64,
) -> dict[str, Any]:
    """Evaluate a model folder on ``test_csv`` (and the baseline trained on ``train_csv``) -> report.

    With ``val_csv`` the decision threshold is (re)calibrated on it first. Returns the report dict
    (also ``out_dir/report.json``) with ``model`` and, when trained, ``baseline`` metrics.
    """
    folder = Path(out_dir)
    folder.mkdir(parents=True, exist_ok=True)
    if val_csv is not None:
        calibrate(model_dir, val_csv, batch_size=batch_size)
    spec = ModelSpec.read(model_dir)
    test = read_chunks(test_csv)
    scored = score_chunks(model_dir, test, batch_size=batch_size)
    scored[["ID", "Label", "pred_score"]].to_csv(folder / "chunk_scores.csv", index=False)
    adm = admission_scores(scored, c=spec.c)
    adm.to_csv(folder / "admission_scores.csv", index=False)
    report: dict[str, Any] = {
        "model_dir": str(model_dir),
        "test_file": str(test_csv),
        "task": spec.task,
        "window": spec.window.model_dump(),
        "threshold": spec.threshold,
        "model": admission_metrics(adm["Label"], adm["score"]),
    }
    if spec.threshold is not None and len(adm):
        flagged = adm["score"] >= spec.threshold
        report["model"]["at_threshold"] = {
            "flagged": int(flagged.sum()),
            "precision": float(adm.loc[flagged, "Label"].mean()) if flagged.any() else None,
            "recall": float(flagged[adm["Label"] == 1].mean()) if (adm["Label"] == 1).any() else None,
        }
    curves = {"BERT model": (adm["Label"].to_numpy(), adm["score"].to_numpy())}
    if train_csv is not None:
        from notestream.training.baseline import baseline_scores

        base = admission_scores(baseline_scores(read_chunks(train_csv), test), c=spec.c)
        report["baseline"] = {"name": "bag-of-words (TF-IDF + logistic regression)"} | admission_metrics(
            base["Label"], base["score"]
        )
        curves["Bag-of-words"] = (base["Label"].to_numpy(), base["score"].to_numpy())
    report["plots"] = [str(p) for p in plot_curves(curves, folder)]
    (folder / "report.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    return report
