"""Chunk files (ID, TEXT, Label), as ``train prepare`` writes them and every later step reads them."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from notestream.training.errors import TrainRunError


def read_chunks(path: str | Path) -> pd.DataFrame:
    """A chunk file (ID, TEXT, Label) as written by ``prepare``; clear errors for anything else."""
    p = Path(path)
    if not p.is_file():
        raise TrainRunError(f"Chunk file {p} does not exist; run `notestream train prepare` first.")
    try:
        df = pd.read_csv(p, dtype={"TEXT": str}, keep_default_na=False)
    except (OSError, ValueError, pd.errors.ParserError) as exc:
        raise TrainRunError(f"Cannot read the chunk file {p}: {exc}") from exc
    missing = {"ID", "TEXT", "Label"} - set(df.columns)
    if missing:
        raise TrainRunError(f"{p} lacks the column(s) {sorted(missing)}; chunk files have ID, TEXT, Label.")
    return df[["ID", "TEXT", "Label"]]
