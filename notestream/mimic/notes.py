"""MIMIC notes and admit times as the offline scorer reads them.

MIMIC-III NOTEEVENTS and MIMIC-IV-Note discharge / radiology CSV(.gz) files become
:class:`~notestream.models.scoring.NoteRecord` s with the note ids the replay uses (MIMIC-III ROW_ID as
a string, MIMIC-IV note_id), so a file scored offline and the same file replayed into the stream count
the same notes. MIMIC-IV note types map to the MIMIC-III categories the model windows name.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from notestream.mimic.tables import iter_table, read_header
from notestream.models.scoring import NoteRecord
from notestream.models.spec import DISCHARGE_CATEGORY
from notestream.models.text import is_missing

if TYPE_CHECKING:
    import pandas as pd

MIMIC_IV_CATEGORIES = {
    "DS": DISCHARGE_CATEGORY,
    "AD": DISCHARGE_CATEGORY,
    "RR": "Radiology",
    "AR": "Radiology",
}
"""MIMIC-IV-Note note_type -> the MIMIC-III category (addenda count as their parent note's type)."""


def _value(x: Any) -> Any:
    """pandas missing values (NaN, NaT, NA) -> None."""
    return None if is_missing(x) else x


def _when(x: Any) -> datetime | None:
    value = _value(x)
    return value.to_pydatetime() if hasattr(value, "to_pydatetime") else value


def _records(frame: pd.DataFrame, mimic_iv: bool) -> Iterator[NoteRecord]:
    row: Any
    for row in frame.itertuples(index=False):
        chart_time = _when(row.CHARTTIME)
        hadm = _value(row.HADM_ID)
        if mimic_iv:
            category = MIMIC_IV_CATEGORIES.get(str(row.NOTE_TYPE).strip().upper(), "Radiology")
            chart_date = chart_time.date() if chart_time is not None else None
            is_error = False
            note_id = str(row.NOTE_ID)
        else:
            category = _value(row.CATEGORY)
            day = _when(row.CHARTDATE)
            chart_date = day.date() if isinstance(day, datetime) else day
            is_error = str(_value(row.ISERROR) or "").strip() in {"1", "1.0"}
            note_id = str(int(row.ROW_ID))
        yield NoteRecord(
            subject_id=int(row.SUBJECT_ID),
            hadm_id=int(hadm) if hadm is not None else None,
            category=category,
            chart_date=chart_date,
            chart_time=chart_time,
            text=_value(row.TEXT),
            is_error=is_error,
            note_id=note_id,
        )


def read_notes(path: str | Path, *, batch_rows: int = 2048) -> Iterator[NoteRecord]:
    """Notes of a MIMIC-III NOTEEVENTS or MIMIC-IV-Note discharge / radiology CSV(.gz), in file order."""
    header = {c.upper() for c in read_header(path)}
    mimic_iv = "NOTE_TYPE" in header
    columns = ["SUBJECT_ID", "HADM_ID", "CHARTTIME", "TEXT"]
    columns += ["NOTE_ID", "NOTE_TYPE"] if mimic_iv else ["ROW_ID", "CHARTDATE", "CATEGORY", "ISERROR"]
    for frame in iter_table(path, columns, batch_rows=batch_rows):
        yield from _records(frame, mimic_iv)


def read_admit_times(path: str | Path) -> dict[int, datetime]:
    """HADM_ID -> ADMITTIME from a MIMIC-III or MIMIC-IV admissions CSV(.gz)."""
    out: dict[int, datetime] = {}
    for frame in iter_table(
        path, ["HADM_ID", "ADMITTIME"], where="HADM_ID IS NOT NULL AND ADMITTIME IS NOT NULL"
    ):
        row: Any
        for row in frame.itertuples(index=False):
            admit = _when(row.ADMITTIME)
            if admit is not None:
                out[int(row.HADM_ID)] = admit
    return out
