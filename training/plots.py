"""Evaluation plots: ROC and precision-recall curves of admission scores."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def plot_curves(curves: dict[str, tuple[np.ndarray, np.ndarray]], out_dir: str | Path) -> list[Path]:
    """ROC and precision-recall curves of each (labels, scores) pair as ``roc.png`` and ``pr.png``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.metrics import auc, precision_recall_curve, roc_curve

    folder = Path(out_dir)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for kind in ("roc", "pr"):
        fig, ax = plt.subplots(figsize=(5, 5))
        for name, (labels, scores) in curves.items():
            if len(np.unique(labels)) < 2:
                continue
            if kind == "roc":
                x, y, _ = roc_curve(labels, scores)
                ax.plot(x, y, label=f"{name} (AUROC {auc(x, y):.3f})")
            else:
                p, r, _ = precision_recall_curve(labels, scores)
                ax.plot(r, p, label=f"{name} (AUPRC {auc(r, p):.3f})")
        if kind == "roc":
            ax.plot([0, 1], [0, 1], linestyle="--", color="grey", linewidth=0.8)
            ax.set(xlabel="False positive rate", ylabel="True positive rate", title="ROC (admissions)")
        else:
            ax.axhline(0.8, linestyle=":", color="grey", linewidth=0.8)
            ax.set(xlabel="Recall", ylabel="Precision", title="Precision-recall (admissions)")
        ax.legend(loc="lower right" if kind == "roc" else "lower left", fontsize=8)
        fig.tight_layout()
        path = folder / f"{kind}.png"
        fig.savefig(path, dpi=120)
        plt.close(fig)
        paths.append(path)
    return paths
