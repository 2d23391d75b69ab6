"""Facts told in one place: the training commands' defaults are the run configurations' defaults."""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Callable
from typing import Any

import pytest

from notestream.training.cli_train import distill_cmd, finetune_cmd, pretrain_cmd
from notestream.training.run_config import DistillConfig, FinetuneConfig, PretrainConfig


@pytest.mark.parametrize(
    ("command", "config"),
    [(finetune_cmd, FinetuneConfig), (pretrain_cmd, PretrainConfig), (distill_cmd, DistillConfig)],
)
def test_command_defaults_are_the_configs(command: Callable[..., Any], config: type) -> None:
    fields = {f.name: f.default for f in dataclasses.fields(config)}
    options = {name: p.default.default for name, p in inspect.signature(command).parameters.items()}
    shared = fields.keys() & options.keys()
    assert len(shared) >= 8
    assert {name: options[name] for name in shared} == {name: fields[name] for name in shared}
