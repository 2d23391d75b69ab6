"""Commands of the `models` package, mounted on the `notestream` CLI by notestream.cli.

``notestream score`` scores MIMIC-format notes per admission offline; ``notestream model import-legacy``
converts the original ClinicalBERT release into a model folder.
"""

from __future__ import annotations

import json
from pathlib import Path

import typer

model_app = typer.Typer(name="model", help="Model folders: import-legacy, info.", no_args_is_help=True)


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


def register(app: typer.Typer) -> None:
    """Add this package's commands to the top-level app."""
    app.add_typer(model_app, name="model")
