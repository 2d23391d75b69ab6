"""Task datasets from MIMIC: cohort, chunks, train / val / test files and a manifest.

``prepare(source, out, config)`` writes into ``out``:

- ``cohort.csv``: one row per cohort admission (HADM_ID, SUBJECT_ID, OUTPUT_LABEL, DAYS_NEXT_ADMIT,
  DURATION), in the reference's (SUBJECT_ID, ADMITTIME) order;
- ``chunks.csv``: every chunk of every selected admission before splitting (ID, TEXT, Label), in the
  reference's order (discharge task: by SUBJECT_ID, HADM_ID; early notes: by HADM_ID);
- ``train.csv``, ``val.csv``, ``test.csv`` (ID, TEXT, Label): the split (docs/reference.md §5, or by patient);
  the 2-day readmission task writes only ``test.csv`` (it is scored with the 3-day model);
- at natural prevalence (the default outside ``--mode huang2019``; ``balance=False``), ``val.csv`` and
  ``test.csv`` keep the cohort's share of positives, as a deployed model meets them, and
  ``val_balanced.csv`` / ``test_balanced.csv`` hold their balanced subsets (the reference protocol, for
  comparing with the paper). Training stays balanced either way;
- ``demographics.csv``: sex, age band, insurance and ethnicity of the cohort's admissions
  (:mod:`notestream.training.subgroups`), when the folder has the patients table;
- ``manifest.json``: the configuration, the model description (``spec``: cleaning, chunking, window,
  task) that fine-tuning copies into the model folder, input file sizes, counts, the SHA-256 of every
  output file and ``manifest_hash`` over all of it.

Chunk texts never pass through pandas as a whole: admissions stream out of DuckDB one by one, chunks
stream into ``chunks.csv``, and DuckDB writes the split files from it (ordered out of core).
"""

from __future__ import annotations

import csv
import hashlib
import json
import shutil
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
from rich.progress import Progress

from notestream.mimic.tables import connect, execute, fetch_df
from notestream.models.prep import note_chunks
from notestream.models.spec import Chunking, ModelSpec, Window
from notestream.training.errors import CohortError
from notestream.training.labels import (
    cohort_table,
    mortality_cohort,
    prolonged_stay_cohort,
    readmission_cohort,
)
from notestream.training.mimic import (
    Source,
    fetch_texts,
    iter_admission_notes,
    load_admissions,
    load_note_index,
    select_notes,
)
from notestream.training.split import (
    EXTRA_NEGATIVES,
    SplitIds,
    natural_prevalence,
    patient_split,
    reference_split,
    shuffle_positions,
)

Task = Literal["readmission", "mortality", "prolonged_stay"]
Notes = Literal["discharge", "early-2d", "early-3d"]
LABELS = {
    "readmission": "unplanned readmission within 30 days of discharge",
    "mortality": "death during the hospital stay",
    "prolonged_stay": "hospital stay longer than 7 days",
}
SPLIT_FILES = ("train.csv", "val.csv", "test.csv", "val_balanced.csv", "test_balanced.csv")


@dataclass(frozen=True)
class PrepareConfig:
    """How to build a task dataset. ``mode``: ``huang2019`` (reference: calendar days, an admission's
    notes joined) or ``hours`` (event time, each note chunked alone, as the stream scores them)."""

    task: Task = "readmission"
    notes: Notes = "discharge"
    mode: Literal["huang2019", "hours"] = "huang2019"
    hours: float | None = None
    split: Literal["reference", "patient"] = "reference"
    balance: bool | None = None
    """Balance val and test (the reference protocol); None: only in the huang2019 mode."""
    los_days: float = 7.0
    """prolonged_stay: a stay longer than this many days is positive (ClinicalNoteBERT uses 3)."""
    seed: int = 1
    cleaning: Literal["huang2019", "clinical"] = "huang2019"
    chunk_words: int = 318
    chunking: Literal["words", "tokens"] = "words"
    """``tokens``: windows of ``max_length - 2`` WordPiece tokens every ``stride`` tokens, cut with the
    ``tokenizer`` folder's tokenizer (that of the model to fine-tune), as a token-window model is served."""
    tokenizer: str | None = None
    max_length: int = 512
    stride: int = 384
    memory_limit: str = "2GB"
    threads: int | None = None
    temp_dir: str | None = None

    @property
    def balanced(self) -> bool:
        """Whether val and test are balanced (the reference protocol) rather than at natural prevalence.

        >>> PrepareConfig().balanced, PrepareConfig(mode="hours").balanced, PrepareConfig(balance=False).balanced
        (True, False, False)
        """
        return self.balance if self.balance is not None else self.mode == "huang2019"

    @property
    def days(self) -> int | None:
        return {"early-2d": 2, "early-3d": 3}.get(self.notes)

    def window(self) -> Window:
        if self.notes == "discharge":
            if self.task != "readmission":
                raise CohortError(
                    f"The {self.task} task uses early notes only: pass --notes early-2d|early-3d."
                )
            return Window(kind="discharge")
        if self.mode == "hours":
            return Window(kind="hours", value=self.hours or 24.0 * (self.days or 3))
        return Window(kind="days", value=self.days)

    def spec(self) -> ModelSpec:
        window = self.window()
        label = LABELS[self.task]
        if self.task == "prolonged_stay":
            label = f"hospital stay longer than {self.los_days:g} days"
        return ModelSpec(
            task=self.task,
            label=label,
            cleaning=self.cleaning,
            chunking=Chunking(kind=self.chunking, size=self.chunk_words, stride=self.stride),
            max_length=self.max_length,
            window=window,
            notes_joined=self.mode == "huang2019" and window.kind != "discharge",
        )


@dataclass
class PrepareResult:
    out: Path
    manifest: dict[str, Any] = field(default_factory=dict)


def build_cohort(admissions: pd.DataFrame, config: PrepareConfig) -> pd.DataFrame:
    """The labelled cohort of the task (index: positions in (SUBJECT_ID, ADMITTIME) order)."""
    window = config.window()
    min_days = (
        0.0
        if window.kind in ("discharge", "all")
        else (window.value or 0) / (24 if window.kind == "hours" else 1)
    )
    if config.task == "readmission":
        return readmission_cohort(admissions)
    if config.task == "mortality":
        return mortality_cohort(admissions, min_days=min_days)
    return prolonged_stay_cohort(admissions, days=config.los_days, min_days=min_days)


def _write_demographics(source: Source, cohort: pd.DataFrame, path: Path) -> None:
    """``demographics.csv`` (HADM_ID, sex, age_band, insurance, ethnicity) of the cohort's admissions,
    for the subgroup report of ``evaluate``; left out when the patients table is not there."""
    from notestream.mimic.tables import TableError
    from notestream.training.subgroups import load_demographics

    folder = source.admissions.parent
    try:
        demo = load_demographics(**{"mimic_iii" if source.kind == "mimic-iii" else "mimic_iv": folder})
    except TableError:
        path.unlink(missing_ok=True)
        return
    demo[demo["HADM_ID"].isin(cohort["HADM_ID"])].sort_values("HADM_ID").to_csv(path, index=False)


def actionable_days(config: PrepareConfig) -> float | None:
    """Test admissions must still be in hospital when the window closes (§5: DURATION >= n)."""
    window = config.window()
    if window.kind == "days":
        return window.value
    if window.kind == "hours":
        return (window.value or 0) / 24.0
    return None


def prepare(
    source: Source, out: str | Path, config: PrepareConfig, *, progress: bool = True
) -> PrepareResult:
    """Build the task dataset of ``config`` from ``source`` into ``out`` (see the module docstring)."""
    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    spill = Path(config.temp_dir) if config.temp_dir else Path(tempfile.mkdtemp(prefix="duckdb-", dir=folder))
    con = connect(memory_limit=config.memory_limit, temp_dir=spill, threads=config.threads)
    spec = config.spec()
    try:
        with Progress(disable=not progress, transient=True) as bar:
            stage = bar.add_task("Labelling admissions", total=4)
            admissions = load_admissions(con, source)
            cohort = build_cohort(admissions, config)
            if cohort.empty:
                raise CohortError("No admission is left in the cohort; check the ADMISSIONS file.")
            cohort_table(cohort).to_csv(folder / "cohort.csv", index=False)
            _write_demographics(source, cohort, folder / "demographics.csv")
            con.register(
                "cohort_df", cohort[["SUBJECT_ID", "HADM_ID", "ADMITTIME", "OUTPUT_LABEL", "DURATION"]]
            )
            execute(con, "CREATE OR REPLACE TABLE cohort AS SELECT * FROM cohort_df")
            con.unregister("cohort_df")
            bar.update(stage, advance=1, description="Indexing notes (pass 1 of 2)")
            load_note_index(con, source, discharge_only=spec.window.kind == "discharge")
            bar.update(stage, advance=1, description="Selecting notes")
            select_notes(con, spec.window)
            bar.update(stage, advance=1, description="Reading selected texts (pass 2 of 2)")
            fetch_texts(con, source)
            bar.update(stage, advance=1)
        tokenizer = _tokenizer(config)
        ids, labels = _write_chunks(
            con, folder / "chunks.csv", spec, config, progress=progress, tokenizer=tokenizer
        )
        if len(ids) == 0:
            raise CohortError("No admission of the cohort has notes with enough words for one chunk.")
        split = _split(cohort, config)
        with Progress(disable=not progress, transient=True) as bar:
            bar.add_task("Writing train / val / test", total=None)
            counts = _write_splits(con, folder, cohort, split, config, ids, labels)
    finally:
        con.close()
        if not config.temp_dir:
            shutil.rmtree(spill, ignore_errors=True)
    manifest = _manifest(folder, source, config, spec, cohort, split, counts)
    return PrepareResult(folder, manifest)


def _tokenizer(config: PrepareConfig) -> Any:
    """The tokenizer of token-window chunking (None for words)."""
    if config.chunking == "words":
        return None
    if config.tokenizer is None:
        raise CohortError(
            "--chunking tokens needs --tokenizer DIR: the folder of the model you will fine-tune."
        )
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(config.tokenizer, local_files_only=True)
    except (OSError, ValueError) as exc:
        raise CohortError(f"No tokenizer could be loaded from {config.tokenizer}: {exc}") from exc


def _write_chunks(
    con: Any, path: Path, spec: ModelSpec, config: PrepareConfig, *, progress: bool, tokenizer: Any = None
) -> tuple[np.ndarray, np.ndarray]:
    label_of = dict(
        fetch_df(con, "SELECT HADM_ID, OUTPUT_LABEL FROM cohort").itertuples(index=False, name=None)
    )
    total = int(fetch_df(con, "SELECT count(DISTINCT HADM_ID) AS n FROM selected_text")["n"].iloc[0])
    order = "c.SUBJECT_ID, c.HADM_ID" if spec.window.kind == "discharge" else "c.HADM_ID"
    per_note = config.mode == "hours" and spec.window.kind != "discharge"
    ids: list[int] = []
    labels: list[int] = []
    with (
        path.open("w", encoding="utf-8", newline="") as fh,
        Progress(disable=not progress, transient=True) as bar,
    ):
        task = bar.add_task("Chunking admissions", total=total)
        writer = csv.writer(fh)
        writer.writerow(["ID", "TEXT", "Label"])
        for hadm, texts in iter_admission_notes(con, order):
            if per_note:
                chunks = [c for text in texts for c in note_chunks(text, spec, tokenizer)]
            else:
                chunks = note_chunks(" ".join(texts), spec, tokenizer)
            label = int(label_of[hadm])
            writer.writerows([hadm, chunk, label] for chunk in chunks)
            ids.extend([hadm] * len(chunks))
            labels.extend([label] * len(chunks))
            bar.update(task, advance=1)
    return np.asarray(ids, dtype=np.int64), np.asarray(labels, dtype=np.int64)


def _split(cohort: pd.DataFrame, config: PrepareConfig) -> SplitIds:
    if config.split == "patient":
        return patient_split(cohort, seed=config.seed, balance_eval=config.balanced)
    extra = EXTRA_NEGATIVES.get(config.notes, 0) if config.task == "readmission" else 0
    split = reference_split(cohort, extra_negatives=extra)
    return split if config.balanced else natural_prevalence(cohort, split)


def _write_splits(
    con: Any,
    folder: Path,
    cohort: pd.DataFrame,
    split: SplitIds,
    config: PrepareConfig,
    ids: np.ndarray,
    labels: np.ndarray,
) -> dict[str, dict[str, int]]:
    chunks_csv = str(folder / "chunks.csv").replace("'", "''")
    execute(
        con,
        "CREATE OR REPLACE TABLE chunks AS SELECT * FROM read_csv("
        f"'{chunks_csv}', header = true, columns = {{'ID': 'BIGINT', 'TEXT': 'VARCHAR', 'Label': 'INTEGER'}}, "
        "auto_detect = false, delim = ',', quote = '\"', escape = '\"', max_line_size = 67108864)",
    )
    execute(con, "CREATE OR REPLACE TABLE chunks AS SELECT rowid AS SEQ, * FROM chunks")
    seq = np.arange(len(ids))
    min_days = actionable_days(config)
    long_enough = (
        set(cohort.loc[cohort["DURATION"] >= min_days, "HADM_ID"].astype(int))
        if min_days is not None
        else None
    )

    def actionable(part: list[int]) -> list[int]:
        return part if long_enough is None else sorted(set(part) & long_enough)

    parts: dict[str, np.ndarray] = {
        "val": seq[np.isin(ids, split.val)],
        "test": seq[np.isin(ids, actionable(split.test))],
    }
    if split.val_balanced is not None and split.test_balanced is not None:
        parts["val_balanced"] = seq[np.isin(ids, split.val_balanced)]
        parts["test_balanced"] = seq[np.isin(ids, actionable(split.test_balanced))]
    train = np.concatenate([seq[np.isin(ids, split.extra)], seq[np.isin(ids, split.train)]])
    parts["train"] = (
        train[shuffle_positions(len(train))]
        if config.split == "reference"
        else train[np.random.RandomState(config.seed).permutation(len(train))]
    )
    if config.notes == "early-2d" and config.split == "reference" and config.task == "readmission":
        # the reference's 2-day readmission task is scored with the 3-day model
        parts = {k: v for k, v in parts.items() if k.startswith("test")}
    counts: dict[str, dict[str, Any]] = {}
    for name in ("train", "val", "test", "val_balanced", "test_balanced"):
        path = folder / f"{name}.csv"
        if name not in parts:
            path.unlink(missing_ok=True)
            continue
        rows = parts[name]
        con.register("positions", pd.DataFrame({"SEQ": rows, "POS": np.arange(len(rows))}))
        target = str(path).replace("'", "''")
        execute(
            con,
            "COPY (SELECT c.ID, c.TEXT, c.Label FROM chunks c JOIN positions p ON c.SEQ = p.SEQ ORDER BY p.POS) "
            f"TO '{target}' (HEADER, DELIMITER ',', QUOTE '\"', ESCAPE '\"')",
        )
        con.unregister("positions")
        admissions = len(np.unique(ids[rows]))
        positive = len(np.unique(ids[rows][labels[rows] == 1]))
        counts[name] = {
            "chunks": len(rows),
            "admissions": admissions,
            "positive_chunks": int(labels[rows].sum()),
            "positive_admissions": positive,
            "prevalence": round(positive / admissions, 4) if admissions else None,
        }
    counts["chunks"] = {
        "chunks": len(ids),
        "admissions": len(np.unique(ids)),
        "positive_chunks": int(labels.sum()),
    }
    return counts


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _manifest(
    folder: Path,
    source: Source,
    config: PrepareConfig,
    spec: ModelSpec,
    cohort: pd.DataFrame,
    split: SplitIds,
    counts: dict[str, dict[str, int]],
) -> dict[str, Any]:
    extra = [f for f in ("demographics.csv", *SPLIT_FILES) if (folder / f).exists()]
    outputs = ["cohort.csv", "chunks.csv", *extra]
    manifest: dict[str, Any] = {
        "kind": "notestream-task-dataset",
        "version": 1,
        "source": {"format": source.kind, "files": {p.name: p.stat().st_size for p in source.files()}},
        "config": {
            k: v
            for k, v in asdict(config).items()
            if k not in ("temp_dir", "threads", "memory_limit") and not (k == "tokenizer" and v is None)
        },
        "spec": json.loads(spec.model_dump_json()),
        "cohort": {
            "admissions": len(cohort),
            "positives": int(cohort["OUTPUT_LABEL"].sum()),
            "prevalence": round(float(cohort["OUTPUT_LABEL"].mean()), 4),
        },
        "balanced": config.balanced,
        "split": {k: len(v) for k, v in split.labels().items()} | {"notes": split.notes},
        "counts": counts,
        "files": {name: file_sha256(folder / name) for name in outputs},
    }
    manifest["manifest_hash"] = hashlib.sha256(json.dumps(manifest, sort_keys=True).encode()).hexdigest()
    (folder / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    return manifest
