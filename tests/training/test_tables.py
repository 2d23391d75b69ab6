"""notestream.mimic.tables: MIMIC CSV files in every accepted shape, and clear errors for broken ones."""

from __future__ import annotations

import gzip
from pathlib import Path

import pandas as pd
import pytest

from notestream.mimic.tables import (
    TableError,
    connect,
    fetch_df,
    find_table,
    iter_table,
    read_header,
    table_sql,
)

QUOTED = (
    '"ROW_ID","SUBJECT_ID","HADM_ID","CHARTDATE","CHARTTIME","STORETIME","CATEGORY","DESCRIPTION",'
    '"CGID","ISERROR","TEXT"\n'
    '174,22532,167853,2151-08-04,,,"Discharge summary","Report",,,"Admission Date:  [**2151-7-16**]\n'
    'He said ""no"", twice.\n"\n'
    '175,22532,,2151-08-05 00:00:00,2151-08-05 10:11:00,,"Physician ","Note",123,"1",""\n'
)


def _write(path: Path, text: str) -> Path:
    if path.name.endswith(".gz"):
        with gzip.open(path, "wt", encoding="utf-8", newline="") as fh:
            fh.write(text)
    else:
        path.write_text(text, encoding="utf-8", newline="")
    return path


@pytest.mark.parametrize("name", ["NOTEEVENTS.csv", "NOTEEVENTS.csv.gz", "noteevents.csv"])
def test_reads_quoted_multiline_text_in_plain_and_gz_files(tmp_path: Path, name: str) -> None:
    _write(tmp_path / name, QUOTED)
    path = find_table(tmp_path, "NOTEEVENTS")
    assert path is not None
    df = fetch_df(
        connect(),
        table_sql(path, ["SUBJECT_ID", "HADM_ID", "CHARTDATE", "CHARTTIME", "TEXT", "CATEGORY", "ISERROR"]),
    )
    assert df["TEXT"].iloc[0] == 'Admission Date:  [**2151-7-16**]\nHe said "no", twice.\n'
    assert pd.isna(df["TEXT"].iloc[1])  # empty field -> missing
    assert pd.isna(df["HADM_ID"].iloc[1])
    assert df["CHARTDATE"].tolist() == [pd.Timestamp("2151-08-04"), pd.Timestamp("2151-08-05")]
    assert pd.isna(df["CHARTTIME"].iloc[0])
    assert df["CHARTTIME"].iloc[1] == pd.Timestamp("2151-08-05 10:11:00")
    assert df["CATEGORY"].tolist() == ["Discharge summary", "Physician "]  # trailing space kept
    assert df["ISERROR"].tolist()[1] == "1"


def test_lower_case_unquoted_headers_and_extra_columns(tmp_path: Path) -> None:
    text = (
        "row_id,subject_id,hadm_id,admittime,dischtime,deathtime,admission_type,shoe_size\n"
        "1,2,3,2150-01-01 10:00:00,2150-01-03,,URGENT,44\n"
        "2,2,4.0,garbage,2150-02-03 00:00:00,,EMERGENCY,45\n"
    )
    path = _write(tmp_path / "admissions.csv", text)
    df = fetch_df(
        connect(), table_sql(path, ["SUBJECT_ID", "HADM_ID", "ADMITTIME", "DISCHTIME", "ADMISSION_TYPE"])
    )
    assert list(df.columns) == ["SUBJECT_ID", "HADM_ID", "ADMITTIME", "DISCHTIME", "ADMISSION_TYPE"]
    assert df["HADM_ID"].tolist() == [3, 4]
    assert pd.isna(df["ADMITTIME"].iloc[1])  # unparseable -> missing
    assert df["DISCHTIME"].iloc[0] == pd.Timestamp("2150-01-03")


def test_missing_column_names_the_file_and_column(tmp_path: Path) -> None:
    path = _write(tmp_path / "ADMISSIONS.csv", '"SUBJECT_ID","HADM_ID"\n1,2\n')
    with pytest.raises(TableError, match=r"ADMISSIONS\.csv lacks the column\(s\) ADMITTIME"):
        table_sql(path, ["SUBJECT_ID", "ADMITTIME"])


@pytest.mark.parametrize(
    ("body", "column"),
    [
        (
            '1,2,3,2150-01-01,,,"Nursing","Report",,,"fine"\n2,2,3,2150-01-01,,,"Nursing","Report",,,"bad" x\n',
            11,
        ),
        (
            '1,2,3,2150-01-01,,,"Nursing","Report",,,"fine"\n2,2,3,2150-01-01,,,"Nursing","Report",,,"ok",99\n',
            12,
        ),
    ],
)
def test_malformed_file_error_names_file_line_and_column_without_text(
    tmp_path: Path, body: str, column: int
) -> None:
    header = QUOTED.splitlines()[0] + "\n"
    path = _write(tmp_path / "NOTEEVENTS.csv", header + body)
    with pytest.raises(TableError) as info:
        fetch_df(connect(), table_sql(path))
    message = str(info.value)
    assert "NOTEEVENTS.csv" in message
    assert "line 3" in message
    assert f"column {column}" in message
    assert "Nursing" not in message  # the offending line (possible PHI) is not repeated


def test_empty_file_and_missing_table(tmp_path: Path) -> None:
    empty = _write(tmp_path / "NOTEEVENTS.csv", "")
    with pytest.raises(TableError, match="no header"):
        read_header(empty)
    with pytest.raises(TableError, match=r"No ADMISSIONS\.csv"):
        find_table(tmp_path, "ADMISSIONS")
    assert find_table(tmp_path, "PATIENTS", required=False) is None


def test_header_only_table_has_no_rows(tmp_path: Path) -> None:
    path = _write(tmp_path / "noteevents.csv", QUOTED.splitlines()[0].lower().replace('"', "") + "\n")
    assert len(fetch_df(connect(), table_sql(path))) == 0


def test_mimic_iv_layout_and_ordered_batches(tmp_path: Path) -> None:
    (tmp_path / "note").mkdir()
    rows = "".join(f'{i}-RR-{i},{i},,RR,{i},2150-01-{10 - i:02d} 10:00:00,,"t{i}"\n' for i in range(1, 8))
    _write(
        tmp_path / "note" / "radiology.csv.gz",
        "note_id,subject_id,hadm_id,note_type,note_seq,charttime,storetime,text\n" + rows,
    )
    path = find_table(tmp_path, "radiology")
    assert path is not None
    frames = list(
        iter_table(
            path, ["NOTE_ID", "CHARTTIME"], order_by=["CHARTTIME"], batch_rows=2, temp_dir=tmp_path / "spill"
        )
    )
    got = pd.concat(frames)["NOTE_ID"].tolist()
    assert got == [f"{i}-RR-{i}" for i in range(7, 0, -1)]


def test_garbage_numbers_become_missing(tmp_path: Path) -> None:
    path = _write(tmp_path / "ADMISSIONS.csv", "SUBJECT_ID,HADM_ID\nx,1\n2,\n3,7.0\n")
    df = fetch_df(connect(), table_sql(path, ["SUBJECT_ID", "HADM_ID"]))
    assert df["SUBJECT_ID"].isna().tolist() == [True, False, False]
    assert df["HADM_ID"].isna().tolist() == [False, True, False]
