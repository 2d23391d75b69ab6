"""The one DuckDB query that turns MIMIC tables into time-ordered admit, note and discharge rows.

Each row has the unified columns :data:`COLUMNS`; ``K`` is 0 for an admit, 1 for a note, 2 for a
discharge, so that at equal times an admission opens before its notes and closes after them. The query
sorts out of core (DuckDB spills to its temp directory beyond its memory limit).

MIMIC-III: NOTEEVENTS + ADMISSIONS; a note's time is CHARTTIME, else CHARTDATE, else STORETIME; its
id is ROW_ID. MIMIC-IV: discharge / radiology notes + hosp admissions; a note's time is charttime,
else storetime; its id is note_id; CHARTDATE is charttime's day (as in ``training/mimic.py``).
"""

from __future__ import annotations

from collections.abc import Collection
from datetime import datetime
from pathlib import Path

from notestream.mimic.tables import table_sql

COLUMNS = (
    "ET",
    "K",
    "SUBJECT_ID",
    "HADM_ID",
    "NOTE_ID",
    "CATEGORY",
    "DESCRIPTION",
    "CHARTTIME",
    "CHARTDATE",
    "STORETIME",
    "ISERROR",
    "TEXT",
    "ADMITTIME",
    "DISCHTIME",
    "DEATHTIME",
    "ADMISSION_TYPE",
)
ORDER = "ORDER BY ET, K, HADM_ID, ORD, NOTE_ID"
ADMISSION_COLUMNS = ["SUBJECT_ID", "HADM_ID", "ADMITTIME", "DISCHTIME", "DEATHTIME", "ADMISSION_TYPE"]


def _literal(moment: datetime) -> str:
    return f"TIMESTAMP '{moment.strftime('%Y-%m-%d %H:%M:%S.%f')}'"


def _notes_iii(path: Path, text: bool) -> str:
    cols = [
        "ROW_ID",
        "SUBJECT_ID",
        "HADM_ID",
        "CHARTDATE",
        "CHARTTIME",
        "STORETIME",
        "CATEGORY",
        "DESCRIPTION",
        "ISERROR",
    ] + (["TEXT"] if text else [])
    return (
        "SELECT CAST(ROW_ID AS VARCHAR) AS NOTE_ID, ROW_ID AS ORD, SUBJECT_ID, HADM_ID, CATEGORY, DESCRIPTION, "
        "CHARTTIME, CAST(CHARTDATE AS DATE) AS CHARTDATE, STORETIME, "
        f"COALESCE(trim(ISERROR) = '1', false) AS ISERROR, {'TEXT' if text else 'NULL AS TEXT'}, "
        "COALESCE(CHARTTIME, CHARTDATE, STORETIME) AS ET "
        f"FROM ({table_sql(path, cols)})"
    )


def _notes_iv(path: Path, text: bool) -> str:
    cols = ["NOTE_ID", "SUBJECT_ID", "HADM_ID", "NOTE_TYPE", "NOTE_SEQ", "CHARTTIME", "STORETIME"]
    cols += ["TEXT"] if text else []
    return (
        "SELECT NOTE_ID, NOTE_SEQ AS ORD, SUBJECT_ID, HADM_ID, "
        "CASE WHEN NOTE_TYPE IN ('DS', 'AD') THEN 'Discharge summary' ELSE 'Radiology' END AS CATEGORY, "
        "CASE WHEN NOTE_TYPE IN ('AD', 'AR') THEN 'Addendum' ELSE 'Report' END AS DESCRIPTION, "
        f"CHARTTIME, CAST(CHARTTIME AS DATE) AS CHARTDATE, STORETIME, false AS ISERROR, "
        f"{'TEXT' if text else 'NULL AS TEXT'}, "
        "COALESCE(CHARTTIME, STORETIME) AS ET "
        f"FROM ({table_sql(path, cols)})"
    )


def notes_sql(kind: str, note_files: Collection[Path], *, text: bool = True) -> str:
    """Every note of the source in the unified note columns (plus ORD, a tie-break)."""
    build = _notes_iii if kind == "mimic-iii" else _notes_iv
    return " UNION ALL ".join(f"({build(p, text)})" for p in note_files)


def admissions_sql(
    admissions: Path,
    *,
    hadm_ids: Collection[int] | None,
    limit: int | None,
    since: datetime | None,
    until: datetime | None,
) -> str:
    """The admissions to replay: filtered by id and by overlap with [since, until), the first ``limit``
    by admit time."""
    where = ["HADM_ID IS NOT NULL", "SUBJECT_ID IS NOT NULL", "ADMITTIME IS NOT NULL"]
    if hadm_ids is not None:
        where.append(f"HADM_ID IN ({', '.join(str(int(h)) for h in hadm_ids) or 'NULL'})")
    if since is not None:
        where.append(f"COALESCE(DISCHTIME, ADMITTIME) >= {_literal(since)}")
    if until is not None:
        where.append(f"ADMITTIME < {_literal(until)}")
    sql = f"SELECT * FROM ({table_sql(admissions, ADMISSION_COLUMNS)}) WHERE {' AND '.join(where)}"
    if limit is not None:
        sql += f" ORDER BY ADMITTIME, HADM_ID LIMIT {int(limit)}"
    return sql


def events_sql(
    kind: str,
    admissions: Path,
    note_files: Collection[Path],
    *,
    hadm_ids: Collection[int] | None = None,
    limit: int | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    ordered: bool = True,
) -> str:
    """All events in event-time order, the columns :data:`COLUMNS` (``ordered=False``: unordered, plus
    the tie-break column ORD, for :func:`bucket_sql`)."""
    adm = admissions_sql(admissions, hadm_ids=hadm_ids, limit=limit, since=since, until=until)
    null = (
        "CAST(NULL AS VARCHAR) AS NOTE_ID, CAST(NULL AS VARCHAR) AS CATEGORY, CAST(NULL AS VARCHAR) AS "
        "DESCRIPTION, CAST(NULL AS TIMESTAMP) AS CHARTTIME, CAST(NULL AS DATE) AS CHARTDATE, "
        "CAST(NULL AS TIMESTAMP) AS STORETIME, false AS ISERROR, CAST(NULL AS VARCHAR) AS TEXT"
    )
    adm_cols = "a.ADMITTIME, a.DISCHTIME, a.DEATHTIME, a.ADMISSION_TYPE"
    parts = [
        f"SELECT ADMITTIME AS ET, 0 AS K, SUBJECT_ID, HADM_ID, {null}, {adm_cols}, 0 AS ORD FROM adm a",
        f"SELECT DISCHTIME AS ET, 2 AS K, SUBJECT_ID, HADM_ID, {null}, {adm_cols}, 0 AS ORD "
        "FROM adm a WHERE DISCHTIME IS NOT NULL",
        "SELECT n.ET, 1 AS K, n.SUBJECT_ID, n.HADM_ID, n.NOTE_ID, n.CATEGORY, n.DESCRIPTION, n.CHARTTIME, "
        f"n.CHARTDATE, n.STORETIME, n.ISERROR, n.TEXT, {adm_cols}, n.ORD "
        "FROM notes n JOIN adm a ON n.HADM_ID = a.HADM_ID WHERE n.ET IS NOT NULL",
    ]
    where = []
    if since is not None:
        where.append(f"ET >= {_literal(since)}")
    if until is not None:
        where.append(f"ET < {_literal(until)}")
    filt = f" WHERE {' AND '.join(where)}" if where else ""
    return (
        f"WITH adm AS ({adm}), notes AS ({notes_sql(kind, note_files)}) "
        f"SELECT {', '.join(COLUMNS)}{'' if ordered else ', ORD'} FROM ({' UNION ALL '.join(parts)}){filt}"
        + (f" {ORDER}" if ordered else "")
    )


def partition_sql(unordered: str, bounds: list[datetime], folder: Path) -> str:
    """Write the events to Parquet files partitioned into time buckets ``[bounds[i-1], bounds[i])``."""
    cases = " ".join(f"WHEN ET < {_literal(b)} THEN {i}" for i, b in enumerate(bounds))
    bucket = f"CASE {cases} ELSE {len(bounds)} END" if bounds else "0"
    return (
        f"COPY (SELECT *, {bucket} AS B FROM ({unordered})) TO '{folder}' "
        "(FORMAT PARQUET, PARTITION_BY (B), OVERWRITE_OR_IGNORE true, ROW_GROUP_SIZE 1024)"
    )


def bucket_sql(folder: Path, bucket: int) -> str:
    """The events of one time bucket written by :func:`partition_sql`, in event-time order."""
    return f"SELECT {', '.join(COLUMNS)} FROM read_parquet('{folder}/B={bucket}/*.parquet') {ORDER}"


def bounds_sql(unordered: str, buckets: int) -> str:
    """Event-time quantiles that cut the events into about ``buckets`` equal-count buckets."""
    points = ", ".join(str(i / buckets) for i in range(1, buckets))
    return f"SELECT quantile_disc(ET, [{points}]) FROM ({unordered})"


def skipped_sql(kind: str, admissions: Path, note_files: Collection[Path]) -> str:
    """Counts of notes a replay cannot send: without HADM_ID, of an unknown admission, without any time."""
    return (
        f"WITH adm AS (SELECT HADM_ID FROM ({table_sql(admissions, ['HADM_ID'])})), "
        f"notes AS ({notes_sql(kind, note_files, text=False)}) "
        "SELECT count(*) FILTER (WHERE n.HADM_ID IS NULL), "
        "count(*) FILTER (WHERE n.HADM_ID IS NOT NULL AND a.HADM_ID IS NULL), "
        "count(*) FILTER (WHERE n.HADM_ID IS NOT NULL AND a.HADM_ID IS NOT NULL AND n.ET IS NULL) "
        "FROM notes n LEFT JOIN (SELECT DISTINCT HADM_ID FROM adm) a ON n.HADM_ID = a.HADM_ID"
    )
