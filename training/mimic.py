"""MIMIC admissions and notes in DuckDB, and the note selection of each task (docs/reference.md §2).

A :class:`Source` is a MIMIC-III folder (``ADMISSIONS``, ``NOTEEVENTS``) or a MIMIC-IV folder (hosp
``admissions``, note ``discharge`` and ``radiology``). Notes are read twice, never held in Python as a
whole: a first pass keeps light columns (no text) in a DuckDB table whose row order is the file order,
the selection runs in SQL on it, and a second pass fetches the text of the selected notes only. Every
step spills to disk beyond the connection's memory limit, so a full-size NOTEEVENTS (4 GB) fits.

Selection rules (reference mode ``huang2019``):

- discharge: notes with CATEGORY 'Discharge summary' joined on (SUBJECT_ID, HADM_ID); the LAST one per
  admission in (SUBJECT_ID, HADM_ID, CHARTDATE [missing last], file order); dropped if its TEXT is
  missing (the pick comes first, as in the reference).
- early ``days=n``: notes whose CHARTDATE - date(ADMITTIME) < n calendar days (before admission counts),
  all categories, CHARTDATE and TEXT present; one text per admission, joined with one space.

The ``hours`` mode (streaming, :class:`notestream.models.spec.Window` ``kind="hours"``): notes whose CHARTTIME
(else CHARTDATE) is earlier than ADMITTIME + h hours, without notes flagged ISERROR (a live feed
retracts them), each note kept apart so that it is chunked on its own as the stream does.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import duckdb
import pandas as pd

from notestream.mimic.tables import execute, fetch_df, find_table, iter_batches, table_sql
from notestream.models.spec import DISCHARGE_CATEGORY, Window
from notestream.training.errors import CohortError
from notestream.training.labels import ADMISSION_COLUMNS

Kind = Literal["mimic-iii", "mimic-iv"]
NOTE_COLUMNS = ["KEY", "SUBJECT_ID", "HADM_ID", "CHARTDATE", "CHARTTIME", "CATEGORY", "ISERROR"]


@dataclass(frozen=True)
class Source:
    """Where the MIMIC files of one run are."""

    kind: Kind
    admissions: Path
    notes: tuple[Path, ...]

    @classmethod
    def open(cls, *, mimic_iii: str | Path | None = None, mimic_iv: str | Path | None = None) -> Source:
        """Locate the files of a MIMIC-III or a MIMIC-IV folder (exactly one of the two)."""
        if (mimic_iii is None) == (mimic_iv is None):
            raise CohortError("Give exactly one of --mimic-iii DIR or --mimic-iv DIR.")
        if mimic_iii is not None:
            adm = find_table(mimic_iii, "ADMISSIONS")
            notes = find_table(mimic_iii, "NOTEEVENTS")
            if adm is None or notes is None:  # pragma: no cover - find_table raises first
                raise CohortError(f"{mimic_iii} lacks ADMISSIONS or NOTEEVENTS.")
            return cls("mimic-iii", adm, (notes,))
        assert mimic_iv is not None
        adm = find_table(mimic_iv, "admissions")
        found = [
            find_table(mimic_iv, name, required=name == "discharge") for name in ("discharge", "radiology")
        ]
        assert adm is not None
        return cls("mimic-iv", adm, tuple(p for p in found if p is not None))

    def files(self) -> list[Path]:
        return [self.admissions, *self.notes]

    def note_sql(self, path: Path, *, text: bool) -> str:
        """One note file as the unified columns KEY, SUBJECT_ID, HADM_ID, CHARTDATE, CHARTTIME, CATEGORY,
        ISERROR (and TEXT). KEY is ROW_ID (MIMIC-III) or note_id (MIMIC-IV)."""
        if self.kind == "mimic-iii":
            cols = ["ROW_ID", "SUBJECT_ID", "HADM_ID", "CHARTDATE", "CHARTTIME", "CATEGORY", "ISERROR"]
            base = table_sql(path, [*cols, "TEXT"] if text else cols, types={"ROW_ID": "text"})
            select = "ROW_ID AS KEY, SUBJECT_ID, HADM_ID, CHARTDATE, CHARTTIME, CATEGORY, ISERROR"
            return f"SELECT {select}{', TEXT' if text else ''} FROM ({base})"
        cols = ["NOTE_ID", "SUBJECT_ID", "HADM_ID", "NOTE_TYPE", "CHARTTIME"]
        base = table_sql(path, [*cols, "TEXT"] if text else cols)
        select = (
            "NOTE_ID AS KEY, SUBJECT_ID, HADM_ID, date_trunc('day', CHARTTIME) AS CHARTDATE, CHARTTIME, "
            f"CASE WHEN NOTE_TYPE IN ('DS', 'AD') THEN '{DISCHARGE_CATEGORY}' ELSE 'Radiology' END AS CATEGORY, "
            "CAST(NULL AS VARCHAR) AS ISERROR"
        )
        return f"SELECT {select}{', TEXT' if text else ''} FROM ({base})"


def load_admissions(con: duckdb.DuckDBPyConnection, source: Source) -> pd.DataFrame:
    """SUBJECT_ID, HADM_ID, ADMITTIME, DISCHTIME, DEATHTIME, ADMISSION_TYPE of every admission."""
    adm = fetch_df(con, table_sql(source.admissions, ADMISSION_COLUMNS))
    if adm.empty:
        raise CohortError(f"{source.admissions} has no admissions.")
    adm = adm[adm["SUBJECT_ID"].notna() & adm["HADM_ID"].notna()].copy()
    adm["SUBJECT_ID"] = adm["SUBJECT_ID"].astype("int64")
    adm["HADM_ID"] = adm["HADM_ID"].astype("int64")
    return adm


def load_note_index(con: duckdb.DuckDBPyConnection, source: Source, *, discharge_only: bool) -> None:
    """First pass: table ``note_index`` (light columns, ORD = file order) of notes with a HADM_ID."""
    execute(con, "DROP TABLE IF EXISTS note_index")
    where = "HADM_ID IS NOT NULL" + (f" AND CATEGORY = '{DISCHARGE_CATEGORY}'" if discharge_only else "")
    for i, path in enumerate(source.notes):
        select = f"SELECT * FROM ({source.note_sql(path, text=False)}) WHERE {where}"
        if i == 0:
            execute(con, f"CREATE TABLE note_index AS {select}")
        else:
            execute(con, f"INSERT INTO note_index {select}")
    execute(con, "CREATE OR REPLACE TABLE note_index AS SELECT rowid AS ORD, * FROM note_index")
    dup = fetch_df(con, "SELECT count(*) - count(DISTINCT KEY) AS dup FROM note_index")["dup"].iloc[0]
    if dup:
        raise CohortError(
            f"{dup} notes share a ROW_ID / note_id with another note; notestream needs unique note ids. "
            "Use the original MIMIC files."
        )


def select_notes(con: duckdb.DuckDBPyConnection, window: Window) -> None:
    """Table ``selected`` (KEY, HADM_ID, POS): the notes of each ``cohort`` admission in the window,
    POS giving their order inside the admission. Needs tables ``note_index`` and ``cohort``."""
    join = "FROM note_index n JOIN cohort c ON n.SUBJECT_ID = c.SUBJECT_ID AND n.HADM_ID = c.HADM_ID"
    if window.kind == "discharge":
        sql = (
            f"SELECT n.KEY, n.HADM_ID, 0 AS POS {join} WHERE n.CATEGORY = '{DISCHARGE_CATEGORY}' "
            "QUALIFY row_number() OVER (PARTITION BY n.SUBJECT_ID, n.HADM_ID "
            "ORDER BY n.CHARTDATE DESC NULLS FIRST, n.ORD DESC) = 1"
        )
    elif window.kind == "days":
        sql = (
            f"SELECT n.KEY, n.HADM_ID, row_number() OVER (PARTITION BY n.HADM_ID ORDER BY n.CHARTDATE, n.ORD) "
            f"AS POS {join} WHERE n.CHARTDATE IS NOT NULL AND "
            f"date_diff('day', CAST(c.ADMITTIME AS DATE), CAST(n.CHARTDATE AS DATE)) < {float(window.value or 0)}"
        )
    elif window.kind == "hours":
        moment = "COALESCE(n.CHARTTIME, n.CHARTDATE)"
        sql = (
            f"SELECT n.KEY, n.HADM_ID, row_number() OVER (PARTITION BY n.HADM_ID ORDER BY {moment}, n.ORD) "
            f"AS POS {join} WHERE {moment} IS NOT NULL AND coalesce(n.ISERROR, '') <> '1' AND "
            f"epoch({moment}) - epoch(c.ADMITTIME) < {float(window.value or 0) * 3600.0}"
        )
    else:
        sql = f"SELECT n.KEY, n.HADM_ID, row_number() OVER (PARTITION BY n.HADM_ID ORDER BY n.ORD) AS POS {join}"
    execute(con, f"CREATE OR REPLACE TABLE selected AS {sql}")


def fetch_texts(con: duckdb.DuckDBPyConnection, source: Source) -> None:
    """Second pass: table ``selected_text`` = ``selected`` + TEXT (rows with missing TEXT dropped)."""
    execute(con, "DROP TABLE IF EXISTS selected_text")
    for i, path in enumerate(source.notes):
        select = (
            f"SELECT s.KEY, s.HADM_ID, s.POS, t.TEXT FROM ({source.note_sql(path, text=True)}) t "
            "JOIN selected s ON t.KEY = s.KEY WHERE t.TEXT IS NOT NULL"
        )
        if i == 0:
            execute(con, f"CREATE TABLE selected_text AS {select}")
        else:
            execute(con, f"INSERT INTO selected_text {select}")


def iter_admission_notes(
    con: duckdb.DuckDBPyConnection, order: str, *, batch_rows: int = 4096
) -> Iterator[tuple[int, list[str]]]:
    """(HADM_ID, note texts in order) per admission, admissions in ``order`` (SQL over ``cohort`` c
    columns, e.g. ``c.SUBJECT_ID, c.HADM_ID``), streamed from ``selected_text``."""
    sql = (
        "SELECT s.HADM_ID, s.TEXT FROM selected_text s JOIN cohort c ON s.HADM_ID = c.HADM_ID "
        f"ORDER BY {order}, s.POS"
    )
    current: int | None = None
    texts: list[str] = []
    for frame in iter_batches(con, sql, batch_rows=batch_rows):
        for hadm, text in zip(frame["HADM_ID"].tolist(), frame["TEXT"].tolist(), strict=True):
            if hadm != current:
                if current is not None:
                    yield current, texts
                current, texts = int(hadm), []
            texts.append(text)
    if current is not None:
        yield current, texts


def admission_texts(
    con: duckdb.DuckDBPyConnection, source: Source, cohort: pd.DataFrame, window: Window
) -> dict[int, list[str]]:
    """The selected note texts of each cohort admission (SUBJECT_ID, HADM_ID, ADMITTIME), in order.
    Small cohorts only (tests, inspection): everything is returned in memory."""
    con.register("cohort_df", cohort[["SUBJECT_ID", "HADM_ID", "ADMITTIME"]])
    execute(con, "CREATE OR REPLACE TABLE cohort AS SELECT * FROM cohort_df")
    con.unregister("cohort_df")
    load_note_index(con, source, discharge_only=window.kind == "discharge")
    select_notes(con, window)
    fetch_texts(con, source)
    return dict(iter_admission_notes(con, "c.HADM_ID"))
