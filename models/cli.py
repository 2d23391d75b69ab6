"""Commands of the `models` package, mounted on the `notestream` CLI by notestream.cli.

``notestream score`` scores MIMIC-format notes per admission offline; ``notestream model import-legacy``
converts the original ClinicalBERT release into a model folder.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path

import typer

model_app = typer.Typer(name="model", help="Model folders: import, inspect.", no_args_is_help=True)


@model_app.command("import-legacy")
def import_legacy_command(
    src: Path = typer.Argument(..., help="Folder with bert_config.json and pytorch_model.bin."),
    dst: Path = typer.Argument(..., help="Model folder to write (Hugging Face format + notestream.json)."),
    vocab: Path = typer.Option(
        None, "--vocab", help="vocab.txt to use when SRC has none (the BERT-base uncased vocabulary)."
    ),
    new_head: bool = typer.Option(
        False, "--new-head", help="Accept a checkpoint without classifier weights (an UNTRAINED head)."
    ),
) -> None:
    """Convert the original ClinicalBERT release into a model folder with the reference defaults."""
    from notestream.models.legacy import import_legacy

    out = import_legacy(src, dst, vocab=vocab, new_head=new_head)
    typer.echo(json.dumps({"model_dir": str(out)}))


@model_app.command("info")
def info_command(model_dir: Path = typer.Argument(..., help="A model folder.")) -> None:
    """Print a model folder's notestream.json after checking that the folder is a checkpoint."""
    from notestream.models.checkpoint import check_model_folder
    from notestream.models.spec import ModelSpec

    typer.echo(ModelSpec.read(check_model_folder(model_dir)).model_dump_json(indent=2))


def score(
    model: Path = typer.Option(..., "--model", help="Model folder to score with."),
    notes: list[Path] = typer.Option(
        ...,
        "--notes",
        help="NOTEEVENTS.csv[.gz] (MIMIC-III) or discharge / radiology.csv[.gz] (MIMIC-IV-Note).",
    ),
    admissions: Path = typer.Option(
        None, "--admissions", help="ADMISSIONS.csv[.gz]; needed for models with a days or hours window."
    ),
    out: Path = typer.Option(..., "--out", help="Scores CSV to write (one row per admission)."),
    devices: str = typer.Option(
        None, "--devices", help="Comma-separated devices, e.g. cuda:0,cuda:1 or cpu."
    ),
    config: Path = typer.Option(None, "--config", help="Settings TOML file (else $NOTESTREAM_CONFIG)."),
) -> None:
    """Score MIMIC-format notes per admission through the inference engine (the stream, offline)."""
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from notestream.core.settings import load_settings
    from notestream.models.engine import InferenceEngine
    from notestream.models.scoring import (
        NoteRecord,
        ScoreRun,
        read_admit_times,
        read_notes,
        score_notes,
        write_failures,
        write_scores,
    )

    settings = load_settings(config, devices=devices.split(",") if devices else None)
    admit_times = read_admit_times(admissions) if admissions is not None else None

    def all_notes() -> Iterator[NoteRecord]:
        for path in notes:
            yield from read_notes(path)

    async def run() -> ScoreRun:
        with Progress(
            TextColumn("[bold]scoring"), BarColumn(), TextColumn("{task.fields[notes]} notes, "
            "{task.fields[chunks]} chunks"), TimeElapsedColumn(), transient=False,
        ) as bar:  # fmt: skip
            task = bar.add_task("score", total=None, notes=0, chunks=0)
            counts = {"notes": 0, "chunks": 0}

            def on_note(n_chunks: int) -> None:
                counts["notes"] += 1
                counts["chunks"] += n_chunks
                bar.update(task, notes=counts["notes"], chunks=counts["chunks"])

            async with InferenceEngine.from_settings(settings, model) as engine:
                return await score_notes(engine, all_notes(), admit_times=admit_times, on_note=on_note)

    result = asyncio.run(run())
    write_scores(result.scores, out)
    report: dict[str, object] = {
        "out": str(out),
        "admissions": len(result.scores),
        "notes_read": result.notes_read,
        "notes_scored": result.notes_scored,
        "chunks": result.chunks,
        "skipped": result.skipped,
        "admissions_failed": len(result.failed),
    }
    if result.failed:
        failures = write_failures(result.failed, out.with_name(out.stem + ".failed.csv"))
        report["failed_out"] = str(failures)
        typer.echo(
            f"{len(result.failed)} admissions have no score: the inference of some of their notes failed "
            f"twice; see {failures}.",
            err=True,
        )
    typer.echo(json.dumps(report))


def register(app: typer.Typer) -> None:
    """Add this package's commands to the top-level app."""
    app.command("score")(score)
    app.add_typer(model_app, name="model")
