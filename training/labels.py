"""Admission labels: 30-day readmission exactly as the reference (docs/reference.md §1), mortality, long stay.

All functions are pure: a DataFrame of admissions in, a new DataFrame out. Columns (upper case):
SUBJECT_ID, HADM_ID, ADMITTIME, DISCHTIME, DEATHTIME, ADMISSION_TYPE; times as datetimes (strings are
parsed as ``%Y-%m-%d %H:%M:%S`` or ``%Y-%m-%d``, anything else -> missing).

Worked example: an EMERGENCY stay, an ELECTIVE one 10 days later, then an URGENT one 20 days after that.
The ELECTIVE admission is not a readmission, so the first stay looks past it to the URGENT one:

>>> adm = pd.DataFrame({
...     "SUBJECT_ID": [1, 1, 1], "HADM_ID": [10, 11, 12],
...     "ADMITTIME": ["2150-01-01 08:00:00", "2150-01-15 08:00:00", "2150-02-10 08:00:00"],
...     "DISCHTIME": ["2150-01-05 08:00:00", "2150-01-20 08:00:00", "2150-02-12 08:00:00"],
...     "DEATHTIME": [None, None, None], "ADMISSION_TYPE": ["EMERGENCY", "ELECTIVE", "URGENT"]})
>>> out = readmission_labels(adm)
>>> out[["HADM_ID", "DAYS_NEXT_ADMIT", "OUTPUT_LABEL"]].to_string(index=False)
' HADM_ID  DAYS_NEXT_ADMIT  OUTPUT_LABEL\\n      10             36.0             0\\n      11             21.0             1\\n      12              NaN             0'
"""

from __future__ import annotations

import numpy as np
import pandas as pd

SECONDS_PER_DAY = 24 * 60 * 60
READMISSION_DAYS = 30.0
PROLONGED_DAYS = 7.0
ADMISSION_COLUMNS = ["SUBJECT_ID", "HADM_ID", "ADMITTIME", "DISCHTIME", "DEATHTIME", "ADMISSION_TYPE"]
COHORT_COLUMNS = ["HADM_ID", "SUBJECT_ID", "OUTPUT_LABEL", "DAYS_NEXT_ADMIT", "DURATION"]


def to_time(values: pd.Series) -> pd.Series:
    """Parse times the way the reference does (``%Y-%m-%d %H:%M:%S``), also accepting bare dates;
    anything unparseable becomes NaT.

    >>> to_time(pd.Series(["2150-01-02 03:04:05", "2150-01-02", "soon", None])).tolist()
    [Timestamp('2150-01-02 03:04:05'), Timestamp('2150-01-02 00:00:00'), NaT, NaT]
    """
    if pd.api.types.is_datetime64_any_dtype(values):
        return values.astype("datetime64[ns]")
    text = values.astype("string")
    full = pd.to_datetime(text, format="%Y-%m-%d %H:%M:%S", errors="coerce")
    day = pd.to_datetime(text, format="%Y-%m-%d", errors="coerce")
    return full.fillna(day).astype("datetime64[ns]")


def _days(delta: pd.Series) -> pd.Series:
    return delta.dt.total_seconds() / SECONDS_PER_DAY


def readmission_labels(admissions: pd.DataFrame) -> pd.DataFrame:
    """Every admission with NEXT_ADMITTIME, NEXT_ADMISSION_TYPE, DAYS_NEXT_ADMIT, OUTPUT_LABEL, DURATION.

    Steps (docs/reference.md §1): sort by (SUBJECT_ID, ADMITTIME) and renumber the index 0..n-1 (the split
    samples from this index); the next admission of the subject gives NEXT_*; an ELECTIVE next admission
    is blanked and the blank back-filled within the subject; DAYS_NEXT_ADMIT = (NEXT_ADMITTIME -
    DISCHTIME) in days; OUTPUT_LABEL = DAYS_NEXT_ADMIT < 30 (missing -> 0, negative -> 1). NEWBORN and
    fatal admissions are kept here: they may be someone's next admission. See :func:`readmission_cohort`.
    """
    df = admissions.copy()
    for column in ("ADMITTIME", "DISCHTIME", "DEATHTIME"):
        df[column] = to_time(df[column])
    df = df.sort_values(["SUBJECT_ID", "ADMITTIME"], kind="stable").reset_index(drop=True)
    by_subject = df.groupby("SUBJECT_ID", sort=False)
    df["NEXT_ADMITTIME"] = by_subject["ADMITTIME"].shift(-1)
    df["NEXT_ADMISSION_TYPE"] = by_subject["ADMISSION_TYPE"].shift(-1)
    elective = df["NEXT_ADMISSION_TYPE"] == "ELECTIVE"
    df.loc[elective, "NEXT_ADMITTIME"] = pd.NaT
    df.loc[elective, "NEXT_ADMISSION_TYPE"] = np.nan
    filled = df.groupby("SUBJECT_ID", sort=False)[["NEXT_ADMITTIME", "NEXT_ADMISSION_TYPE"]].bfill()
    df["NEXT_ADMITTIME"] = filled["NEXT_ADMITTIME"]
    df["NEXT_ADMISSION_TYPE"] = filled["NEXT_ADMISSION_TYPE"]
    df["DAYS_NEXT_ADMIT"] = _days(df["NEXT_ADMITTIME"] - df["DISCHTIME"])
    df["OUTPUT_LABEL"] = (df["DAYS_NEXT_ADMIT"] < READMISSION_DAYS).astype(int)
    df["DURATION"] = _days(df["DISCHTIME"] - df["ADMITTIME"])
    return df


def readmission_cohort(admissions: pd.DataFrame) -> pd.DataFrame:
    """The reference cohort: labelled admissions without NEWBORN ones and without a DEATHTIME.

    The index is that of :func:`readmission_labels` (positions in (SUBJECT_ID, ADMITTIME) order), which
    the reference split samples from.
    """
    df = readmission_labels(admissions)
    df = df[df["ADMISSION_TYPE"] != "NEWBORN"]
    return df[df["DEATHTIME"].isna()]


def mortality_cohort(admissions: pd.DataFrame, *, min_days: float = 0.0) -> pd.DataFrame:
    """In-hospital mortality: OUTPUT_LABEL = 1 when the admission has a DEATHTIME.

    NEWBORN admissions are left out, and so are stays shorter than ``min_days`` (set it to the note
    window, so that every admission is still in hospital when its notes are read).
    """
    df = readmission_labels(admissions)
    df = df[df["ADMISSION_TYPE"] != "NEWBORN"].copy()
    df["OUTPUT_LABEL"] = df["DEATHTIME"].notna().astype(int)
    return df[df["DURATION"] >= min_days]


def prolonged_stay_cohort(
    admissions: pd.DataFrame, *, days: float = PROLONGED_DAYS, min_days: float = 0.0
) -> pd.DataFrame:
    """Prolonged stay: OUTPUT_LABEL = 1 when DURATION > ``days`` (7). NEWBORN admissions and stays
    shorter than ``min_days`` are left out; so are deaths inside the stay (their length is not a
    discharge decision).

    >>> adm = pd.DataFrame({"SUBJECT_ID": [1, 2], "HADM_ID": [1, 2],
    ...     "ADMITTIME": ["2150-01-01", "2150-01-01"], "DISCHTIME": ["2150-01-08", "2150-01-09"],
    ...     "DEATHTIME": [None, None], "ADMISSION_TYPE": ["URGENT", "URGENT"]})
    >>> prolonged_stay_cohort(adm)["OUTPUT_LABEL"].tolist()
    [0, 1]
    """
    df = readmission_labels(admissions)
    df = df[(df["ADMISSION_TYPE"] != "NEWBORN") & df["DEATHTIME"].isna()].copy()
    df["OUTPUT_LABEL"] = (df["DURATION"] > days).astype(int)
    return df[df["DURATION"] >= min_days]


def cohort_table(cohort: pd.DataFrame) -> pd.DataFrame:
    """The ``cohort.csv`` columns: HADM_ID, SUBJECT_ID, OUTPUT_LABEL, DAYS_NEXT_ADMIT, DURATION."""
    return cohort[COHORT_COLUMNS].reset_index(drop=True)
