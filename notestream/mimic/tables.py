"""MIMIC CSV tables through DuckDB: either header case, quoted multi-line text, extra columns ignored.

Training (``training/``), the replayer (``stream/replay.py``) and ``notestream score`` read MIMIC-III
(``ADMISSIONS``, ``NOTEEVENTS``, ``PATIENTS``, ``DIAGNOSES_ICD``) and MIMIC-IV / MIMIC-IV-Note
(``admissions``, ``discharge``, ``radiology``) files, as ``.csv`` or ``.csv.gz``, through this module:

- :func:`find_table` locates ``NAME.csv`` / ``NAME.csv.gz`` in a folder (any case; MIMIC-IV's ``hosp/``
  and ``note/`` sub-folders too).
- :func:`table_sql` is a ``SELECT`` over one file that reads every field as text (so no type sniffing
  can go wrong on row 2,000,001), then casts the requested columns by name and returns them with
  upper-case names: integers (``123`` or ``123.0``), timestamps (``YYYY-MM-DD`` or
  ``YYYY-MM-DD HH:MM:SS``; unparseable -> NULL) and text. Empty fields are NULL.
- :func:`read_table` / :func:`fetch_df` / :func:`iter_batches` run such queries; :func:`connect` opens a
  DuckDB connection with a memory limit and a spill folder, so that ``ORDER BY`` over a full-size
  NOTEEVENTS (about 4 GB) runs out of core.

A malformed file raises :class:`TableError` naming the file, the line and the column where DuckDB
found the problem. The offending line itself is never repeated: it may hold note text (PHI).

>>> table_kind("NOTEEVENTS.csv.gz"), table_kind("discharge.csv")
('NOTEEVENTS', 'discharge')
>>> column_type("chartdate"), column_type("HADM_ID"), column_type("TEXT")
('timestamp', 'int', 'text')
"""

from __future__ import annotations

import csv
import gzip
import io
import re
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Literal

import duckdb
import pandas as pd

from notestream.core.errors import NotestreamError

ColumnType = Literal["int", "timestamp", "text"]

#: Columns of the tables notestream reads, in CSV order (MIT-LCP/mimic-code DDL). Extra columns in a
#: file are ignored; the ones a caller asks for must be present.
MIMIC_III: dict[str, tuple[str, ...]] = {
    "ADMISSIONS": (
        "ROW_ID",
        "SUBJECT_ID",
        "HADM_ID",
        "ADMITTIME",
        "DISCHTIME",
        "DEATHTIME",
        "ADMISSION_TYPE",
        "ADMISSION_LOCATION",
        "DISCHARGE_LOCATION",
        "INSURANCE",
        "LANGUAGE",
        "RELIGION",
        "MARITAL_STATUS",
        "ETHNICITY",
        "EDREGTIME",
        "EDOUTTIME",
        "DIAGNOSIS",
        "HOSPITAL_EXPIRE_FLAG",
        "HAS_CHARTEVENTS_DATA",
    ),
    "NOTEEVENTS": (
        "ROW_ID",
        "SUBJECT_ID",
        "HADM_ID",
        "CHARTDATE",
        "CHARTTIME",
        "STORETIME",
        "CATEGORY",
        "DESCRIPTION",
        "CGID",
        "ISERROR",
        "TEXT",
    ),
    "PATIENTS": ("ROW_ID", "SUBJECT_ID", "GENDER", "DOB", "DOD", "DOD_HOSP", "DOD_SSN", "EXPIRE_FLAG"),
    "DIAGNOSES_ICD": ("ROW_ID", "SUBJECT_ID", "HADM_ID", "SEQ_NUM", "ICD9_CODE"),
}
MIMIC_IV: dict[str, tuple[str, ...]] = {
    "admissions": (
        "subject_id",
        "hadm_id",
        "admittime",
        "dischtime",
        "deathtime",
        "admission_type",
        "admit_provider_id",
        "admission_location",
        "discharge_location",
        "insurance",
        "language",
        "marital_status",
        "race",
        "edregtime",
        "edouttime",
        "hospital_expire_flag",
    ),
    "patients": ("subject_id", "gender", "anchor_age", "anchor_year", "anchor_year_group", "dod"),
    "diagnoses_icd": ("subject_id", "hadm_id", "seq_num", "icd_code", "icd_version"),
    "discharge": (
        "note_id",
        "subject_id",
        "hadm_id",
        "note_type",
        "note_seq",
        "charttime",
        "storetime",
        "text",
    ),
    "radiology": (
        "note_id",
        "subject_id",
        "hadm_id",
        "note_type",
        "note_seq",
        "charttime",
        "storetime",
        "text",
    ),
}

_INT_COLUMNS = {
    "ROW_ID",
    "SUBJECT_ID",
    "HADM_ID",
    "CGID",
    "SEQ_NUM",
    "NOTE_SEQ",
    "HOSPITAL_EXPIRE_FLAG",
    "HAS_CHARTEVENTS_DATA",
    "EXPIRE_FLAG",
    "ANCHOR_AGE",
    "ANCHOR_YEAR",
    "ICD_VERSION",
}
_TIME_COLUMNS = {
    "ADMITTIME",
    "DISCHTIME",
    "DEATHTIME",
    "EDREGTIME",
    "EDOUTTIME",
    "CHARTDATE",
    "CHARTTIME",
    "STORETIME",
    "DOB",
    "DOD",
    "DOD_HOSP",
    "DOD_SSN",
}

#: Longest CSV record DuckDB accepts (bytes). Real notes reach about 5 MB.
MAX_LINE_SIZE = 64 * 1024 * 1024

_SUFFIXES = (".csv", ".csv.gz")


class TableError(NotestreamError, ValueError):
    """A MIMIC table is missing, unreadable or malformed."""


def column_type(name: str) -> ColumnType:
    """How a column is cast, from its (case-insensitive) MIMIC name; unknown columns are text."""
    key = name.upper()
    if key in _INT_COLUMNS:
        return "int"
    if key in _TIME_COLUMNS:
        return "timestamp"
    return "text"


def table_kind(path: str | Path) -> str:
    """The table name of a file: ``NOTEEVENTS.csv.gz`` -> ``NOTEEVENTS``."""
    name = Path(path).name
    for suffix in (".csv.gz", ".csv"):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return name


def find_table(directory: str | Path, name: str, *, required: bool = True) -> Path | None:
    """Find ``name`` (``.csv`` or ``.csv.gz``, any letter case) in ``directory`` or its ``hosp``/``note``
    sub-folders (the MIMIC-IV layout). Raises :class:`TableError` when required and absent."""
    root = Path(directory)
    if not root.is_dir():
        raise TableError(f"{root} is not a folder. Pass the folder that holds the MIMIC CSV files.")
    wanted = {f"{name}{suffix}".lower() for suffix in _SUFFIXES}
    for folder in (root, root / "hosp", root / "note"):
        if not folder.is_dir():
            continue
        matches = sorted(p for p in folder.iterdir() if p.name.lower() in wanted and p.is_file())
        if matches:
            # Prefer the uncompressed file when both exist: it reads in parallel.
            return min(matches, key=lambda p: p.name.lower().endswith(".gz"))
    if required:
        raise TableError(
            f"No {name}.csv or {name}.csv.gz in {root} (nor in its hosp/ or note/ folders). "
            "Point the command at the folder that holds the MIMIC files."
        )
    return None


def read_header(path: str | Path) -> list[str]:
    """The column names in the first line of a CSV(.gz) file, as written (quoted or not)."""
    p = Path(path)
    try:
        opener = gzip.open if p.name.lower().endswith(".gz") else open
        with opener(p, "rt", encoding="utf-8", newline="") as fh:  # type: ignore[operator]
            first = fh.readline()
    except (OSError, UnicodeDecodeError, EOFError) as exc:
        raise TableError(f"Cannot read the header of {p}: {exc}. Check that the file is intact.") from exc
    row = next(csv.reader(io.StringIO(first.lstrip("\ufeff"))), [])
    names = [c.strip() for c in row]
    if not names or not any(names):
        raise TableError(f"{p} is empty: it has no header line. A MIMIC table starts with its column names.")
    return names


def _quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _quote_str(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def _cast(expr: str, kind: ColumnType) -> str:
    # Functions around the raw text keep DuckDB from pushing a strict cast into the CSV scanner.
    if kind == "int":
        return f"CAST(TRY_CAST(trim({expr}) AS DOUBLE) AS BIGINT)"
    if kind == "timestamp":
        return (
            f"COALESCE(TRY_STRPTIME(trim({expr}), '%Y-%m-%d %H:%M:%S'), "
            f"TRY_STRPTIME(trim({expr}), '%Y-%m-%d'))"
        )
    return expr


def table_sql(
    path: str | Path,
    columns: Sequence[str] | None = None,
    *,
    types: Mapping[str, ColumnType] | None = None,
) -> str:
    """A ``SELECT`` over one CSV(.gz) file returning ``columns`` (default: all) with upper-case names.

    ``types`` overrides :func:`column_type` per column (e.g. ``{"HADM_ID": "text"}``). Columns named
    but absent from the file raise :class:`TableError`; the file's other columns are ignored.
    """
    p = Path(path)
    header = read_header(p)
    by_upper: dict[str, str] = {}
    for name in header:
        by_upper.setdefault(name.upper(), name)
    wanted = [c.upper() for c in columns] if columns is not None else list(by_upper)
    missing = [c for c in wanted if c not in by_upper]
    if missing:
        raise TableError(
            f"{p} lacks the column(s) {', '.join(missing)} (it has {', '.join(header)}). "
            "Use the original MIMIC file, or add the columns."
        )
    overrides = {k.upper(): v for k, v in (types or {}).items()}
    struct = "{" + ", ".join(f"{_quote_str(n)}: 'VARCHAR'" for n in header) + "}"
    select = ", ".join(
        f"{_cast(_quote_ident(by_upper[c]), overrides.get(c, column_type(c)))} AS {_quote_ident(c)}"
        for c in wanted
    )
    reader = (
        f"read_csv({_quote_str(str(p))}, header = true, columns = {struct}, auto_detect = false, "
        f"delim = ',', quote = '\"', escape = '\"', strict_mode = true, "
        # buffer_size: DuckDB's default (16 x max_line_size = 1 GiB) is allocated whole for .gz files
        f"max_line_size = {MAX_LINE_SIZE}, buffer_size = {MAX_LINE_SIZE}, compression = 'auto')"
    )
    return f"SELECT {select} FROM {reader}"


def connect(
    *,
    memory_limit: str | None = "2GB",
    temp_dir: str | Path | None = None,
    threads: int | None = None,
    database: str | Path = ":memory:",
) -> duckdb.DuckDBPyConnection:
    """A DuckDB connection that spills to ``temp_dir`` beyond ``memory_limit`` (out-of-core sorts/joins)."""
    try:
        con = duckdb.connect(str(database))
        if memory_limit:
            con.execute(f"SET memory_limit = {_quote_str(memory_limit)}")
        if temp_dir is not None:
            Path(temp_dir).mkdir(parents=True, exist_ok=True)
            con.execute(f"SET temp_directory = {_quote_str(str(temp_dir))}")
        if threads:
            con.execute(f"SET threads = {int(threads)}")
        con.execute("SET preserve_insertion_order = true")
    except duckdb.Error as exc:
        raise TableError(f"Cannot open a DuckDB connection: {exc}") from exc
    return con


_LINE = re.compile(r"CSV Error on Line: (\d+)")
_FILE = re.compile(r"^\s*file = (.+)$", re.MULTILINE)
_ORIGINAL = re.compile(r"Original Line: ?(.*?)\n(.*?)(?:\n|$)", re.DOTALL)
_VALUES = re.compile(r"string \"[^\"]*\"|'[^']*'")


def _redact(message: str) -> str:
    """Drop quoted values from a DuckDB message (they may be note text); column names stay."""
    return _VALUES.sub("<value>", message)


def _problem(message: str) -> tuple[str, int | None]:
    """The one-line description of a CSV error and the 1-based column where it is, without the text."""
    m = _ORIGINAL.search(message)
    if not m:
        return "", None
    line, what = m.group(1), m.group(2).strip()
    try:
        fields = next(csv.reader(io.StringIO(line)))
    except (csv.Error, StopIteration):
        return what, None
    return what, max(len(fields), 1)


def describe_error(exc: duckdb.Error, path: str | Path | None = None) -> str:
    """A full-sentence description of a DuckDB error: file, line, column; never the line's content."""
    message = str(exc)
    line = _LINE.search(message)
    found = _FILE.search(message)
    name = found.group(1).strip() if found else (str(path) if path else "a MIMIC table")
    if line is None:
        first = message.splitlines()[0] if message else type(exc).__name__
        return f"Reading {name} failed: {_redact(first)}"
    what, col = _problem(message)
    where = f"line {line.group(1)}" + (f", column {col}" if col else "")
    detail = f" ({_redact(what).rstrip('.')})" if what else ""
    return (
        f"{name} is malformed at {where}{detail}. Fix or re-extract the file; MIMIC CSVs quote text "
        'fields and write a quote inside them as "".'
    )


@contextmanager
def translate_errors(path: str | Path | None = None) -> Iterator[None]:
    """Turn DuckDB errors raised inside the block into :class:`TableError` with file, line and column."""
    try:
        yield
    except duckdb.Error as exc:
        raise TableError(describe_error(exc, path)) from exc


def read_table(
    path: str | Path,
    columns: Sequence[str] | None = None,
    *,
    con: duckdb.DuckDBPyConnection | None = None,
    types: Mapping[str, ColumnType] | None = None,
) -> duckdb.DuckDBPyRelation:
    """A lazy DuckDB relation over one table file (see :func:`table_sql`). Run it inside
    :func:`translate_errors`, or use :func:`fetch_df` / :func:`iter_batches`, to get clear errors."""
    connection = con if con is not None else connect()
    with translate_errors(path):
        return connection.sql(table_sql(path, columns, types=types))


def fetch_df(con: duckdb.DuckDBPyConnection, sql: str) -> pd.DataFrame:
    """Run ``sql`` and return the whole result as a DataFrame (for small results: admissions, ids)."""
    with translate_errors():
        return con.execute(sql).fetch_df()


def execute(con: duckdb.DuckDBPyConnection, sql: str) -> None:
    """Run a statement (``CREATE TABLE ... AS``, ``COPY``), translating CSV errors."""
    with translate_errors():
        con.execute(sql)


def iter_batches(
    con: duckdb.DuckDBPyConnection, sql: str, *, batch_rows: int = 8192
) -> Iterator[pd.DataFrame]:
    """Stream the result of ``sql`` as DataFrames of about ``batch_rows`` rows (bounded memory)."""
    vectors = max(1, batch_rows // 2048)
    with translate_errors():
        result = con.execute(sql)
        while True:
            frame = result.fetch_df_chunk(vectors)
            if frame is None or len(frame) == 0:
                return
            yield frame


def iter_table(
    path: str | Path,
    columns: Sequence[str] | None = None,
    *,
    order_by: Sequence[str] | None = None,
    where: str | None = None,
    batch_rows: int = 8192,
    memory_limit: str | None = "2GB",
    temp_dir: str | Path | None = None,
) -> Iterator[pd.DataFrame]:
    """Stream one table in batches, optionally filtered and ordered (out of core, spilling to
    ``temp_dir``). ``order_by`` and ``where`` are SQL over the upper-case column names, e.g.
    ``order_by=["COALESCE(CHARTTIME, CHARTDATE)", "ROW_ID"]`` for event-time order of NOTEEVENTS."""
    con = connect(memory_limit=memory_limit, temp_dir=temp_dir)
    try:
        sql = f"SELECT * FROM ({table_sql(path, columns)})"
        if where:
            sql += f" WHERE {where}"
        if order_by:
            sql += " ORDER BY " + ", ".join(order_by)
        with translate_errors(path):
            yield from iter_batches(con, sql, batch_rows=batch_rows)
    finally:
        con.close()
