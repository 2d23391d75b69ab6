"""Evaluate chunk classifiers at the admission level: metrics, ROC / PR plots, JSON reports, threshold.

- :func:`score_chunks` scores a chunk file (ID, TEXT, Label) with a model folder -> ``pred_score``.
- :func:`calibrate` scores the validation file and writes into the model folder's ``notestream.json``
  the validation metrics, the calibrator of the admission score (:mod:`notestream.models.calibration`, fitted on
  these admissions: use validation data at natural prevalence) and the alert threshold of the chosen
  policy (:mod:`notestream.models.policy`; by default the RP80 point, the lowest threshold whose precision exceeds
  0.8, else the best-F1 point) with its expected precision, recall and alerts per 100 admissions.
- :func:`evaluate_model` scores a test file (and its balanced subset, when there is one), adds the
  bag-of-words baseline trained on the same split when a training file is given, and writes
  ``report.json`` (every figure with its n and prevalence, 95% bootstrap CIs of AUROC, AUPRC, AP and
  RP80, Brier score and ECE of the calibrated risk), ``roc.png``, ``pr.png``, ``reliability.png`` and
  the scores.
- :func:`evaluate_chunk_scores` evaluates a chunk-score file alone (ID, Label, pred_score) and writes
  ``metrics.json`` with the keys auroc, auprc, average_precision and rp80.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from notestream.models.calibration import CalibrationMethod, fit_calibrator
from notestream.models.policy import PolicyKind
from notestream.models.spec import ModelSpec
from notestream.training.chunk_files import read_chunks
from notestream.training.errors import TrainRunError
from notestream.training.metrics import (
    admission_metrics,
    admission_scores,
    calibration_metrics,
    choose_threshold,
    metrics_with_ci,
)
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


def calibrate(
    model_dir: str | Path,
    val_csv: str | Path,
    *,
    batch_size: int = 64,
    method: CalibrationMethod | None = "isotonic",
    policy: PolicyKind = "rp80",
    target: float | None = None,
    balanced: bool | None = None,
    n_boot: int = 1000,
) -> dict[str, Any]:
    """Score ``val_csv`` and write validation metrics, the calibrator (``method``; None: none) and the
    alert threshold of ``policy`` / ``target`` into the model folder. ``balanced`` says whether the
    validation file is the balanced reference protocol (then the calibrated risk is at 50% prevalence,
    which the report warns about)."""
    spec = ModelSpec.read(model_dir)
    scored = score_chunks(model_dir, read_chunks(val_csv), batch_size=batch_size)
    adm = admission_scores(scored, c=spec.c)
    labels, scores = adm["Label"].to_numpy(), adm["score"].to_numpy()
    metrics = metrics_with_ci(labels, scores, n_boot=n_boot)
    two_classes = len(np.unique(labels)) == 2
    choice = choose_threshold(labels, scores, policy, target) if two_classes else None
    threshold: float | None = None
    rule: str | None = None
    if choice is not None and choice.met:
        threshold, rule = choice.threshold, policy
    if threshold is None and policy == "rp80" and two_classes:
        threshold, rule = _best_f1_threshold(labels, scores), "best_f1"
        if threshold is not None:
            choice = choose_threshold(labels, scores, "budget", 100.0 * float(np.mean(scores >= threshold)))
    elif choice is not None and not choice.met:
        threshold, rule = choice.threshold, f"{policy} (target not reached: nearest)"
    metrics["distributions"] = score_distributions(scored, adm)
    calibration = None
    if method is not None and two_classes:
        calibration = fit_calibrator(labels, scores, method=method, file=str(val_csv), balanced=balanced)
        metrics["calibration"] = calibration_metrics(labels, calibration.apply_many(scores))
    new = spec.model_copy(
        update={
            "threshold": threshold,
            "calibration": calibration,
            "alert_policy": choice if threshold is not None else None,
            "metrics": {
                **spec.metrics,
                "val": metrics,
                "threshold_rule": rule if threshold is not None else None,
            },
        }
    )
    new.write(model_dir)
    return metrics


def score_distributions(chunks: pd.DataFrame, adm: pd.DataFrame) -> dict[str, Any]:
    """What ``notestream monitor`` compares live traffic with (population stability index): the share
    of admissions per tenth of the admission score and of p_max (the top chunk probability), and the
    mean chunks per admission.

    >>> chunks = pd.DataFrame({"ID": [1, 1, 2], "pred_score": [0.05, 0.95, 0.5]})
    >>> adm = pd.DataFrame({"ID": [1, 2], "score": [0.62, 0.5], "n_chunks": [2, 1]})
    >>> d = score_distributions(chunks, adm)
    >>> d["score"][5:7], d["p_max"][9], d["chunks_per_admission"]
    ([0.5, 0.5], 0.5, 1.5)
    """
    from notestream.models.drift import EDGES, shares

    p_max = chunks.groupby("ID")["pred_score"].max().to_numpy()
    return {
        "edges": EDGES,
        "score": shares(adm["score"].to_numpy()),
        "p_max": shares(p_max),
        "chunks_per_admission": float(adm["n_chunks"].mean()) if len(adm) else None,
    }


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


def plot_reliability(curves: dict[str, tuple[np.ndarray, np.ndarray]], path: str | Path) -> Path:
    """The reliability diagram (observed share of positives vs mean predicted risk, 10 equal-width
    bins) of each (labels, probabilities) pair, with n and prevalence in the legend, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 5))
    ax.plot([0, 1], [0, 1], linestyle="--", color="grey", linewidth=0.8)
    for name, (labels, probs) in curves.items():
        if len(labels) == 0:
            continue
        cal = calibration_metrics(labels, probs)
        xs = [b["predicted"] for b in cal["bins"]]
        ys = [b["observed"] for b in cal["bins"]]
        ax.plot(
            xs,
            ys,
            marker="o",
            label=f"{name} (ECE {cal['ece']:.3f}, Brier {cal['brier']:.3f}, "
            f"n={cal['n']}, prevalence {cal['prevalence']:.3f})",
        )
    ax.set(
        xlabel="Predicted risk",
        ylabel="Observed share readmitted",
        title="Reliability (admissions)",
        xlim=(0, 1),
        ylim=(0, 1),
    )
    ax.legend(loc="upper left", fontsize=7)
    fig.tight_layout()
    out = Path(path)
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return out


def _at_threshold(adm: pd.DataFrame, threshold: float | None) -> dict[str, Any] | None:
    """Alerts, precision, recall and alerts per 100 admissions at ``threshold``."""
    if threshold is None or not len(adm):
        return None
    flagged = adm["score"] >= threshold
    return {
        "flagged": int(flagged.sum()),
        "precision": float(adm.loc[flagged, "Label"].mean()) if flagged.any() else None,
        "recall": float(flagged[adm["Label"] == 1].mean()) if (adm["Label"] == 1).any() else None,
        "alerts_per_100": 100.0 * float(flagged.mean()),
        "n": len(adm),
        "prevalence": float(adm["Label"].mean()),
    }


def _label(name: str, labels: np.ndarray) -> str:
    return f"{name} (n={len(labels)}, prevalence {labels.mean():.3f})" if len(labels) else name


def evaluate_model(
    model_dir: str | Path,
    test_csv: str | Path,
    out_dir: str | Path,
    *,
    val_csv: str | Path | None = None,
    train_csv: str | Path | None = None,
    balanced_test_csv: str | Path | None = None,
    balanced: bool | None = None,
    batch_size: int = 64,
    method: CalibrationMethod | None = "isotonic",
    policy: PolicyKind = "rp80",
    target: float | None = None,
    n_boot: int = 1000,
    demographics_csv: str | Path | None = None,
    subgroup_margin: float = 0.05,
) -> dict[str, Any]:
    """Evaluate a model folder on ``test_csv`` (and the baseline trained on ``train_csv``) -> report.

    With ``val_csv`` the calibrator and the alert threshold are fitted on it first (:func:`calibrate`).
    ``balanced_test_csv`` (the reference protocol's balanced subset of the test admissions) is
    evaluated too, as ``model_balanced``. ``balanced`` says whether ``test_csv`` and ``val_csv`` are
    the balanced protocol themselves. With ``demographics_csv`` (``prepare``'s) the report gains
    ``subgroups`` (:func:`notestream.training.subgroups.subgroup_report`, gaps over ``subgroup_margin`` flagged) and
    ``subgroups.png``. Returns the report dict (also ``out_dir/report.json``) with
    ``model`` (every metric with n, prevalence and 95% CIs; ``calibration``: Brier, ECE, bins) and,
    when trained, ``baseline`` metrics.
    """
    folder = Path(out_dir)
    folder.mkdir(parents=True, exist_ok=True)
    if val_csv is not None:
        calibrate(
            model_dir,
            val_csv,
            batch_size=batch_size,
            method=method,
            policy=policy,
            target=target,
            balanced=balanced,
            n_boot=n_boot,
        )
    spec = ModelSpec.read(model_dir)
    test = read_chunks(test_csv)
    scored = score_chunks(model_dir, test, batch_size=batch_size)
    scored[["ID", "Label", "pred_score"]].to_csv(folder / "chunk_scores.csv", index=False)
    adm = admission_scores(scored, c=spec.c)
    if spec.calibration is not None:
        adm["risk"] = spec.calibration.apply_many(adm["score"].to_numpy())
    adm.to_csv(folder / "admission_scores.csv", index=False)
    labels = adm["Label"].to_numpy()
    report: dict[str, Any] = {
        "model_dir": str(model_dir),
        "test_file": str(test_csv),
        "protocol": "balanced" if balanced else ("natural" if balanced is False else "as given"),
        "task": spec.task,
        "window": spec.window.model_dump(),
        "threshold": spec.threshold,
        "alert_policy": spec.alert_policy.model_dump() if spec.alert_policy is not None else None,
        "model": metrics_with_ci(labels, adm["score"], n_boot=n_boot),
    }
    report["model"]["at_threshold"] = _at_threshold(adm, spec.threshold)
    if spec.calibration is not None:
        report["calibrator"] = {"method": spec.calibration.method, "fitted_on": spec.calibration.fitted_on}
        report["model"]["calibration"] = calibration_metrics(labels, adm["risk"])
        report["model"]["calibration_raw_score"] = calibration_metrics(labels, adm["score"])
        if spec.calibration.fitted_on.get("balanced"):
            report["warnings"] = [
                "The calibrator was fitted on balanced validation data: its risks are at 50% prevalence and "
                "overstate the risk of a real population. Prepare with natural prevalence (--no-balance)."
            ]
    curves = {_label("BERT model", labels): (labels, adm["score"].to_numpy())}
    if balanced_test_csv is not None:
        ids = set(read_chunks(balanced_test_csv)["ID"])
        sub = adm[adm["ID"].isin(ids)]
        report["test_balanced_file"] = str(balanced_test_csv)
        report["model_balanced"] = metrics_with_ci(sub["Label"], sub["score"], n_boot=n_boot)
        report["model_balanced"]["at_threshold"] = _at_threshold(sub, spec.threshold)
        curves[_label("BERT model, balanced", sub["Label"].to_numpy())] = (
            sub["Label"].to_numpy(),
            sub["score"].to_numpy(),
        )
    if train_csv is not None:
        from notestream.training.baseline import baseline_scores

        base = admission_scores(baseline_scores(read_chunks(train_csv), test), c=spec.c)
        report["baseline"] = {"name": "bag-of-words (TF-IDF + logistic regression)"} | metrics_with_ci(
            base["Label"], base["score"], n_boot=n_boot
        )
        curves[_label("Bag-of-words", base["Label"].to_numpy())] = (
            base["Label"].to_numpy(),
            base["score"].to_numpy(),
        )
    plots = plot_curves(curves, folder)
    if spec.calibration is not None:
        reliability = {
            "calibrated risk": (labels, adm["risk"].to_numpy()),
            "raw score": (labels, adm["score"].to_numpy()),
        }
        plots.append(plot_reliability(reliability, folder / "reliability.png"))
    if demographics_csv is not None:
        from notestream.training.subgroups import plot_subgroups, subgroup_report

        demo = pd.read_csv(demographics_csv)
        report["subgroups"] = subgroup_report(
            adm, demo, threshold=spec.threshold, n_boot=n_boot, margin=subgroup_margin
        )
        plots.append(plot_subgroups(report["subgroups"], folder / "subgroups.png"))
    report["plots"] = [str(p) for p in plots]
    (folder / "report.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    return report
