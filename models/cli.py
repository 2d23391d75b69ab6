"""Commands of the `models` package, mounted on the `notestream` CLI by notestream.cli.

``notestream score`` scores MIMIC-format notes per admission offline; ``notestream model import-legacy``
converts the original ClinicalBERT release into a model folder; ``notestream model optimize --int8`` writes
a copy served with dynamic int8 linear layers on CPU.
"""

from __future__ import annotations

import json
from pathlib import Path

import typer

model_app = typer.Typer(
    name="model", help="Model folders: import-legacy, optimize, card, info.", no_args_is_help=True
)


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
    window: str = typer.Option(
        "all",
        "--window",
        help="Which notes the model scores: all | discharge (the discharge-summary release) | days:N | "
        "hours:N (days:3 for the early-notes release, scored in calendar days as it was trained).",
    ),
) -> None:
    """Convert the original ClinicalBERT release into a model folder with the reference defaults."""
    from notestream.models.legacy import import_legacy
    from notestream.models.spec import ModelSpec, parse_window

    spec = ModelSpec(window=parse_window(window))
    out = import_legacy(src, dst, vocab=vocab, new_head=new_head, spec=spec)
    typer.echo(json.dumps({"model_dir": str(out)}))


@model_app.command("card")
def card_command(
    model_dir: Path = typer.Argument(..., help="A model folder."),
    report: Path = typer.Option(None, "--report", help="`train evaluate --out` folder (its report.json)."),
    out: Path = typer.Option(
        None, "--out", help="Markdown file to write (default: MODEL_DIR/MODEL_CARD.md)."
    ),
) -> None:
    """Write a Markdown model card from notestream.json and the evaluation report."""
    from notestream.core.errors import ConfigError
    from notestream.models.card import model_card
    from notestream.models.checkpoint import check_model_folder
    from notestream.models.fingerprint import model_fingerprint
    from notestream.models.spec import ModelSpec

    folder = check_model_folder(model_dir)
    data = None
    if report is not None:
        path = report / "report.json" if report.is_dir() else report
        if not path.is_file():
            raise ConfigError(f"No report.json at {path}: pass the folder `train evaluate --out` wrote.")
        data = json.loads(path.read_text(encoding="utf-8"))
    target = out if out is not None else folder / "MODEL_CARD.md"
    target.write_text(
        model_card(ModelSpec.read(folder), data, fingerprint=model_fingerprint(folder)), encoding="utf-8"
    )
    typer.echo(json.dumps({"card": str(target)}))


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
