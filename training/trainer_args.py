"""The Hugging Face ``TrainingArguments`` that pre-training, fine-tuning and distillation share.

Each run's config (:mod:`notestream.training.run_config`) gives epochs, steps, batch size, learning
rate, warm-up, weight decay, seed and whether to show progress; the run adds what is its own
(checkpointing, logging, gradient accumulation). bf16 follows the device unless the run says: on a
CUDA device that supports it, else off; CPU runs use the CPU.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol


class RunConfig(Protocol):
    """What the arguments need of a run's (frozen) config."""

    @property
    def epochs(self) -> float: ...
    @property
    def max_steps(self) -> int | None: ...
    @property
    def batch_size(self) -> int: ...
    @property
    def lr(self) -> float: ...
    @property
    def warmup(self) -> float: ...
    @property
    def weight_decay(self) -> float: ...
    @property
    def seed(self) -> int: ...
    @property
    def progress(self) -> bool: ...


def trainer_arguments(cfg: RunConfig, output_dir: Path, *, bf16: bool | None = None, **extra: Any) -> Any:
    """``TrainingArguments`` for ``cfg`` writing checkpoints under ``output_dir``, plus ``extra``."""
    import torch
    from transformers import TrainingArguments

    cuda = torch.cuda.is_available()
    return TrainingArguments(
        output_dir=str(output_dir),
        num_train_epochs=cfg.epochs,
        max_steps=cfg.max_steps or -1,
        per_device_train_batch_size=cfg.batch_size,
        learning_rate=cfg.lr,
        warmup_steps=cfg.warmup,
        weight_decay=cfg.weight_decay,
        lr_scheduler_type="linear",
        bf16=bf16 if bf16 is not None else bool(cuda and torch.cuda.is_bf16_supported()),
        use_cpu=not cuda,
        seed=cfg.seed,
        report_to="none",
        remove_unused_columns=False,
        disable_tqdm=not cfg.progress,
        dataloader_num_workers=0,
        **extra,
    )
