"""Importing the original ClinicalBERT release format, written here from a small real BERT."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForSequenceClassification, BertForSequenceClassification

from notestream.models.checkpoint import load_model_folder
from notestream.models.classifier import ChunkClassifier
from notestream.models.errors import CheckpointError
from notestream.models.legacy import CONFIG_KEYS, import_legacy
from notestream.models.spec import ModelSpec

PROBE = [
    "patient was given lasix 40 mg iv overnight and tolerated it",
    "chf exacerbation, discharged to rehab",
    "x",
]


def write_legacy(
    model: BertForSequenceClassification,
    vocab: list[str] | None,
    out: Path,
    *,
    module_prefix: bool = False,
    pretraining_heads: bool = False,
    classifier: bool = True,
) -> Path:
    """Write ``model`` the way the 2019 release stores it: bert_config.json + pytorch_model.bin."""
    out.mkdir(parents=True)
    config = model.config.to_dict()
    (out / "bert_config.json").write_text(json.dumps({k: config[k] for k in CONFIG_KEYS}))
    state = {}
    for key, tensor in model.state_dict().items():
        if key.endswith("position_ids") or (not classifier and key.startswith("classifier.")):
            continue
        if "LayerNorm" in key:
            key = key.replace("LayerNorm.weight", "LayerNorm.gamma").replace(
                "LayerNorm.bias", "LayerNorm.beta"
            )
        state[("module." if module_prefix else "") + key] = tensor.clone()
    if pretraining_heads:
        hidden, vocab_size = model.config.hidden_size, model.config.vocab_size
        state["cls.predictions.bias"] = torch.zeros(vocab_size)
        state["cls.predictions.transform.dense.weight"] = torch.zeros(hidden, hidden)
        state["cls.predictions.transform.LayerNorm.gamma"] = torch.ones(hidden)
        state["cls.seq_relationship.weight"] = torch.zeros(2, hidden)
    torch.save(state, out / "pytorch_model.bin")
    if vocab is not None:
        (out / "vocab.txt").write_text("\n".join(vocab) + "\n", encoding="utf-8")
    return out


@pytest.fixture(scope="module")
def original(tiny_model_dir: Path) -> tuple[BertForSequenceClassification, list[str]]:
    loaded = load_model_folder(tiny_model_dir)
    vocab = [tok for tok, _ in sorted(loaded.tokenizer.get_vocab().items(), key=lambda kv: kv[1])]
    assert isinstance(loaded.model, BertForSequenceClassification)
    return loaded.model, vocab


def logits(model: torch.nn.Module, tokenizer_dir: Path) -> torch.Tensor:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tokenizer_dir)
    batch = tok(PROBE, padding=True, return_tensors="pt")
    with torch.inference_mode():
        return model(**batch).logits


@pytest.mark.parametrize("module_prefix", [False, True])
def test_imported_folder_reproduces_the_original_logits(
    original: tuple[BertForSequenceClassification, list[str]],
    tiny_model_dir: Path,
    tmp_path: Path,
    module_prefix: bool,
) -> None:
    model, vocab = original
    src = write_legacy(
        model, vocab, tmp_path / "release", module_prefix=module_prefix, pretraining_heads=True
    )
    dst = import_legacy(src, tmp_path / "imported")
    plain = AutoModelForSequenceClassification.from_pretrained(dst, local_files_only=True).eval()
    assert plain.config.model_type == "bert"
    expected = logits(model, tiny_model_dir)
    got = logits(plain, dst)
    assert got.shape == expected.shape == (len(PROBE), 1)
    assert torch.allclose(got, expected, atol=1e-5, rtol=0)
    spec = ModelSpec.read(dst)
    assert (spec.cleaning, spec.chunking.size, spec.c, spec.max_length) == ("huang2019", 318, 2.0, 512)
    assert spec.provenance["format"] == "clinicalbert-legacy"
    assert spec.provenance["dropped_pretraining_tensors"] == 4
    # and notestream's own loader scores it like the original
    ours = ChunkClassifier(load_model_folder(dst)).predict(PROBE)
    assert ours == pytest.approx(torch.sigmoid(expected[:, 0]).numpy(), abs=1e-5)


def test_release_without_vocab_needs_one_named_explicitly(
    original: tuple[BertForSequenceClassification, list[str]], tmp_path: Path
) -> None:
    model, vocab = original
    src = write_legacy(model, None, tmp_path / "release")
    with pytest.raises(CheckpointError, match="--vocab"):
        import_legacy(src, tmp_path / "out")
    vocab_file = tmp_path / "bert-uncased-vocab.txt"
    vocab_file.write_text("\n".join(vocab) + "\n", encoding="utf-8")
    dst = import_legacy(src, tmp_path / "out", vocab=vocab_file)
    assert (dst / "tokenizer.json").is_file() or (dst / "vocab.txt").is_file()
    assert load_model_folder(dst).tokenizer.get_vocab() == {t: i for i, t in enumerate(vocab)}


def test_pretraining_checkpoint_without_classifier_is_refused_unless_asked(
    original: tuple[BertForSequenceClassification, list[str]],
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    model, vocab = original
    src = write_legacy(model, vocab, tmp_path / "release", classifier=False, pretraining_heads=True)
    with pytest.raises(CheckpointError, match="no classifier"):
        import_legacy(src, tmp_path / "out")
    with caplog.at_level(logging.WARNING, logger="notestream.models.legacy"):
        dst = import_legacy(src, tmp_path / "out", new_head=True)
    assert "UNTRAINED" in caplog.text
    assert ModelSpec.read(dst).provenance["new_head"] is True


class NotATensor:
    pass


@pytest.mark.parametrize("what", ["missing", "pickle", "mismatch"])
def test_broken_releases_get_clear_errors(
    original: tuple[BertForSequenceClassification, list[str]], tmp_path: Path, what: str
) -> None:
    model, vocab = original
    src = write_legacy(model, vocab, tmp_path / "release")
    if what == "missing":
        (src / "pytorch_model.bin").unlink()
        match = "lacks pytorch_model.bin"
    elif what == "pickle":
        torch.save({"x": NotATensor()}, src / "pytorch_model.bin")
        match = "never unpickles"
    else:
        config = json.loads((src / "bert_config.json").read_text())
        config["num_hidden_layers"] += 1
        (src / "bert_config.json").write_text(json.dumps(config))
        match = "missing"
    with pytest.raises(CheckpointError, match=match):
        import_legacy(src, tmp_path / "out")


def test_import_legacy_command_sets_the_window(
    original: tuple[BertForSequenceClassification, list[str]], tmp_path: Path
) -> None:
    from typer.testing import CliRunner

    from notestream.models.cli import model_app

    model, vocab = original
    src = write_legacy(model, vocab, tmp_path / "release")
    result = CliRunner().invoke(
        model_app, ["import-legacy", str(src), str(tmp_path / "early"), "--window", "days:3"]
    )
    assert result.exit_code == 0, result.output
    spec = ModelSpec.read(tmp_path / "early")
    assert (spec.window.kind, spec.window.value, spec.max_length) == ("days", 3.0, 512)
    assert spec.provenance["format"] == "clinicalbert-legacy"
    bad = CliRunner().invoke(model_app, ["import-legacy", str(src), str(tmp_path / "x"), "--window", "weeks"])
    assert bad.exit_code != 0
