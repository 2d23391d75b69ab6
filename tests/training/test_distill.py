"""notestream.training.distill: the loss, a student initialised from its teacher, and a folder that serves unchanged."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import torch
from typer.testing import CliRunner

from notestream.cli import _mount, app
from notestream.models.build import build_small_bert
from notestream.models.checkpoint import load_model_folder
from notestream.models.classifier import ChunkClassifier
from notestream.models.fingerprint import model_fingerprint
from notestream.models.spec import ModelSpec, Window
from notestream.training.distill import build_student, distill, distill_loss, student_shape
from notestream.training.errors import TrainRunError
from notestream.training.finetune import finetune
from notestream.training.run_config import DistillConfig, FinetuneConfig

WORDS = ["readmitted", "alone", "missed", "dialysis", "stable", "family", "support", "home"]


@pytest.fixture(scope="module")
def teacher(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("distill")
    rows = []
    for i in range(64):
        label = i % 2
        words = WORDS[:4] if label else WORDS[4:]
        rows.append((1000 + i // 2, " ".join(words[(i + k) % 4] for k in range(12)), label))
    pd.DataFrame(rows, columns=["ID", "TEXT", "Label"]).to_csv(folder / "train.csv", index=False)
    build_small_bert(
        folder / "base", [r[1] for r in rows], vocab_size=200, hidden=32, layers=4, heads=2, max_length=32
    )
    spec = ModelSpec(
        task="readmission", cleaning="clinical", window=Window(kind="hours", value=48), max_length=32
    )
    cfg = FinetuneConfig(max_steps=30, batch_size=16, lr=3e-3, max_length=32, progress=False)
    return finetune(folder / "train.csv", None, folder / "base", folder / "teacher", spec, config=cfg)


def test_the_loss_mixes_labels_and_soft_targets() -> None:
    s, y, t = torch.tensor([0.3, -1.2]), torch.tensor([1.0, 0.0]), torch.tensor([2.0, -0.5])
    bce = torch.nn.functional.binary_cross_entropy
    hard = bce(torch.sigmoid(s), y)
    soft = bce(torch.sigmoid(s / 2), torch.sigmoid(t / 2))
    got = distill_loss(s, y, t, alpha=0.25, temperature=2.0)
    assert got.item() == pytest.approx((0.25 * hard + 0.75 * 4 * soft).item(), rel=1e-5)
    assert distill_loss(s, y, t, alpha=1.0, temperature=2.0).item() == pytest.approx(hard.item(), rel=1e-5)


def test_a_small_student_starts_from_evenly_spaced_teacher_layers(teacher: Path) -> None:
    model = load_model_folder(teacher).model
    student = build_student(model, DistillConfig(size="small", layers=2))
    assert student.config.num_hidden_layers == 2
    t, s = model.state_dict(), student.state_dict()
    assert torch.equal(
        s["bert.embeddings.word_embeddings.weight"], t["bert.embeddings.word_embeddings.weight"]
    )
    for mine, theirs in ((0, 0), (1, 2)):
        key = "bert.encoder.layer.{}.attention.self.query.weight"
        assert torch.equal(s[key.format(mine)], t[key.format(theirs)])
    assert torch.equal(s["classifier.weight"], t["classifier.weight"])
    fresh = build_student(model, DistillConfig(size="small", layers=2, init_from_teacher=False))
    assert not torch.equal(fresh.state_dict()["classifier.weight"], t["classifier.weight"])


def test_student_shapes_and_bad_sizes() -> None:
    from types import SimpleNamespace

    teacher = SimpleNamespace(
        num_hidden_layers=4, hidden_size=32, num_attention_heads=2, intermediate_size=64
    )
    assert student_shape(teacher, DistillConfig(size="tiny", hidden=24, heads=2)) == {
        "layers": 4,
        "hidden": 24,
        "heads": 2,
        "intermediate": 92,  # the tiny preset's ratio (1,200 / 312), not its 1,200
    }
    assert (
        student_shape(teacher, DistillConfig(size="small", hidden=16))["intermediate"] == 32
    )  # the teacher's
    with pytest.raises(TrainRunError, match="Unknown student size"):
        student_shape(teacher, DistillConfig(size="huge"))
    with pytest.raises(TrainRunError, match="attention heads"):
        student_shape(teacher, DistillConfig(size="tiny", hidden=30, heads=4))


def test_the_student_folder_serves_like_its_teacher(teacher: Path, tmp_path: Path) -> None:
    _mount()
    out = tmp_path / "student"
    data = teacher.parent / "train.csv"
    result = CliRunner().invoke(
        app,
        [
            "train",
            "distill",
            "--teacher",
            str(teacher),
            "--out",
            str(out),
            "--train",
            str(data),
            "--size",
            "small",
            "--layers",
            "2",
            "--max-steps",
            "30",
            "--batch-size",
            "16",
            "--lr",
            "3e-3",
        ],
    )
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout.strip().splitlines()[-1])["model"] == str(out)
    spec, teacher_spec = ModelSpec.read(out), ModelSpec.read(teacher)
    for field in ("task", "cleaning", "chunking", "window", "max_length", "c"):
        assert getattr(spec, field) == getattr(teacher_spec, field)
    assert spec.provenance["distilled_from"] == model_fingerprint(teacher)
    assert spec.provenance["student"]["layers"] == 2
    assert model_fingerprint(out) != model_fingerprint(teacher)
    loaded = load_model_folder(out)
    assert loaded.model.config.num_hidden_layers == 2
    frame = pd.read_csv(data)
    probs = ChunkClassifier(loaded, "cpu").predict(frame["TEXT"].tolist())
    positives, negatives = probs[frame["Label"] == 1], probs[frame["Label"] == 0]
    assert positives.min() > negatives.max()  # it learnt the task from its teacher and the labels


def test_a_quantized_teacher_is_refused(teacher: Path, tmp_path: Path) -> None:
    from notestream.models.optimize import optimize_folder

    int8 = optimize_folder(teacher, tmp_path / "int8")
    with pytest.raises(TrainRunError, match="quantized"):
        distill(teacher.parent / "train.csv", None, int8, tmp_path / "student")


def test_a_student_larger_than_its_teacher_is_refused(teacher: Path, tmp_path: Path) -> None:
    """The tiny preset (4 x 312) is for a BERT-base teacher; against this 4 x 32 one it would be ~10x
    larger, so distill says so (before the teacher runs) and writes nothing."""
    out = tmp_path / "student"
    with pytest.raises(TrainRunError, match="larger than its teacher"):
        distill(teacher.parent / "train.csv", None, teacher, out, config=DistillConfig(size="tiny"))
    assert not out.exists()
