"""docs/reference.md §2: which notes each task reads, on hand-made MIMIC-III files."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from notestream.mimic.tables import connect
from notestream.models.spec import Window
from notestream.training.labels import readmission_cohort
from notestream.training.mimic import Source, admission_texts, load_admissions

ADMISSIONS = [
    # SUBJECT_ID, HADM_ID, ADMITTIME, DISCHTIME, ADMISSION_TYPE
    (1, 100, "2150-01-01 22:00:00", "2150-01-06 10:00:00", "EMERGENCY"),
    (2, 200, "2150-02-01 08:00:00", "2150-02-04 08:00:00", "EMERGENCY"),
    (3, 300, "2150-03-01 08:00:00", "2150-03-03 08:00:00", "URGENT"),
]
# ROW_ID, SUBJECT_ID, HADM_ID, CHARTDATE, CHARTTIME, CATEGORY, ISERROR, TEXT (a word tells which note)
NOTES = [
    (1, 1, 100, "2150-01-06", "", "Discharge summary", "", "dsfirst"),
    (2, 1, 100, "2150-01-06", "", "Discharge summary", "", "dssecond"),  # same date: file order decides
    (3, 1, 100, "2150-01-05", "", "Discharge summary", "", "dsearlier"),
    (4, 1, 100, "2149-12-31", "2149-12-31 20:00:00", "Radiology", "", "beforeadmission"),
    (5, 1, 100, "2150-01-03", "2150-01-03 23:00:00", "Nursing/other", "", "daytwo"),
    (6, 1, 100, "2150-01-04", "2150-01-04 01:00:00", "Nursing/other", "", "daythree"),
    (7, 1, 100, "", "", "Nursing/other", "", "nodate"),
    (8, 1, 100, "2150-01-02", "2150-01-02 09:00:00", "Nursing/other", "", None),
    (9, 1, None, "2150-01-02", "2150-01-02 09:00:00", "ECG", "", "nohadm"),
    (10, 1, 100, "2150-01-01", "2150-01-01 23:00:00", "Physician ", "1", "flagged"),
    (11, 1, 100, "2150-01-02", "", "Nursing/other", "", "notime"),
    (12, 2, 200, "2150-02-03", "", "Discharge summary", "", "twoA"),
    (13, 2, 200, "2150-02-04", "", "Discharge summary", "", None),  # the last one has no text
    (14, 3, 300, "", "", "Discharge summary", "", "undated"),  # missing CHARTDATE sorts last
    (15, 3, 300, "2150-03-03", "", "Discharge summary", "", "dated"),
]


def _q(value: object) -> str:
    if value is None or value == "":
        return ""
    return '"' + str(value).replace('"', '""') + '"'


@pytest.fixture
def source(tmp_path: Path) -> Source:
    lines = ['"ROW_ID","SUBJECT_ID","HADM_ID","ADMITTIME","DISCHTIME","DEATHTIME","ADMISSION_TYPE"']
    lines += [f"{i},{s},{h},{a},{d},,{_q(t)}" for i, (s, h, a, d, t) in enumerate(ADMISSIONS)]
    (tmp_path / "ADMISSIONS.csv").write_text("\n".join(lines) + "\n")
    lines = [
        '"ROW_ID","SUBJECT_ID","HADM_ID","CHARTDATE","CHARTTIME","STORETIME","CATEGORY","DESCRIPTION","CGID","ISERROR","TEXT"'
    ]
    for row_id, s, h, cd, ct, cat, err, text in NOTES:
        body = None if text is None else f"{text}\n" + " ".join(["word"] * 11)
        lines.append(f'{row_id},{s},{h if h else ""},{cd},{ct},,{_q(cat)},"Report",,{_q(err)},{_q(body)}')
    (tmp_path / "NOTEEVENTS.csv").write_text("\n".join(lines) + "\n")
    return Source.open(mimic_iii=tmp_path)


def _selected(source: Source, window: Window) -> dict[int, list[str]]:
    con = connect()
    cohort = readmission_cohort(load_admissions(con, source))
    texts = admission_texts(con, source, cohort, window)
    return {hadm: [t.split()[0] for t in notes] for hadm, notes in texts.items()}


def test_discharge_picks_last_by_date_then_file_order(source: Source) -> None:
    got = _selected(source, Window(kind="discharge"))
    assert got[100] == ["dssecond"]  # latest date; of two on that date, the later in the file
    assert 200 not in got  # the last summary has no text: the admission drops out (pick, then filter)
    assert got[300] == ["undated"]  # a missing CHARTDATE sorts last, as in pandas


def test_early_days_calendar_rule(source: Source) -> None:
    got = _selected(source, Window(kind="days", value=3))
    # Admitted 2150-01-01 22:00: days 0, 1, 2 count by calendar date, before admission too; the ISERROR
    # flag is ignored, notes without CHARTDATE, TEXT or HADM_ID never count; order: CHARTDATE, file.
    assert got[100] == ["beforeadmission", "flagged", "notime", "daytwo"]
    got2 = _selected(source, Window(kind="days", value=2))
    assert got2[100] == ["beforeadmission", "flagged", "notime"]


def test_hours_mode_uses_charttime_then_chartdate_and_drops_errors(source: Source) -> None:
    got = _selected(source, Window(kind="hours", value=48))
    # 48 h after 2150-01-01 22:00 is 2150-01-03 22:00: 'daytwo' (23:00) is out, 'notime' (date 01-02
    # 00:00) is in; the flagged note is retracted.
    assert got[100] == ["beforeadmission", "notime"]


def test_early_notes_are_joined_in_reference_prepare(source: Source, tmp_path: Path) -> None:
    from notestream.training.errors import SplitError
    from notestream.training.prepare import PrepareConfig, prepare

    with pytest.raises(SplitError, match="positive"):
        # Every admission here is negative: the balanced reference split refuses, after chunking.
        prepare(source, tmp_path / "out", PrepareConfig(notes="early-3d"), progress=False)
    chunks = pd.read_csv(tmp_path / "out" / "chunks.csv")
    first = chunks[chunks["ID"] == 100]["TEXT"].iloc[0]
    assert first.split()[0] == "beforeadmission"
    assert len(chunks[chunks["ID"] == 100]) == 1  # one joined text -> one chunk of 48 words
    assert len(first.split()) == 4 * 12


def test_hours_mode_chunks_each_note_alone(source: Source, tmp_path: Path) -> None:
    from notestream.models.prep import note_chunks
    from notestream.training.errors import SplitError
    from notestream.training.prepare import PrepareConfig, prepare

    config = PrepareConfig(notes="early-2d", mode="hours", hours=48)
    with pytest.raises(SplitError):
        prepare(source, tmp_path / "out", config, progress=False)
    chunks = pd.read_csv(tmp_path / "out" / "chunks.csv")
    got = chunks[chunks["ID"] == 100]["TEXT"].tolist()
    con = connect()
    cohort = readmission_cohort(load_admissions(con, source))
    texts = admission_texts(con, source, cohort, config.window())[100]
    assert got == [c for t in texts for c in note_chunks(t, config.spec())]
    assert [g.split()[0] for g in got] == ["beforeadmission", "notime"]
