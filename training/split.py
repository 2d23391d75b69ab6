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
    val_balanced: list[int] | None = None
    """With val at natural prevalence: its balanced subset (the reference protocol), else None."""
    test_balanced: list[int] | None = None

    def labels(self) -> dict[str, list[int]]:
        out = {"train": self.train, "val": self.val, "test": self.test, "extra": self.extra}
        if self.val_balanced is not None and self.test_balanced is not None:
            out |= {"val_balanced": self.val_balanced, "test_balanced": self.test_balanced}
        return out


def reference_split(cohort: pd.DataFrame, *, extra_negatives: int = 0) -> SplitIds:
    """The reference split of ``cohort`` (HADM_ID, OUTPUT_LABEL; index as in the reference)."""
    readmit = cohort.loc[cohort["OUTPUT_LABEL"] == 1, "HADM_ID"]
    not_readmit = cohort.loc[cohort["OUTPUT_LABEL"] == 0, "HADM_ID"]
    if len(readmit) == 0:
        raise SplitError("The cohort has no positive admissions; a balanced split needs some.")
    if len(not_readmit) == 0:
        raise SplitError("The cohort has no negative admissions; a balanced split needs some.")
    if len(not_readmit) < len(readmit):
        # positives outnumber negatives (a prolonged stay): subsample the positives instead, and keep
        # the unused ones out of every part
        readmit = readmit.sample(n=len(not_readmit), random_state=SEED).sort_index()
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


def natural_prevalence(cohort: pd.DataFrame, split: SplitIds) -> SplitIds:
    """``split`` (a :func:`reference_split`) with val and test grown to the cohort's prevalence, for
    evaluating as deployed: each gets the negatives that bring its positives to the cohort's share, from
    the negatives no part uses (its reference negatives first, so the balanced parts stay subsets and
    are kept as ``val_balanced`` / ``test_balanced``). Training is unchanged (balanced, as the reference).

    >>> cohort = pd.DataFrame({"HADM_ID": range(200), "SUBJECT_ID": range(200),
    ...                        "OUTPUT_LABEL": [1] * 20 + [0] * 180})
    >>> s = natural_prevalence(cohort, reference_split(cohort))
    >>> positives = set(range(20))
    >>> [(len(ids), len(set(ids) & positives)) for ids in (s.val, s.test, s.val_balanced, s.test_balanced)]
    [(20, 2), (20, 2), (4, 2), (4, 2)]
    >>> set(s.val_balanced) <= set(s.val), set(s.val) & set(s.test), set(s.val) & set(s.train)
    (True, set(), set())
    """
    label = cohort.set_index("HADM_ID")["OUTPUT_LABEL"]
    positives, negatives = int((label == 1).sum()), int((label == 0).sum())
    used = set(split.train) | set(split.val) | set(split.test) | set(split.extra)
    pool = cohort.loc[(cohort["OUTPUT_LABEL"] == 0) & ~cohort["HADM_ID"].isin(used), "HADM_ID"]
    # a small cohort's extra training negatives may be needed to reach the prevalence: they go last
    extra = pd.Series(split.extra, dtype="int64")
    notes = list(split.notes)
    grown: dict[str, list[int]] = {}
    for name, ids in (("val", split.val), ("test", split.test)):
        pos = [i for i in ids if label[i] == 1]
        want = max(round(len(pos) * negatives / positives) - (len(ids) - len(pos)), 0)
        added = pool.sample(n=min(want, len(pool)), random_state=SEED)
        pool = pool.drop(added.index)
        if len(added) < want:
            moved = extra.iloc[: want - len(added)]
            extra = extra.iloc[len(moved) :]
            added = pd.concat([added, moved])
            notes.append(f"{len(moved)} extra training negatives moved to {name} to reach the prevalence")
            if len(added) < want:
                notes.append(f"only {len(added)} unused negatives to bring {name} to the cohort's prevalence")
        grown[name] = [*ids, *map(int, added)]
    return SplitIds(
        train=split.train,
        val=grown["val"],
        test=grown["test"],
        extra=[int(x) for x in extra],
        notes=notes,
        val_balanced=list(split.val),
        test_balanced=list(split.test),
    )


def patient_split(
    cohort: pd.DataFrame,
    *,
    seed: int = SEED,
    val_frac: float = 0.1,
    test_frac: float = 0.1,
    balance: bool = True,
    balance_eval: bool = True,
) -> SplitIds:
    """Split by SUBJECT_ID so no patient is in two parts; within each part negatives are subsampled to
    the number of positives when ``balance`` (as the reference balances its parts). Without
    ``balance_eval``, val and test keep the cohort's prevalence and their balanced subsets are
    ``val_balanced`` / ``test_balanced``.

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
        # a balanced part keeps as many of each class as the smaller one has
        few = min(len(pos), len(neg))
        out[f"{name}_balanced"] = [
            *map(int, pos.sample(n=few, random_state=seed) if len(pos) > few else pos),
            *map(int, neg.sample(n=few, random_state=seed)),
        ]
        balanced = balance and (name == "train" or balance_eval)
        out[name] = out[f"{name}_balanced"] if balanced else [*map(int, pos), *map(int, neg)]
    if not out["train"] or not any(cohort["OUTPUT_LABEL"] == 1):
        raise SplitError("The patient split left no training admissions; use a larger cohort.")
    natural = not balance_eval
    return SplitIds(
        train=out["train"],
        val=out["val"],
        test=out["test"],
        val_balanced=out["val_balanced"] if natural else None,
        test_balanced=out["test_balanced"] if natural else None,
    )


def shuffle_positions(n: int) -> np.ndarray:
    """The row order of the reference's final ``sample(frac=1, random_state=1)`` of ``n`` training rows.

    >>> sorted(shuffle_positions(5).tolist())
    [0, 1, 2, 3, 4]
    """
    return pd.RangeIndex(n).to_series().sample(frac=1, random_state=SEED).to_numpy()
