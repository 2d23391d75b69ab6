"""Commands of the `training` package, mounted on the `notestream` CLI by notestream.cli.

``notestream synth`` writes synthetic MIMIC files; ``notestream train prepare | pretrain | finetune |
evaluate | baseline`` reproduce and extend the ClinicalBERT readmission pipeline.
"""

from __future__ import annotations

import json
from enum import StrEnum
from pathlib import Path

import typer

train_app = typer.Typer(
    name="train",
    help="Prepare MIMIC task datasets, pre-train, fine-tune and evaluate ClinicalBERT models.",
    no_args_is_help=True,
)


class SynthFormat(StrEnum):
    mimic_iii = "mimic-iii"
    mimic_iv = "mimic-iv"


def synth(
    out: Path = typer.Option(..., "--out", help="Folder to write the synthetic MIMIC files into."),
    fmt: SynthFormat = typer.Option(SynthFormat.mimic_iii, "--format", help="File format to write."),
    patients: int = typer.Option(500, "--patients", min=1, help="Number of synthetic patients."),
    seed: int = typer.Option(0, "--seed", help="Random seed: the same seed writes the same files."),
    signal: float = typer.Option(
        1.0, "--signal", min=0.0, help="Strength of the planted readmission signal (0 = none)."
    ),
    readmit_rate: float = typer.Option(
        0.25, "--readmit-rate", min=0.0, max=1.0, help="Share of next admissions within 30 days."
    ),
    notes_scale: float = typer.Option(1.0, "--notes-scale", min=0.0, help="Multiplies notes per day."),
    words_scale: float = typer.Option(1.0, "--words-scale", min=0.01, help="Multiplies note lengths."),
    mean_admissions: float = typer.Option(
        1.35, "--mean-admissions", min=1.0, help="Mean admissions per patient (MIMIC-III: about 1.27)."
    ),
    gz: bool = typer.Option(False, "--gzip", help="Write MIMIC-III tables as .csv.gz."),
) -> None:
    """Write a synthetic cohort in the exact MIMIC-III or MIMIC-IV(-Note) file formats."""
    from notestream.training.synth import write_mimic_iii, write_mimic_iv

    if fmt is SynthFormat.mimic_iii:
        summary = write_mimic_iii(
            out,
            patients,
            seed,
            signal,
            readmit_rate=readmit_rate,
            notes_scale=notes_scale,
            words_scale=words_scale,
            compress=gz,
            mean_admissions=mean_admissions,
            progress=True,
        )
    else:
        summary = write_mimic_iv(
            out,
            patients,
            seed,
            signal,
            readmit_rate=readmit_rate,
            notes_scale=notes_scale,
            words_scale=words_scale,
            mean_admissions=mean_admissions,
            progress=True,
        )
    typer.echo(
        json.dumps(
            {
                "files": {k: str(v) for k, v in summary.files.items()},
                "patients": summary.patients,
                "admissions": summary.admissions,
                "notes": summary.notes,
                "cohort_positives": summary.cohort_positives,
            }
        )
    )


def register(app: typer.Typer) -> None:
    """Add this package's commands to the top-level app."""
    from notestream.training import commands

    app.command("synth")(synth)
    commands.add_commands(train_app)
    app.add_typer(train_app, name="train")
