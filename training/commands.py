"""The `notestream train ...` commands (prepare, pretrain, finetune, evaluate, baseline)."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from notestream.training.cli_train import add_training_commands


def prepare_cmd(
    out: Path = typer.Option(
        ..., "--out", help="Folder for cohort.csv, chunks.csv, train/val/test.csv, manifest."
    ),
    mimic_iii: Path | None = typer.Option(None, "--mimic-iii", help="Folder with ADMISSIONS and NOTEEVENTS."),
    mimic_iv: Path | None = typer.Option(None, "--mimic-iv", help="MIMIC-IV folder (hosp/, note/)."),
    task: str = typer.Option("readmission", "--task", help="readmission | mortality | prolonged-stay."),
    notes: str = typer.Option("discharge", "--notes", help="discharge | early-2d | early-3d."),
    mode: str = typer.Option(
        "huang2019", "--mode", help="huang2019 (reference, calendar days) | hours (event time, per note)."
    ),
    hours: float | None = typer.Option(
        None, "--hours", help="Window of the hours mode (default: days x 24)."
    ),
    split: str = typer.Option("reference", "--split", help="reference (docs/reference.md §5) | patient."),
    balance: bool | None = typer.Option(
        None,
        "--balance/--no-balance",
        help="Balance val and test as the reference protocol does (default: only with --mode huang2019); "
        "else they keep the cohort's prevalence, with val_balanced.csv / test_balanced.csv beside them.",
    ),
    seed: int = typer.Option(1, "--seed", help="Seed of the patient split."),
    los_days: float = typer.Option(
        7.0,
        "--los-days",
        min=0,
        help="prolonged-stay: positive when the stay is longer (ClinicalNoteBERT: 3).",
    ),
    cleaning: str = typer.Option("huang2019", "--cleaning", help="huang2019 | clinical."),
    chunk_words: int = typer.Option(318, "--chunk-words", min=11, help="Words per chunk (reference: 318)."),
    chunking: str = typer.Option(
        "words", "--chunking", help="words (the reference) | tokens (WordPiece windows; needs --tokenizer)."
    ),
    tokenizer: Path | None = typer.Option(
        None, "--tokenizer", help="--chunking tokens: the folder of the model to fine-tune (its tokenizer)."
    ),
    max_length: int = typer.Option(
        512, "--max-length", min=8, help="--chunking tokens: tokens per window + 2."
    ),
    stride: int = typer.Option(
        384, "--stride", min=1, help="--chunking tokens: tokens between window starts."
    ),
    memory_limit: str = typer.Option("2GB", "--memory-limit", help="DuckDB memory limit; it spills beyond."),
    temp_dir: Path | None = typer.Option(None, "--temp-dir", help="Spill folder (default: inside --out)."),
) -> None:
    """Build a task dataset (cohort, chunks, split files, manifest) from MIMIC files."""
    from notestream.training.errors import CohortError
    from notestream.training.mimic import Source
    from notestream.training.prepare import PrepareConfig, prepare

    choices = {
        "task": (task, ("readmission", "mortality", "prolonged-stay")),
        "notes": (notes, ("discharge", "early-2d", "early-3d")),
        "mode": (mode, ("huang2019", "hours")),
        "split": (split, ("reference", "patient")),
        "chunking": (chunking, ("words", "tokens")),
        "cleaning": (cleaning, ("huang2019", "clinical")),
    }
    for name, (value, allowed) in choices.items():
        if value not in allowed:
            raise CohortError(f"--{name} must be one of {', '.join(allowed)}, not {value!r}.")
    config = PrepareConfig(
        task=task.replace("-", "_"),  # type: ignore[arg-type]
        notes=notes,  # type: ignore[arg-type]
        mode=mode,  # type: ignore[arg-type]
        hours=hours,
        split=split,  # type: ignore[arg-type]
        balance=balance,
        seed=seed,
        los_days=los_days,
        cleaning=cleaning,  # type: ignore[arg-type]
        chunk_words=chunk_words,
        chunking=chunking,  # type: ignore[arg-type]
        tokenizer=str(tokenizer) if tokenizer else None,
        max_length=max_length,
        stride=stride,
        memory_limit=memory_limit,
        temp_dir=str(temp_dir) if temp_dir else None,
    )
    result = prepare(Source.open(mimic_iii=mimic_iii, mimic_iv=mimic_iv), out, config)
    typer.echo(
        json.dumps(
            {
                "out": str(result.out),
                "manifest_hash": result.manifest["manifest_hash"],
                "counts": result.manifest["counts"],
            }
        )
    )


def add_commands(app: typer.Typer) -> None:
    """Attach the train sub-commands to ``app``."""
    app.command("prepare")(prepare_cmd)
    add_training_commands(app)
