"""CSV writing shared by the synthetic MIMIC tables: files opened for fast writes, fields quoted as
MIMIC's own CSV files quote them.

>>> print(quote('5 "mg" bid'), repr(quote(None)))
"5 ""mg"" bid" ''
"""

from __future__ import annotations

import gzip
from pathlib import Path
from typing import IO


def open_csv(path: Path) -> IO[str]:
    """A CSV file opened for writing, gzip-compressed when its name ends in .gz."""
    if path.name.endswith(".gz"):
        return gzip.open(path, "wt", encoding="utf-8", compresslevel=1, newline="")
    return open(path, "w", encoding="utf-8", newline="", buffering=1 << 20)


def quote(value: object) -> str:
    """A quoted CSV string field ('' for missing)."""
    if value is None or value == "":
        return ""
    return '"' + str(value).replace('"', '""') + '"'
