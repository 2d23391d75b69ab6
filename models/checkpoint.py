"""Model folders: load and save Hugging Face BERT-family classifiers with their ``notestream.json``.

A model folder is an ordinary Hugging Face sequence-classification folder (``config.json``, weights as
``model.safetensors`` or a legacy ``pytorch_model.bin``, tokenizer files) plus ``notestream.json``
(:class:`notestream.models.spec.ModelSpec`). Weights are never unpickled: safetensors, or
``torch.load(weights_only=True)`` for ``.bin`` files. The original ClinicalBERT release converts into
this format with :func:`notestream.models.legacy.import_legacy`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from notestream.models.errors import CheckpointError
from notestream.models.quantize import quantize_for_device
from notestream.models.spec import ModelSpec

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

log = logging.getLogger(__name__)

WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin")
TOKENIZER_FILES = ("tokenizer.json", "vocab.txt")
SUPPORTED_LABELS = (1, 2)


@dataclass(frozen=True)
class LoadedModel:
    """A model ready for inference, its tokenizer, its description and where it came from."""

    model: PreTrainedModel
    tokenizer: PreTrainedTokenizerBase
    spec: ModelSpec
    path: Path

    @property
    def num_labels(self) -> int:
        return int(self.model.config.num_labels or 1)

    @property
    def max_length(self) -> int:
        """Longest input (with [CLS]/[SEP]): the spec's, capped by the model's position embeddings."""
        positions = int(getattr(self.model.config, "max_position_embeddings", self.spec.max_length))
        return min(self.spec.max_length, positions)


def check_model_folder(path: str | Path) -> Path:
    """Raise :class:`CheckpointError` naming what is missing unless ``path`` looks like a model folder.

    >>> check_model_folder("/nonexistent/model")
    Traceback (most recent call last):
    ...
    notestream.models.errors.CheckpointError: Model folder /nonexistent/model does not exist; pass the folder that holds config.json and the weights.
    """
    folder = Path(path)
    if not folder.is_dir():
        raise CheckpointError(
            f"Model folder {folder} does not exist; pass the folder that holds config.json and the weights."
        )
    if not (folder / "config.json").is_file() and (folder / "bert_config.json").is_file():
        raise CheckpointError(
            f"{folder} is an original ClinicalBERT release (bert_config.json), not a Hugging Face folder; "
            f"convert it first with `notestream model import-legacy {folder} NEW_FOLDER`."
        )
    missing = []
    if not (folder / "config.json").is_file():
        missing.append("config.json")
    if not any((folder / name).is_file() for name in WEIGHT_FILES):
        missing.append("weights (" + " or ".join(WEIGHT_FILES) + ")")
    if not any((folder / name).is_file() for name in TOKENIZER_FILES):
        missing.append("a tokenizer (" + " or ".join(TOKENIZER_FILES) + ")")
    if missing:
        raise CheckpointError(
            f"{folder} is not a model checkpoint: it lacks {', '.join(missing)}. "
            "Pass a folder written by `notestream train finetune`, `save_model_folder` or "
            "`notestream model import-legacy`."
        )
    return folder


def load_model_folder(
    path: str | Path,
    device: str = "cpu",
    *,
    attn_implementation: str = "sdpa",
    quantize: bool = True,
) -> LoadedModel:
    """Load a local BERT-family sequence-classification folder for inference (eval mode, float32).

    ``attn_implementation``: ``"sdpa"`` (fast, for serving) or ``"eager"`` (returns attention weights,
    for explanations). ``quantize``: serve a folder flagged ``int8-dynamic`` quantized (the default); False
    gives its float weights (explanations need gradients, which int8 layers do not pass). Nothing is
    downloaded (``local_files_only``).
    """
    import torch
    from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer

    folder = check_model_folder(path)
    spec = ModelSpec.read(folder)
    try:
        config = AutoConfig.from_pretrained(folder, local_files_only=True)
    except (OSError, ValueError, KeyError) as exc:
        raise CheckpointError(f"{folder}/config.json cannot be read as a model configuration: {exc}") from exc
    num_labels = int(config.num_labels)
    if num_labels not in SUPPORTED_LABELS:
        raise CheckpointError(
            f"{folder} has a {num_labels}-label head; notestream serves binary risk models with one "
            "logit (sigmoid) or two (softmax, positive class 1)."
        )
    try:
        model = AutoModelForSequenceClassification.from_pretrained(
            folder,
            local_files_only=True,
            dtype=torch.float32,
            attn_implementation=attn_implementation,
        )
        tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
    except Exception as exc:  # OSError, ValueError, SafetensorError, RuntimeError, ...
        raise CheckpointError(f"{folder} could not be loaded as a sequence classifier: {exc}") from exc
    model.eval()
    if quantize:
        model = quantize_for_device(model, spec.quantization, device)
    try:
        model.to(device)
    except (RuntimeError, AssertionError) as exc:
        raise CheckpointError(f"Cannot move the model to device {device!r}: {exc}") from exc
    return LoadedModel(model=model, tokenizer=tokenizer, spec=spec, path=folder)


def save_model_folder(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    spec: ModelSpec,
    path: str | Path,
) -> Path:
    """Write ``model`` (safetensors), ``tokenizer`` and ``spec`` into ``path``; returns the folder."""
    folder = Path(path)
    folder.mkdir(parents=True, exist_ok=True)
    try:
        model.save_pretrained(folder)
        tokenizer.save_pretrained(folder)
    except (OSError, RuntimeError, ValueError) as exc:
        raise CheckpointError(f"Could not write the model folder {folder}: {exc}") from exc
    spec.write(folder)
    return folder
