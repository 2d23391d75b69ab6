"""Commands of the `models` package, mounted on the `notestream` CLI by notestream.cli.

``notestream score`` scores MIMIC-format notes per admission offline; ``notestream model import-legacy``
converts the original ClinicalBERT release into a model folder; ``notestream model optimize --int8`` writes
a copy served with dynamic int8 linear layers on CPU.
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


@model_app.command("optimize")
def optimize_command(
    src: Path = typer.Argument(..., help="A model folder (float, safetensors)."),
    dst: Path = typer.Argument(..., help="The optimized model folder to write (new or empty)."),
    int8: bool = typer.Option(
        False, "--int8", help="Serve with dynamic int8 linear layers on CPU (the float weights are kept)."
    ),
) -> None:
    """Write a copy of a model folder that serves faster on CPU; the worker, `score` and `explain` serve it
    unchanged. Its fingerprint differs from the source's, so a store bound to one refuses the other."""
    from notestream.models.fingerprint import model_fingerprint
    from notestream.models.optimize import optimize_folder

    out = optimize_folder(src, dst, int8=int8)
    typer.echo(
        json.dumps(
            {"model_dir": str(out), "quantization": "int8-dynamic", "fingerprint": model_fingerprint(out)}
        )
    )


@model_app.command("info")
def info_command(model_dir: Path = typer.Argument(..., help="A model folder.")) -> None:
    """Print a model folder's notestream.json after checking that the folder is a checkpoint."""
    from notestream.models.checkpoint import check_model_folder
    from notestream.models.spec import ModelSpec

    typer.echo(ModelSpec.read(check_model_folder(model_dir)).model_dump_json(indent=2))


def register(app: typer.Typer) -> None:
    """Add this package's commands to the top-level app."""
    app.add_typer(model_app, name="model")
