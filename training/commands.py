"""The `notestream train ...` commands (prepare, pretrain, finetune, evaluate, baseline)."""

from __future__ import annotations

import typer


def add_commands(app: typer.Typer) -> None:
    """Attach the train sub-commands to ``app``."""
