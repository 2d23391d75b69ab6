"""Train / validation / test splits of a cohort: the reference split (docs/reference.md §5) and a patient split.

The reference split works on admission ids with pandas ``random_state=1`` everywhere, on the cohort in
the (SUBJECT_ID, ADMITTIME) order of :func:`notestream.training.labels.readmission_cohort` (its index matters:
``drop`` removes by index label). Steps: negatives subsampled to the number of positives; 20% of each
class to val+test, split 50/50 per class; the rest is train; ``extra_negatives`` unused negatives join
the training chunks, which are then shuffled. Admissions are split, not patients, so one patient can
sit in train and test: :func:`patient_split` avoids that.

>>> cohort = pd.DataFrame({"HADM_ID": range(100, 140), "SUBJECT_ID": range(40),
...                        "OUTPUT_LABEL": [1] * 10 + [0] * 30})
>>> s = reference_split(cohort, extra_negatives=5)
>>> len(s.train), len(s.val), len(s.test), len(s.extra)
(16, 2, 2, 5)
>>> set(s.train) & set(s.test) or set(s.extra) & (set(s.train) | set(s.val) | set(s.test))
set()
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from notestream.training.errors import SplitError

SEED = 1
EXTRA_NEGATIVES = {"discharge": 400, "early-3d": 500}


@dataclass
class SplitIds:
    """Admission ids per part. ``extra`` are the additional training negatives (chunks only)."""

    train: list[int]
    val: list[int]
    test: list[int]
    extra: list[int] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def labels(self) -> dict[str, list[int]]:
        return {"train": self.train, "val": self.val, "test": self.test, "extra": self.extra}


def reference_split(cohort: pd.DataFrame, *, extra_negatives: int = 0) -> SplitIds:
    """The reference split of ``cohort`` (HADM_ID, OUTPUT_LABEL; index as in the reference)."""
    readmit = cohort.loc[cohort["OUTPUT_LABEL"] == 1, "HADM_ID"]
    not_readmit = cohort.loc[cohort["OUTPUT_LABEL"] == 0, "HADM_ID"]
    if len(readmit) == 0:
        raise SplitError("The cohort has no positive admissions; a balanced split needs some.")
    if len(not_readmit) < len(readmit):
        raise SplitError(
            f"The cohort has {len(not_readmit)} negatives for {len(readmit)} positives; the reference "
            "split subsamples negatives to the positives' count, so it needs at least as many."
        )
    negatives = not_readmit.sample(n=len(readmit), random_state=SEED)
    val_test_t = readmit.sample(frac=0.2, random_state=SEED)
    val_test_f = negatives.sample(frac=0.2, random_state=SEED)
    train_t = readmit.drop(val_test_t.index)
    train_f = negatives.drop(val_test_f.index)
    val_t = val_test_t.sample(frac=0.5, random_state=SEED)
    test_t = val_test_t.drop(val_t.index)
    val_f = val_test_f.sample(frac=0.5, random_state=SEED)
    test_f = val_test_f.drop(val_f.index)
    notes: list[str] = []
    extra = pd.Series([], dtype="int64")
    if extra_negatives:
        unused = pd.concat([negatives, not_readmit]).drop_duplicates(keep=False)
        n = min(extra_negatives, len(unused))
        if n < extra_negatives:
            notes.append(f"only {n} unused negatives for the {extra_negatives} extra training negatives")
        extra = unused.sample(n=n, random_state=SEED)
    return SplitIds(
        train=[*map(int, train_t), *map(int, train_f)],
        val=[*map(int, val_t), *map(int, val_f)],
        test=[*map(int, test_t), *map(int, test_f)],
        extra=[int(x) for x in extra],
        notes=notes,
    )


def patient_split(
    cohort: pd.DataFrame,
    *,
    seed: int = SEED,
    val_frac: float = 0.1,
    test_frac: float = 0.1,
    balance: bool = True,
) -> SplitIds:
    """Split by SUBJECT_ID so no patient is in two parts; within each part negatives are subsampled to
    the number of positives when ``balance`` (as the reference balances its parts).

    >>> cohort = pd.DataFrame({"HADM_ID": range(60), "SUBJECT_ID": [i // 2 for i in range(60)],
    ...                        "OUTPUT_LABEL": [i % 3 == 0 for i in range(60)]})
    >>> s = patient_split(cohort, seed=3)
    >>> subjects = {p: set(cohort.set_index("HADM_ID").loc[ids, "SUBJECT_ID"]) for p, ids in s.labels().items() if ids}
    >>> subjects["train"] & subjects["test"], subjects["train"] & subjects["val"]
    (set(), set())
    """
    subjects = np.sort(cohort["SUBJECT_ID"].unique())
    order = np.random.RandomState(seed).permutation(len(subjects))
    n_test = round(len(subjects) * test_frac)
    n_val = round(len(subjects) * val_frac)
    part_of = dict.fromkeys(subjects[order[:n_test]].tolist(), "test")
    part_of.update(dict.fromkeys(subjects[order[n_test : n_test + n_val]].tolist(), "val"))
    parts = cohort["SUBJECT_ID"].map(lambda s: part_of.get(s, "train"))
    out: dict[str, list[int]] = {}
    for name in ("train", "val", "test"):
        rows = cohort[parts == name]
        pos = rows.loc[rows["OUTPUT_LABEL"] == 1, "HADM_ID"]
        neg = rows.loc[rows["OUTPUT_LABEL"] == 0, "HADM_ID"]
        if balance:
            neg = neg.sample(n=min(len(pos), len(neg)), random_state=seed)
        out[name] = [*map(int, pos), *map(int, neg)]
    if not out["train"] or not any(cohort["OUTPUT_LABEL"] == 1):
        raise SplitError("The patient split left no training admissions; use a larger cohort.")
    return SplitIds(train=out["train"], val=out["val"], test=out["test"])


def shuffle_positions(n: int) -> np.ndarray:
    """The row order of the reference's final ``sample(frac=1, random_state=1)`` of ``n`` training rows.

    >>> sorted(shuffle_positions(5).tolist())
    [0, 1, 2, 3, 4]
    """
    return pd.RangeIndex(n).to_series().sample(frac=1, random_state=SEED).to_numpy()
