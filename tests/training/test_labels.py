"""docs/reference.md §1: 30-day readmission labels, with every edge case the rule names."""

from __future__ import annotations

import pandas as pd
import pytest

from notestream.training.labels import (
    mortality_cohort,
    prolonged_stay_cohort,
    readmission_cohort,
    readmission_labels,
)


def _adm(rows: list[tuple[int, int, str, str, str | None, str]]) -> pd.DataFrame:
    return pd.DataFrame(
        rows, columns=["SUBJECT_ID", "HADM_ID", "ADMITTIME", "DISCHTIME", "DEATHTIME", "ADMISSION_TYPE"]
    )


def _label(df: pd.DataFrame, hadm: int) -> int:
    return int(df.loc[df["HADM_ID"] == hadm, "OUTPUT_LABEL"].iloc[0])


@pytest.mark.parametrize(
    ("next_admit", "label"),
    [
        ("2150-01-31 12:00:00", 0),  # exactly 30.0 days: strict '<'
        ("2150-01-31 11:59:59", 1),  # 29.99999 days
        ("2150-01-01 10:00:00", 1),  # next admission before this discharge: negative gap
        ("2150-03-01 12:00:00", 0),
    ],
)
def test_gap_boundaries(next_admit: str, label: int) -> None:
    df = readmission_labels(
        _adm(
            [
                (1, 10, "2149-12-28 08:00:00", "2150-01-01 12:00:00", None, "EMERGENCY"),
                (1, 11, next_admit, "2150-03-05 12:00:00", None, "URGENT"),
            ]
        )
    )
    assert _label(df, 10) == label
    assert _label(df, 11) == 0  # no next admission
    assert pd.isna(df.loc[df["HADM_ID"] == 11, "DAYS_NEXT_ADMIT"].iloc[0])


def test_exact_days_value() -> None:
    df = readmission_labels(
        _adm(
            [
                (1, 10, "2150-01-01 00:00:00", "2150-01-02 00:00:00", None, "EMERGENCY"),
                (1, 11, "2150-01-03 12:00:00", "2150-01-04 00:00:00", None, "EMERGENCY"),
            ]
        )
    )
    assert df["DAYS_NEXT_ADMIT"].iloc[0] == pytest.approx(1.5)
    assert df["DURATION"].tolist() == pytest.approx([1.0, 0.5])


def test_elective_chain_is_skipped_and_elective_index_stays() -> None:
    df = readmission_labels(
        _adm(
            [
                (1, 10, "2150-01-01 00:00:00", "2150-01-02 00:00:00", None, "EMERGENCY"),
                (1, 11, "2150-01-05 00:00:00", "2150-01-06 00:00:00", None, "ELECTIVE"),
                (1, 12, "2150-01-10 00:00:00", "2150-01-11 00:00:00", None, "ELECTIVE"),
                (1, 13, "2150-01-25 00:00:00", "2150-01-26 00:00:00", None, "URGENT"),
            ]
        )
    )
    assert df["NEXT_ADMISSION_TYPE"].tolist()[:3] == ["URGENT", "URGENT", "URGENT"]
    assert df["DAYS_NEXT_ADMIT"].tolist()[:3] == pytest.approx([23.0, 19.0, 14.0])
    assert df["OUTPUT_LABEL"].tolist() == [1, 1, 1, 0]
    cohort = readmission_cohort(df.iloc[:, :6])
    assert 11 in set(cohort["HADM_ID"])  # an ELECTIVE index admission stays in the cohort


def test_elective_only_next_gives_no_next_and_backfill_stays_in_subject() -> None:
    df = readmission_labels(
        _adm(
            [
                (1, 10, "2150-01-01 00:00:00", "2150-01-02 00:00:00", None, "EMERGENCY"),
                (1, 11, "2150-01-05 00:00:00", "2150-01-06 00:00:00", None, "ELECTIVE"),
                (2, 20, "2150-01-07 00:00:00", "2150-01-08 00:00:00", None, "EMERGENCY"),
            ]
        )
    )
    assert pd.isna(df.loc[0, "NEXT_ADMITTIME"])  # not subject 2's admission
    assert df["OUTPUT_LABEL"].tolist() == [0, 0, 0]


def test_newborn_and_fatal_next_admissions_count_then_are_dropped() -> None:
    adm = _adm(
        [
            (1, 10, "2150-01-01 00:00:00", "2150-01-02 00:00:00", None, "EMERGENCY"),
            (1, 11, "2150-01-12 00:00:00", "2150-01-13 00:00:00", None, "NEWBORN"),
            (2, 20, "2150-01-01 00:00:00", "2150-01-02 00:00:00", None, "URGENT"),
            (2, 21, "2150-01-20 00:00:00", "2150-01-22 00:00:00", "2150-01-22 00:00:00", "EMERGENCY"),
        ]
    )
    cohort = readmission_cohort(adm)
    assert cohort["HADM_ID"].tolist() == [10, 20]
    assert cohort["OUTPUT_LABEL"].tolist() == [1, 1]
    assert cohort.index.tolist() == [0, 2]  # positions in (SUBJECT_ID, ADMITTIME) order survive


def test_sort_by_subject_then_time_and_unparseable_times() -> None:
    adm = _adm(
        [
            (2, 20, "2150-05-01 00:00:00", "2150-05-02 00:00:00", None, "EMERGENCY"),
            (1, 11, "2150-03-01 00:00:00", "2150-03-02 00:00:00", None, "EMERGENCY"),
            (1, 10, "2150-02-20 00:00:00", "2150-02-21 00:00:00", None, "EMERGENCY"),
            (1, 12, "not a time", "2150-04-02 00:00:00", None, "EMERGENCY"),
        ]
    )
    df = readmission_labels(adm)
    assert df["HADM_ID"].tolist() == [10, 11, 12, 20]  # NaT sorts last within the subject
    assert _label(df, 10) == 1
    assert _label(df, 11) == 0  # its next admission time is missing
    assert pd.isna(df.loc[2, "DURATION"])


def test_mortality_and_prolonged_stay() -> None:
    adm = _adm(
        [
            (1, 10, "2150-01-01 00:00:00", "2150-01-09 00:00:00", None, "EMERGENCY"),
            (2, 20, "2150-01-01 00:00:00", "2150-01-05 00:00:00", "2150-01-05 00:00:00", "EMERGENCY"),
            (3, 30, "2150-01-01 00:00:00", "2150-01-02 00:00:00", "2150-01-02 00:00:00", "URGENT"),
            (4, 40, "2150-01-01 00:00:00", "2150-01-04 00:00:00", None, "NEWBORN"),
        ]
    )
    mort = mortality_cohort(adm, min_days=3)
    assert dict(zip(mort["HADM_ID"], mort["OUTPUT_LABEL"], strict=True)) == {10: 0, 20: 1}
    long = prolonged_stay_cohort(adm, min_days=3)
    assert dict(zip(long["HADM_ID"], long["OUTPUT_LABEL"], strict=True)) == {10: 1}
