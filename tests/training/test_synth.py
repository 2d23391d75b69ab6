"""notestream.training.synth: deterministic synthetic MIMIC files in the real formats, with a planted signal."""

from __future__ import annotations

import gzip
import re
from pathlib import Path

import pandas as pd
import pytest

from notestream.mimic.tables import connect, fetch_df, find_table, table_sql
from notestream.training.labels import readmission_cohort
from notestream.training.synth import write_mimic_iii, write_mimic_iv
from notestream.training.synth_text import MARKERS


@pytest.fixture(scope="module")
def mimic_iii(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("synth3")
    write_mimic_iii(out, 150, seed=5, notes_scale=0.5)
    return out


def test_same_seed_same_bytes(tmp_path: Path, mimic_iii: Path) -> None:
    write_mimic_iii(tmp_path, 150, seed=5, notes_scale=0.5)
    for name in ("ADMISSIONS.csv", "NOTEEVENTS.csv", "PATIENTS.csv", "DIAGNOSES_ICD.csv"):
        assert (tmp_path / name).read_bytes() == (mimic_iii / name).read_bytes()
    write_mimic_iii(tmp_path / "other", 150, seed=6, notes_scale=0.5)
    assert (tmp_path / "other" / "NOTEEVENTS.csv").read_bytes() != (mimic_iii / "NOTEEVENTS.csv").read_bytes()


def test_mimic_iii_format_details(mimic_iii: Path) -> None:
    raw = (mimic_iii / "NOTEEVENTS.csv").read_text(encoding="utf-8")
    assert raw.startswith('"ROW_ID","SUBJECT_ID","HADM_ID","CHARTDATE","CHARTTIME","STORETIME","CATEGORY"')
    assert re.search(r"\[\*\*21\d\d-\d{1,2}-\d{1,2}\*\*\]", raw)
    notes = fetch_df(connect(), table_sql(mimic_iii / "NOTEEVENTS.csv"))
    ds = notes[notes["CATEGORY"] == "Discharge summary"]
    assert ds["CHARTTIME"].isna().all()
    assert ds["CHARTDATE"].notna().all()
    assert {"Physician ", "Nursing/other", "Radiology", "ECG"} <= set(notes["CATEGORY"])
    assert notes.loc[notes["HADM_ID"].isna(), "CATEGORY"].isin(["Radiology", "ECG", "Echo"]).all()
    assert notes["HADM_ID"].isna().any()
    timed = notes[~notes["CATEGORY"].isin(["Discharge summary", "ECG", "Echo"])]
    assert timed["CHARTTIME"].notna().mean() > 0.98
    years = notes["CHARTDATE"].dropna().dt.year
    assert years.between(2050, 2250).all()
    assert years.median() > 2100
    assert notes["TEXT"].str.contains("\n", regex=False).mean() > 0.5
    assert (ds.groupby("HADM_ID").size() > 1).any()  # addenda and duplicates exist


def test_admissions_have_elective_newborn_and_deaths(mimic_iii: Path) -> None:
    adm = fetch_df(connect(), table_sql(mimic_iii / "ADMISSIONS.csv"))
    assert {"EMERGENCY", "ELECTIVE", "NEWBORN", "URGENT"} <= set(adm["ADMISSION_TYPE"])
    assert adm["DEATHTIME"].notna().any()
    assert (adm["HOSPITAL_EXPIRE_FLAG"] == adm["DEATHTIME"].notna().astype(int)).all()


def test_signal_markers_follow_labels(mimic_iii: Path) -> None:
    con = connect()
    adm = fetch_df(con, table_sql(mimic_iii / "ADMISSIONS.csv"))
    cohort = readmission_cohort(adm)
    notes = fetch_df(con, table_sql(mimic_iii / "NOTEEVENTS.csv", ["HADM_ID", "TEXT"])).dropna()
    risk = "|".join(re.escape(s) for s in MARKERS["risk"])
    notes["risk"] = notes["TEXT"].str.count(risk) / notes["TEXT"].str.len()
    per = notes.groupby("HADM_ID")["risk"].mean()
    labels = cohort.set_index("HADM_ID")["OUTPUT_LABEL"]
    joined = pd.concat([per, labels], axis=1, join="inner")
    assert joined["OUTPUT_LABEL"].sum() >= 3
    pos = joined.loc[joined["OUTPUT_LABEL"] == 1, "risk"].mean()
    neg = joined.loc[joined["OUTPUT_LABEL"] == 0, "risk"].mean()
    assert pos > 3 * neg


def test_mimic_iv_note_format(tmp_path: Path) -> None:
    write_mimic_iv(tmp_path, 40, seed=2, notes_scale=0.5)
    with gzip.open(tmp_path / "note" / "discharge.csv.gz", "rt", encoding="utf-8") as fh:
        head = fh.read(3000)
    assert head.startswith("note_id,subject_id,hadm_id,note_type,note_seq,charttime,storetime,text\n")
    assert "[**" not in head
    assert "___" in head
    con = connect()
    ds = fetch_df(con, table_sql(find_table(tmp_path, "discharge")))  # type: ignore[arg-type]
    assert ds["NOTE_ID"].str.fullmatch(r"1\d{7}-(DS|AD)-\d+").all()
    assert ds["HADM_ID"].notna().all()
    adm = fetch_df(con, table_sql(find_table(tmp_path, "admissions")))  # type: ignore[arg-type]
    assert adm["HADM_ID"].min() >= 20_000_000
    assert "NEWBORN" not in set(adm["ADMISSION_TYPE"])
