"""The commands that join the layers: ``demo`` (training, the stream and the models in one run) and
``score`` (MIMIC files through the models' offline scorer)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import typer


def demo(
    out: Path = typer.Option(Path("notestream-demo"), help="Folder for the model, data and summary."),
    broker: str = typer.Option(
        None,
        help="kafka://... to use a real Kafka instead of the embedded one (its topics must exist, or "
        "auto-creation be on: `notestream topics`).",
    ),
    store: str = typer.Option(None, help="redis://... to use Redis instead of the in-memory store."),
    patients: int = typer.Option(600, help="Synthetic patients in the cohort."),
    steps: int = typer.Option(None, help="Fine-tuning steps of the small model (default 400, batch 32)."),
    speed: float = typer.Option(0.0, help="Replay speed factor (0: no event-time pacing)."),
    rate: float = typer.Option(
        None, help="At most this many replayed events per second (default 20; 0: as fast as possible)."
    ),
    live: bool = typer.Option(True, help="Show the live table of risk updates and alerts."),
) -> None:
    """Synthesize a cohort, train a small model, stream it through a worker, and summarize."""
    from dataclasses import replace

    from notestream.cli.demo import DemoConfig, run_demo

    cfg = DemoConfig(out=out, broker=broker, store=store, patients=patients, speed=speed, live=live)
    # options left unset keep the defaults of DemoConfig
    if steps is not None:
        cfg = replace(cfg, steps=steps)
    if rate is not None:
        cfg = replace(cfg, rate=rate)
    run_demo(cfg)


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
    import asyncio

    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from notestream.core.settings import load_settings
    from notestream.mimic.notes import read_admit_times, read_notes
    from notestream.models.engine import InferenceEngine
    from notestream.models.scoring import NoteRecord, ScoreRun, score_notes, write_failures, write_scores
    from notestream.models.spec import ModelSpec, serving_warning

    if (warning := serving_warning(ModelSpec.read(model))) is not None:
        typer.echo(f"warning: {warning}", err=True)
    settings = load_settings(config, devices=devices.split(",") if devices else None)
    admit_times = read_admit_times(admissions) if admissions is not None else None

    def all_notes() -> Iterator[NoteRecord]:
        for path in notes:
            yield from read_notes(path)

    async def run() -> ScoreRun:
        with Progress(
            TextColumn("[bold]scoring"),
            BarColumn(),
            TextColumn("{task.fields[notes]} notes, {task.fields[chunks]} chunks"),
            TimeElapsedColumn(),
            transient=False,
        ) as bar:
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
    """Add these commands to the top-level app."""
    app.command("demo")(demo)
    app.command("score")(score)
