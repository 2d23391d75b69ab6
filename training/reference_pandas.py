"""The reference preprocessing as plain, in-memory pandas, written from docs/reference.md §1-§5.

It loads whole tables into memory, as the original script did, so it only suits small inputs. It
exists to check :func:`notestream.training.prepare.prepare` (same admissions and chunks in every file for the same
input) and as the baseline of ``benchmarks/prepare.py``. MIMIC-III files only.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from notestream.models.chunking import chunk_words
from notestream.models.text import clean
from notestream.training.labels import readmission_cohort
from notestream.training.split import EXTRA_NEGATIVES, reference_split


def _read(folder: Path, name: str) -> pd.DataFrame:
    for suffix in (".csv", ".csv.gz"):
        path = folder / f"{name}{suffix}"
        if path.exists():
            df = pd.read_csv(path, low_memory=False)
            df.columns = [c.upper() for c in df.columns]
            return df
    raise FileNotFoundError(f"No {name}.csv(.gz) in {folder}.")


def reference_chunks(texts: pd.DataFrame) -> pd.DataFrame:
    """Rows (HADM_ID, TEXT, OUTPUT_LABEL) -> chunk rows (ID, TEXT, Label), in order."""
    rows = []
    for hadm, text, label in zip(texts["HADM_ID"], texts["TEXT"], texts["OUTPUT_LABEL"], strict=True):
        for chunk in chunk_words(clean(text, "huang2019")):
            rows.append((int(hadm), chunk, int(label)))
    return pd.DataFrame(rows, columns=["ID", "TEXT", "Label"])


def reference_prepare(folder: str | Path, notes: str = "discharge") -> dict[str, pd.DataFrame]:
    """chunks / train / val / test frames of the reference pipeline for ``notes`` (discharge, early-2d,
    early-3d)."""
    root = Path(folder)
    adm = _read(root, "ADMISSIONS")
    cohort = readmission_cohort(adm)
    df_notes = _read(root, "NOTEEVENTS")
    df_notes = df_notes[["SUBJECT_ID", "HADM_ID", "CHARTDATE", "TEXT", "CATEGORY"]]
    df_notes = df_notes.sort_values(["SUBJECT_ID", "HADM_ID", "CHARTDATE"], kind="stable")
    merged = pd.merge(
        cohort[["SUBJECT_ID", "HADM_ID", "ADMITTIME", "OUTPUT_LABEL", "DURATION"]],
        df_notes,
        on=["SUBJECT_ID", "HADM_ID"],
        how="left",
    )
    merged["ADMITTIME_C"] = pd.to_datetime(
        merged["ADMITTIME"].astype(str).str.split(" ").str[0], errors="coerce"
    )
    merged["CHARTDATE"] = pd.to_datetime(
        merged["CHARTDATE"].astype("string").str[:10], format="%Y-%m-%d", errors="coerce"
    )
    if notes == "discharge":
        ds = merged[merged["CATEGORY"] == "Discharge summary"]
        last = pd.DataFrame(ds.groupby(["SUBJECT_ID", "HADM_ID"], sort=True).nth(-1))
        last = last.sort_values(["SUBJECT_ID", "HADM_ID"], kind="stable")
        texts = last[last["TEXT"].notna()]
    else:
        n = 2 if notes == "early-2d" else 3
        days = (merged["CHARTDATE"] - merged["ADMITTIME_C"]).dt.total_seconds() / 86400
        early = merged[(days < n) & merged["TEXT"].notna()]
        texts = early.groupby("HADM_ID", sort=True).agg(
            TEXT=("TEXT", " ".join), OUTPUT_LABEL=("OUTPUT_LABEL", "first")
        )
        texts = texts.reset_index()
    chunks = reference_chunks(texts)
    split = reference_split(cohort, extra_negatives=EXTRA_NEGATIVES.get(notes, 0))
    train = pd.concat([chunks[chunks["ID"].isin(split.extra)], chunks[chunks["ID"].isin(split.train)]])
    train = train.sample(frac=1, random_state=1).reset_index(drop=True)
    test_ids = pd.Series(split.test)
    if notes != "discharge":
        n = 2 if notes == "early-2d" else 3
        test_ids = test_ids[test_ids.isin(cohort.loc[cohort["DURATION"] >= n, "HADM_ID"])]
    out = {
        "chunks": chunks,
        "train": train,
        "val": chunks[chunks["ID"].isin(split.val)],
        "test": chunks[chunks["ID"].isin(test_ids)],
    }
    if notes == "early-2d":
        del out["train"], out["val"]
    return {k: v.reset_index(drop=True) for k, v in out.items()}
