"""The hyper-parameters of the training runs: one place for their defaults, read by the functions and
by the `notestream train` options alike."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class FinetuneConfig:
    """Hyper-parameters; the defaults are the paper's (lr 2e-5, 10% warm-up, weight decay 0.01, batch 32,
    3 epochs, 512 tokens)."""

    epochs: float = 3.0
    batch_size: int = 32
    lr: float = 2e-5
    warmup: float = 0.1
    weight_decay: float = 0.01
    grad_accum: int = 1
    max_steps: int | None = None
    max_length: int = 512
    seed: int = 42
    bf16: bool | None = None
    save_steps: int | None = None
    save_total_limit: int = 2
    resume: bool = False
    logging_steps: int = 50
    eval_batch_size: int = 64
    progress: bool = True


@dataclass(frozen=True)
class PretrainConfig:
    """Pre-training settings. The paper: lr 2e-5 from BERT-base, length 128 then 512, batch 64 / 16."""

    max_length: int = 128
    batch_size: int = 32
    lr: float = 1e-4
    epochs: float = 1.0
    max_steps: int | None = None
    warmup: float = 0.1
    weight_decay: float = 0.01
    dupe_factor: int = 1  # the reference: 3
    buffer_docs: int = 1000  # notes in memory while pairing; the random NSP B is one of them
    shard_examples: int = 1_000_000  # examples per shard file
    seed: int = 1
    vocab_size: int = 8000
    hidden: int = 128
    layers: int = 2
    heads: int = 2
    save_steps: int | None = None
    progress: bool = True


@dataclass(frozen=True)
class DistillConfig:
    """The student's shape and the distillation's hyper-parameters."""

    size: str = "small"
    layers: int | None = None
    hidden: int | None = None
    heads: int | None = None
    intermediate: int | None = None
    init_from_teacher: bool = True
    """Copy the teacher's embeddings, pooler, head and evenly spaced layers (same width only)."""
    alpha: float = 0.5
    """Weight of the label loss; ``1 - alpha`` weighs the teacher's soft targets."""
    temperature: float = 2.0
    epochs: float = 3.0
    batch_size: int = 32
    lr: float = 1e-4
    warmup: float = 0.1
    weight_decay: float = 0.01
    max_steps: int | None = None
    seed: int = 42
    eval_batch_size: int = 64
    progress: bool = True
