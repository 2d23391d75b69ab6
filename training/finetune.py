"""Fine-tune a BERT chunk classifier on prepared chunk files (docs/reference.md §6) with the HF Trainer.

The model is BERT -> pooled [CLS] -> dropout -> Linear(hidden, 1); the loss is binary cross-entropy on
that one logit, computed here (``BertForSequenceClassification`` with ``num_labels=1`` would compute
MSE). The Hugging Face ``Trainer`` supplies the rest: linear warm-up then decay, AdamW with weight decay
on every weight but biases and LayerNorm, gradient accumulation, bf16 autocast on GPUs that have it,
checkpoints every ``save_steps`` and resume, and several GPUs when launched with ``torchrun`` or
``accelerate launch`` (DistributedDataParallel).

The output folder is what the streaming worker serves unchanged: safetensors weights, the tokenizer,
and ``notestream.json`` with the cleaning, chunking, window and task of the dataset (from the
``manifest.json`` that ``prepare`` wrote beside the chunk files), ``max_length``, ``c``, provenance
(base model, data manifest hash, hyper-parameters) and, after validation, the metrics and the decision
threshold at the RP80 point.

Python API (used by ``notestream demo``)::

    from notestream.training.finetune import finetune
    from notestream.training.run_config import FinetuneConfig
    model_dir = finetune("data/train.csv", "data/val.csv", "base_bert/", "model/",
                         config=FinetuneConfig(epochs=1, batch_size=16, max_length=128))
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import asdict
from pathlib import Path
from typing import Any

import pandas as pd

from notestream.models.spec import ModelSpec
from notestream.training.chunk_files import read_chunks
from notestream.training.errors import TrainRunError
from notestream.training.run_config import FinetuneConfig
from notestream.training.trainer_args import trainer_arguments

log = logging.getLogger(__name__)


def dataset_spec(train_csv: str | Path) -> tuple[ModelSpec, str | None]:
    """The model description and data hash from the ``manifest.json`` beside ``train_csv`` (if any)."""
    manifest = Path(train_csv).parent / "manifest.json"
    if not manifest.is_file():
        return ModelSpec(), None
    data = json.loads(manifest.read_text(encoding="utf-8"))
    return ModelSpec.model_validate(data.get("spec", {})), data.get("manifest_hash")


class _ChunkDataset:
    """Rows of a chunk file as {"text", "labels"} items (tokenized in the collator)."""

    def __init__(self, frame: pd.DataFrame) -> None:
        self.texts = frame["TEXT"].astype(str).tolist()
        self.labels = frame["Label"].astype(float).tolist()

    def __len__(self) -> int:
        return len(self.texts)

    def __getitem__(self, i: int) -> dict[str, Any]:
        return {"text": self.texts[i], "labels": self.labels[i]}


class _Collator:
    """Tokenize a batch: [CLS] chunk [SEP], truncated to ``max_length`` keeping the head, padded."""

    def __init__(self, tokenizer: Any, max_length: int) -> None:
        self.tokenizer = tokenizer
        self.max_length = max_length

    def __call__(self, items: list[dict[str, Any]]) -> dict[str, Any]:
        import torch

        enc = self.tokenizer(
            [item["text"] for item in items],
            truncation=True,
            max_length=self.max_length,
            padding=True,
            return_tensors="pt",
        )
        enc["labels"] = torch.tensor([item["labels"] for item in items], dtype=torch.float32)
        return dict(enc)


def _trainer_class() -> Any:
    from transformers import Trainer

    class BCETrainer(Trainer):
        """HF Trainer with the reference loss: BCE with logits on the single output logit."""

        def compute_loss(
            self,
            model: Any,
            inputs: dict[str, Any],
            return_outputs: bool = False,
            num_items_in_batch: Any = None,
        ) -> Any:
            import torch

            labels = inputs.pop("labels")
            outputs = model(**inputs)
            logits = outputs.logits[:, 0].float()  # (B,)
            loss = torch.nn.functional.binary_cross_entropy_with_logits(logits, labels.float())
            return (loss, outputs) if return_outputs else loss

    return BCETrainer


def load_base(base_model_dir: str | Path, max_length: int) -> tuple[Any, Any]:
    """A one-logit sequence classifier and its tokenizer from a local folder: a classifier, a
    pre-training checkpoint (the head is then new) or a plain BERT encoder."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    folder = Path(base_model_dir)
    if not (folder / "config.json").is_file():
        raise TrainRunError(
            f"{folder} is not a Hugging Face model folder (no config.json). Pass a folder from "
            "`notestream train pretrain`, `notestream model import-legacy` or a local BERT download."
        )
    try:
        tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
        model = AutoModelForSequenceClassification.from_pretrained(
            folder, num_labels=1, local_files_only=True, ignore_mismatched_sizes=True
        )
    except (OSError, ValueError, RuntimeError) as exc:
        raise TrainRunError(f"Cannot load the base model in {folder}: {exc}") from exc
    positions = int(getattr(model.config, "max_position_embeddings", max_length))
    if max_length > positions:
        raise TrainRunError(
            f"max_length {max_length} exceeds the {positions} positions of the base model; pass --max-length {positions}."
        )
    tokenizer.model_max_length = max_length
    return model, tokenizer


def finetune(
    train_csv: str | Path,
    val_csv: str | Path | None,
    base_model_dir: str | Path,
    out_dir: str | Path,
    spec: ModelSpec | None = None,
    *,
    config: FinetuneConfig | None = None,
) -> Path:
    """Train a chunk classifier on ``train_csv`` and write a servable model folder into ``out_dir``.

    ``spec`` defaults to the one in the dataset's ``manifest.json`` (cleaning, chunking, window, task).
    With ``val_csv`` the model is then scored on it: admission-level metrics go into ``notestream.json``
    and the threshold at the RP80 point becomes the decision threshold. Checkpoints go to
    ``out_dir/checkpoints``; ``config.resume`` continues from the latest one there.
    """
    from transformers.utils import logging as hf_logging

    cfg = config or FinetuneConfig()
    out = Path(out_dir)
    data_spec, data_hash = dataset_spec(train_csv)
    spec = spec or data_spec
    if spec.chunking.kind == "tokens" and cfg.max_length != spec.max_length:
        raise TrainRunError(
            f"The dataset's chunks are windows of {spec.max_length} tokens (prepare --max-length); fine-tune "
            f"with --max-length {spec.max_length}, not {cfg.max_length}, so the model is served as trained."
        )
    train = read_chunks(train_csv)
    if train.empty or train["Label"].nunique() < 2:
        raise TrainRunError(f"{train_csv} needs chunks of both labels to train a classifier.")
    model, tokenizer = load_base(base_model_dir, cfg.max_length)
    checkpoints = out / "checkpoints"
    args = trainer_arguments(
        cfg,
        checkpoints,
        bf16=cfg.bf16,
        gradient_accumulation_steps=cfg.grad_accum,
        save_strategy="steps" if cfg.save_steps else "no",
        save_steps=cfg.save_steps or 500,
        save_total_limit=cfg.save_total_limit,
        logging_steps=cfg.logging_steps,
    )
    hf_logging.set_verbosity_error()
    trainer = _trainer_class()(
        model=model,
        args=args,
        train_dataset=_ChunkDataset(train),  # type: ignore[arg-type]
        data_collator=_Collator(tokenizer, cfg.max_length),
    )
    resume = cfg.resume and any(checkpoints.glob("checkpoint-*"))
    try:
        result = trainer.train(resume_from_checkpoint=True if resume else None)
    except (RuntimeError, ValueError) as exc:
        raise TrainRunError(f"Fine-tuning failed: {exc}") from exc
    if not trainer.is_world_process_zero():
        return out
    provenance = {
        **spec.provenance,
        "base_model": str(base_model_dir),
        "data_manifest_hash": data_hash,
        "train_file": str(train_csv),
        "finetune": {k: v for k, v in asdict(cfg).items() if k != "progress"},
        "train_loss": float(result.training_loss) if math.isfinite(result.training_loss) else None,
        "steps": int(result.global_step),
    }
    spec = spec.model_copy(update={"max_length": cfg.max_length, "provenance": provenance})
    from notestream.models.checkpoint import save_model_folder

    trainer.model.eval()  # type: ignore[union-attr]
    save_model_folder(trainer.model.to("cpu"), tokenizer, spec, out)  # type: ignore[union-attr]
    if checkpoints.is_dir() and not any(checkpoints.iterdir()):
        checkpoints.rmdir()
    if val_csv is not None:
        from notestream.training.evaluate import calibrate

        calibrate(out, val_csv, batch_size=cfg.eval_batch_size)
    return out


def fresh_base(
    train_csv: str | Path,
    out_dir: str | Path,
    *,
    vocab_size: int = 4000,
    hidden: int = 128,
    layers: int = 2,
    heads: int = 2,
    max_length: int = 128,
    max_texts: int = 20_000,
    seed: int = 0,
) -> Path:
    """A randomly initialised small BERT whose WordPiece vocabulary is trained on the training chunks
    (for runs without a pre-trained model: tests, the demo, quick experiments)."""
    from notestream.models.build import build_small_bert

    texts = read_chunks(train_csv)["TEXT"].tolist()[:max_texts]
    return build_small_bert(
        out_dir,
        texts,
        vocab_size=vocab_size,
        hidden=hidden,
        layers=layers,
        heads=heads,
        max_length=max_length,
        seed=seed,
    )
