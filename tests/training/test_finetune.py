"""notestream.training.finetune: the BCE loss on one logit, checkpoints and resume, the model folder it writes."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import torch

from notestream.models.build import build_small_bert
from notestream.models.checkpoint import load_model_folder
from notestream.models.spec import ModelSpec, Window
from notestream.training.chunk_files import read_chunks
from notestream.training.errors import TrainRunError
from notestream.training.finetune import _trainer_class, finetune
from notestream.training.run_config import FinetuneConfig

WORDS = ["readmitted", "alone", "missed", "dialysis", "stable", "family", "support", "home"]


@pytest.fixture(scope="module")
def chunks(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("ft")
    rows = []
    for i in range(48):
        label = i % 2
        words = WORDS[:4] if label else WORDS[4:]
        rows.append((1000 + i // 2, " ".join(words[(i + k) % 4] for k in range(12)), label))
    pd.DataFrame(rows, columns=["ID", "TEXT", "Label"]).to_csv(folder / "train.csv", index=False)
    build_small_bert(
        folder / "base", [r[1] for r in rows], vocab_size=200, hidden=32, layers=1, heads=2, max_length=32
    )
    return folder


def test_loss_is_bce_on_the_single_logit(chunks: Path) -> None:
    model = load_model_folder(chunks / "base").model
    model.train(False)
    trainer = _trainer_class().__new__(_trainer_class())  # compute_loss needs no Trainer state
    ids = torch.tensor([[2, 10, 11, 3], [2, 12, 3, 0]])
    inputs = {"input_ids": ids, "attention_mask": (ids != 0).long(), "labels": torch.tensor([1.0, 0.0])}
    with torch.no_grad():
        logits = model(input_ids=ids, attention_mask=(ids != 0).long()).logits[:, 0]
    expected = torch.nn.functional.binary_cross_entropy(torch.sigmoid(logits), torch.tensor([1.0, 0.0]))
    with torch.no_grad():
        loss = trainer.compute_loss(model, dict(inputs))
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)


def test_checkpoints_resume_and_model_folder(chunks: Path, tmp_path: Path) -> None:
    spec = ModelSpec(task="readmission", window=Window(kind="hours", value=48))
    cfg = FinetuneConfig(max_steps=4, batch_size=8, lr=1e-3, max_length=32, save_steps=2, progress=False)
    out = finetune(chunks / "train.csv", None, chunks / "base", tmp_path / "m", spec, config=cfg)
    assert sorted(p.name for p in (out / "checkpoints").glob("checkpoint-*")) == [
        "checkpoint-2",
        "checkpoint-4",
    ]
    resumed = finetune(
        chunks / "train.csv",
        None,
        chunks / "base",
        tmp_path / "m",
        spec,
        config=FinetuneConfig(
            max_steps=6, batch_size=8, lr=1e-3, max_length=32, save_steps=2, resume=True, progress=False
        ),
    )
    written = ModelSpec.read(resumed)
    assert written.provenance["steps"] == 6
    assert written.window == Window(kind="hours", value=48)
    assert written.max_length == 32
    loaded = load_model_folder(resumed)
    assert loaded.num_labels == 1
    assert (resumed / "model.safetensors").is_file()


def test_bad_inputs_are_clear_errors(chunks: Path, tmp_path: Path) -> None:
    with pytest.raises(TrainRunError, match="does not exist"):
        read_chunks(tmp_path / "missing.csv")
    (tmp_path / "bad.csv").write_text("ID,TEXT\n1,x\n")
    with pytest.raises(TrainRunError, match="Label"):
        read_chunks(tmp_path / "bad.csv")
    one = tmp_path / "one.csv"
    pd.DataFrame({"ID": [1], "TEXT": ["a b"], "Label": [0]}).to_csv(one, index=False)
    with pytest.raises(TrainRunError, match="both labels"):
        finetune(
            one, None, chunks / "base", tmp_path / "x", config=FinetuneConfig(max_steps=1, progress=False)
        )
    with pytest.raises(TrainRunError, match="positions"):
        finetune(
            chunks / "train.csv",
            None,
            chunks / "base",
            tmp_path / "y",
            config=FinetuneConfig(max_length=64, progress=False),
        )
