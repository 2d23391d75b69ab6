"""Pre-train a BERT on clinical notes: masked LM + next-sentence prediction (docs/reference.md §10).

1. A corpus file: one sentence per line, a blank line between notes. Notes are cleaned as the
   reference pre-training text (the ``huang2019`` cleaning, then every digit deleted and whitespace
   collapsed) and split with :func:`notestream.models.text.sentences` (spaCy sentencizer, segments under 20
   characters appended to the previous one). The notes of evaluation admissions must stay out of it
   (leakage was a real bug in the reference): :func:`corpus_from_dataset` drops every admission of the
   dataset's ``val.csv`` and ``test.csv``; :func:`corpus_from_mimic` drops the admissions you name.
2. Examples as BERT's pre-training data (:mod:`notestream.training.pretrain_data`): the corpus is streamed,
   sentences packed into two segments up to ``max_length``; half the time segment B is a random segment
   of another note of a bounded buffer of notes (NSP label 1); the examples are written to on-disk
   shards (``out_dir/shards``) and read back lazily, so memory does not grow with the corpus. 15% of
   the tokens are selected for MLM at batch time (80% [MASK], 10% a random token, 10% unchanged).
3. ``BertForPreTraining`` from a local BERT folder, or from a fresh small config with a WordPiece
   vocabulary trained on the corpus (:func:`small_bert_config`, ``notestream.models.build.train_wordpiece``),
   trained with the Hugging Face ``Trainer``. The output folder fine-tunes with
   :func:`notestream.training.finetune.finetune`.

>>> pretraining_text("Admission Date: [**2150-1-1**]\\nBP 120/80,   HR 88.")
'bp /, hr'
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Any

import pandas as pd

from notestream.models.text import clean, sentences
from notestream.training.errors import TrainRunError
from notestream.training.pretrain_data import (
    CorpusSentences,
    ShardDataset,
    build_shards,
    iter_documents,
    nsp_examples,
    read_corpus,
)
from notestream.training.run_config import PretrainConfig
from notestream.training.trainer_args import trainer_arguments

__all__ = [
    "PretrainConfig",
    "ShardDataset",
    "build_shards",
    "corpus_from_dataset",
    "corpus_from_mimic",
    "iter_documents",
    "nsp_examples",
    "pretrain",
    "pretraining_text",
    "read_corpus",
    "small_bert_config",
    "write_corpus",
]

_DIGITS = re.compile(r"\d")
_SPACES = re.compile(r"\s+")


def pretraining_text(text: Any) -> str:
    """The reference pre-training cleaning: ``huang2019`` cleaning, no digits, single spaces."""
    return _SPACES.sub(" ", _DIGITS.sub("", clean(text, "huang2019"))).strip()


def write_corpus(notes: Iterable[Any], path: str | Path) -> int:
    """Write notes as one sentence per line with a blank line between notes; returns notes written."""
    count = 0
    with Path(path).open("w", encoding="utf-8") as fh:
        for note in notes:
            lines = [s for s in sentences(pretraining_text(note)) if s.strip()]
            if len(lines) < 2:
                continue
            fh.write("\n".join(lines) + "\n\n")
            count += 1
    return count


def corpus_from_dataset(data_dir: str | Path, path: str | Path) -> int:
    """A corpus of the training admissions of a prepared dataset: ``chunks.csv`` texts grouped by
    admission, without any admission of ``val.csv`` or ``test.csv``."""
    folder = Path(data_dir)
    held_out: set[int] = set()
    for name in ("val.csv", "test.csv"):
        if (folder / name).is_file():
            held_out |= set(pd.read_csv(folder / name, usecols=["ID"])["ID"].astype(int))
    chunks = pd.read_csv(folder / "chunks.csv", dtype={"TEXT": str}, keep_default_na=False)
    kept = chunks[~chunks["ID"].isin(held_out)]
    return write_corpus((" ".join(g["TEXT"]) for _, g in kept.groupby("ID", sort=False)), path)


def corpus_from_mimic(
    source: Any, path: str | Path, *, exclude_hadm: set[int], max_notes: int | None = None
) -> int:
    """A corpus of MIMIC notes streamed from ``source`` (:class:`notestream.training.mimic.Source`), leaving out
    the notes of the ``exclude_hadm`` admissions (pass the evaluation admissions)."""
    from notestream.mimic.tables import connect, iter_batches

    con = connect()

    def notes() -> Iterator[str]:
        seen = 0
        for note_path in source.notes:
            sql = (
                f"SELECT HADM_ID, TEXT FROM ({source.note_sql(note_path, text=True)}) WHERE TEXT IS NOT NULL"
            )
            for frame in iter_batches(con, sql):
                for hadm, text in zip(frame["HADM_ID"].tolist(), frame["TEXT"].tolist(), strict=True):
                    if hadm is not None and not pd.isna(hadm) and int(hadm) in exclude_hadm:
                        continue
                    yield text
                    seen += 1
                    if max_notes is not None and seen >= max_notes:
                        return

    try:
        return write_corpus(notes(), path)
    finally:
        con.close()


def small_bert_config(
    vocab_size: int, *, hidden: int = 128, layers: int = 2, heads: int = 2, max_length: int = 128
) -> Any:
    """A small BERT configuration (ClinicalNoteBERT's small sizes keep most of the performance)."""
    from transformers import BertConfig

    return BertConfig(
        vocab_size=vocab_size,
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        intermediate_size=4 * hidden,
        max_position_embeddings=max_length,
    )


class _PretrainCollator:
    """Pads [CLS] A [SEP] B [SEP] pairs and applies BERT's 15% masking (80/10/10)."""

    def __init__(self, tokenizer: Any, mlm_probability: float = 0.15) -> None:
        self.tok = tokenizer
        self.p = mlm_probability

    def __call__(self, items: list[tuple[list[int], list[int], int]]) -> dict[str, Any]:
        import torch

        cls, sep, pad, mask = (
            self.tok.cls_token_id,
            self.tok.sep_token_id,
            self.tok.pad_token_id,
            self.tok.mask_token_id,
        )
        rows = [[cls, *a, sep, *b, sep] for a, b, _ in items]
        longest = max(len(r) for r in rows)
        ids = torch.full((len(rows), longest), pad, dtype=torch.long)  # (B, T)
        types = torch.zeros_like(ids)
        attention = torch.zeros_like(ids)
        for i, ((a, _, _), row) in enumerate(zip(items, rows, strict=True)):
            ids[i, : len(row)] = torch.tensor(row)
            types[i, len(a) + 2 : len(row)] = 1
            attention[i, : len(row)] = 1
        special = (ids == cls) | (ids == sep) | (ids == pad)
        chosen = (torch.rand(ids.shape) < self.p) & ~special
        labels = torch.where(chosen, ids, torch.full_like(ids, -100))
        roll = torch.rand(ids.shape)
        masked = ids.masked_fill(chosen & (roll < 0.8), mask)
        randomised = chosen & (roll >= 0.8) & (roll < 0.9)
        masked[randomised] = torch.randint(len(self.tok), (int(randomised.sum()),))
        return {
            "input_ids": masked,
            "token_type_ids": types,
            "attention_mask": attention,
            "labels": labels,
            "next_sentence_label": torch.tensor([nsp for _, _, nsp in items], dtype=torch.long),
        }


def pretrain(
    corpus: str | Path,
    out_dir: str | Path,
    base_model_dir: str | Path | None = None,
    *,
    config: PretrainConfig | None = None,
) -> Path:
    """MLM + NSP on ``corpus`` from ``base_model_dir`` (or a fresh small BERT); writes ``out_dir``."""
    import torch
    from transformers import AutoTokenizer, BertForPreTraining, BertTokenizer, Trainer
    from transformers.utils import logging as hf_logging

    cfg = config or PretrainConfig()
    if next(iter_documents(corpus), None) is None:
        raise TrainRunError(
            f"The corpus {corpus} has no notes; write one with write_corpus or corpus_from_*."
        )
    out = Path(out_dir)
    if base_model_dir is not None:
        try:
            tokenizer = AutoTokenizer.from_pretrained(base_model_dir, local_files_only=True)
            model = BertForPreTraining.from_pretrained(base_model_dir, local_files_only=True)
        except (OSError, ValueError) as exc:
            raise TrainRunError(f"Cannot load the BERT in {base_model_dir}: {exc}") from exc
    else:
        from notestream.models.build import train_wordpiece

        vocab = train_wordpiece(CorpusSentences(corpus), vocab_size=cfg.vocab_size)
        tokenizer = BertTokenizer(vocab=vocab, do_lower_case=True)
        torch.manual_seed(cfg.seed)
        model = BertForPreTraining(
            small_bert_config(
                len(vocab), hidden=cfg.hidden, layers=cfg.layers, heads=cfg.heads, max_length=cfg.max_length
            )
        )
    tokenizer.model_max_length = cfg.max_length
    manifest = build_shards(
        corpus,
        tokenizer,
        out / "shards",
        max_length=cfg.max_length,
        dupe=cfg.dupe_factor,
        seed=cfg.seed,
        buffer_docs=cfg.buffer_docs,
        shard_examples=cfg.shard_examples,
        progress=cfg.progress,
    )
    examples = ShardDataset(out / "shards")
    if not len(examples):
        raise TrainRunError(
            f"The corpus {corpus} gives no pre-training example; it needs notes of two sentences."
        )
    args = trainer_arguments(
        cfg,
        out / "checkpoints",
        save_strategy="steps" if cfg.save_steps else "no",
        save_steps=cfg.save_steps or 500,
        logging_steps=50,
    )
    hf_logging.set_verbosity_error()
    trainer = Trainer(
        model=model, args=args, train_dataset=examples, data_collator=_PretrainCollator(tokenizer)
    )  # type: ignore[arg-type]
    try:
        result = trainer.train()
    except (RuntimeError, ValueError) as exc:
        raise TrainRunError(f"Pre-training failed: {exc}") from exc
    if trainer.is_world_process_zero():
        model.to("cpu")  # type: ignore[arg-type]
        model.save_pretrained(out)
        tokenizer.save_pretrained(out)
        (out / "pretrain.json").write_text(
            json.dumps(
                {
                    "config": {k: v for k, v in asdict(cfg).items() if k != "progress"},
                    "examples": len(examples),
                    "documents": manifest["documents"],
                    "train_loss": result.training_loss,
                    "steps": result.global_step,
                    "base_model": str(base_model_dir) if base_model_dir else None,
                },
                indent=2,
            )
            + "\n",
            encoding="utf-8",
        )
    return out
