"""The paper's bag-of-words baseline: TF-IDF features + logistic regression, on the same chunk split.

It is trained on the training chunks (ID, TEXT, Label) and scores the test chunks; the admission score
and metrics are then computed exactly as for the model (docs/reference.md §7-§8), so the two sit side by side
in each report.

>>> train = pd.DataFrame({"ID": [1, 2, 3, 4], "TEXT": ["bad bad", "bad sad", "good fine", "fine good"],
...                       "Label": [1, 1, 0, 0]})
>>> scored = baseline_scores(train, train.assign(ID=[5, 6, 7, 8]), min_df=1)
>>> bool(scored["pred_score"].iloc[0] > scored["pred_score"].iloc[2])
True
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd

from notestream.training.errors import TrainRunError


def baseline_scores(
    train: pd.DataFrame,
    test: pd.DataFrame,
    *,
    max_features: int = 5000,
    min_df: int = 2,
    c: float = 1.0,
    seed: int = 1,
) -> pd.DataFrame:
    """``test`` with ``pred_score``: probabilities of a TF-IDF + logistic regression chunk classifier."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression

    if train["Label"].nunique() < 2:
        raise TrainRunError("The baseline needs training chunks of both labels.")
    vectorizer = TfidfVectorizer(
        max_features=max_features, min_df=min(min_df, len(train)), ngram_range=(1, 2)
    )
    x_train = vectorizer.fit_transform(train["TEXT"].astype(str))
    model = LogisticRegression(C=c, max_iter=1000, random_state=seed)
    model.fit(x_train, train["Label"].astype(int))
    out = test.copy()
    out["pred_score"] = (
        model.predict_proba(vectorizer.transform(test["TEXT"].astype(str)))[:, 1] if len(test) else []
    )
    return out


def baseline_report(data_dir: str | Path, out_dir: str | Path) -> dict[str, Any]:
    """Train the baseline on ``data_dir/train.csv``, score ``test.csv``; writes report.json and plots."""
    from notestream.training.chunk_files import read_chunks
    from notestream.training.metrics import admission_metrics, admission_scores
    from notestream.training.plots import plot_curves

    folder = Path(out_dir)
    folder.mkdir(parents=True, exist_ok=True)
    data = Path(data_dir)
    adm = admission_scores(baseline_scores(read_chunks(data / "train.csv"), read_chunks(data / "test.csv")))
    report: dict[str, Any] = {
        "test_file": str(data / "test.csv"),
        "baseline": {"name": "bag-of-words (TF-IDF + logistic regression)"}
        | admission_metrics(adm["Label"], adm["score"]),
    }
    report["plots"] = [
        str(p)
        for p in plot_curves({"Bag-of-words": (adm["Label"].to_numpy(), adm["score"].to_numpy())}, folder)
    ]
    (folder / "report.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    return report
