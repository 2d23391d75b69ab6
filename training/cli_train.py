"""The model-training commands of `notestream train` (pretrain, finetune, evaluate, baseline)."""

from __future__ import annotations

import typer


def add_training_commands(app: typer.Typer) -> None:
    """Attach pretrain, finetune, evaluate and baseline to ``app``."""
