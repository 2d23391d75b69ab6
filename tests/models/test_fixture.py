"""The shared tiny model fixture is a real, loadable Hugging Face folder."""

from __future__ import annotations

from pathlib import Path

from transformers import AutoModelForSequenceClassification

from notestream.models.spec import ModelSpec


def test_tiny_model_dir_is_a_plain_hugging_face_folder(tiny_model_dir: Path) -> None:
    model = AutoModelForSequenceClassification.from_pretrained(tiny_model_dir, local_files_only=True)
    assert model.config.num_labels == 1
    assert model.config.max_position_embeddings == 512
    assert (tiny_model_dir / "model.safetensors").is_file()
    assert ModelSpec.read(tiny_model_dir) == ModelSpec.model_validate_json(
        (tiny_model_dir / "notestream.json").read_text()
    )
