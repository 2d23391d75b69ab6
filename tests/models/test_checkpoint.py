"""Loading and saving model folders."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from notestream.core.errors import ConfigError
from notestream.models.build import build_small_bert, clinical_corpus
from notestream.models.checkpoint import load_model_folder, save_model_folder
from notestream.models.errors import CheckpointError
from notestream.models.spec import ModelSpec, Window


def test_round_trip_keeps_weights_tokenizer_and_spec(tiny_model_dir: Path, tmp_path: Path) -> None:
    loaded = load_model_folder(tiny_model_dir)
    spec = ModelSpec(
        task="mortality", cleaning="clinical", window=Window(kind="hours", value=48), threshold=0.3
    )
    out = save_model_folder(loaded.model, loaded.tokenizer, spec, tmp_path / "copy")
    again = load_model_folder(out)
    assert again.spec == spec
    assert again.tokenizer.get_vocab() == loaded.tokenizer.get_vocab()
    a, b = loaded.model.state_dict(), again.model.state_dict()
    assert a.keys() == b.keys()
    assert all((a[k] == b[k]).all() for k in a)
    assert not again.model.training
    assert again.max_length == 512


def test_missing_folder_and_empty_folder_name_what_is_missing(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="does not exist"):
        load_model_folder(tmp_path / "nowhere")
    with pytest.raises(CheckpointError, match=r"config\.json.*weights.*tokenizer"):
        load_model_folder(tmp_path)


@pytest.mark.parametrize("remove", ["model.safetensors", "tokenizer.json"])
def test_folder_missing_one_part_names_it(tiny_model_dir: Path, tmp_path: Path, remove: str) -> None:
    folder = Path(shutil.copytree(tiny_model_dir, tmp_path / "m"))
    (folder / remove).unlink()
    (folder / "vocab.txt").unlink(missing_ok=True)
    with pytest.raises(CheckpointError, match="weights" if remove.startswith("model") else "tokenizer"):
        load_model_folder(folder)


def test_legacy_release_is_pointed_at_import_legacy(tmp_path: Path) -> None:
    (tmp_path / "bert_config.json").write_text("{}")
    (tmp_path / "pytorch_model.bin").write_bytes(b"")
    with pytest.raises(CheckpointError, match="import-legacy"):
        load_model_folder(tmp_path)


def test_three_label_heads_are_refused(tmp_path: Path) -> None:
    folder = build_small_bert(
        tmp_path / "m", clinical_corpus(20), vocab_size=200, hidden=16, layers=1, heads=1, num_labels=3
    )
    with pytest.raises(CheckpointError, match="3-label"):
        load_model_folder(folder)


def test_invalid_notestream_json_is_a_config_error(tiny_model_dir: Path, tmp_path: Path) -> None:
    folder = Path(shutil.copytree(tiny_model_dir, tmp_path / "m"))
    (folder / "notestream.json").write_text(json.dumps({"cleaning": "whatever"}))
    with pytest.raises(ConfigError, match="notestream model description"):
        load_model_folder(folder)


def test_corrupt_weights_are_a_checkpoint_error(tiny_model_dir: Path, tmp_path: Path) -> None:
    folder = Path(shutil.copytree(tiny_model_dir, tmp_path / "m"))
    (folder / "model.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(CheckpointError, match="could not be loaded"):
        load_model_folder(folder)
