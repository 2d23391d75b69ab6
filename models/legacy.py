"""Import the original ClinicalBERT release into a model folder (docs/reference.md §9).

The release is a folder with ``bert_config.json`` (no ``model_type``; LayerNorm epsilon 1e-12),
``pytorch_model.bin`` (a plain state dict, possibly saved under DataParallel with a ``module.`` prefix,
LayerNorm parameters named ``gamma`` / ``beta``) and, in some releases, ``vocab.txt``. Without a
``vocab.txt`` the release relies on the BERT-base uncased vocabulary, which cannot be downloaded here:
pass its path with ``vocab=``.

The state dict is read with ``torch.load(weights_only=True)``: tensors only, nothing unpickled.
Pre-training heads (``cls.predictions.*``, ``cls.seq_relationship.*``) are dropped with a note. A
checkpoint without ``classifier.*`` weights is refused unless ``new_head=True``, which adds a freshly
initialised head (its scores mean nothing until fine-tuned) and says so.

>>> legacy_key("module.bert.embeddings.LayerNorm.gamma")
'bert.embeddings.LayerNorm.weight'
>>> legacy_key("bert.encoder.layer.0.output.LayerNorm.beta")
'bert.encoder.layer.0.output.LayerNorm.bias'
>>> legacy_key("classifier.weight")
'classifier.weight'
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Any

from notestream.models.errors import CheckpointError
from notestream.models.spec import ModelSpec

log = logging.getLogger(__name__)

CONFIG_FILE = "bert_config.json"
WEIGHTS_FILE = "pytorch_model.bin"
VOCAB_FILE = "vocab.txt"
PRETRAINING_PREFIXES = ("cls.predictions.", "cls.seq_relationship.")
CONFIG_KEYS = (
    "attention_probs_dropout_prob",
    "hidden_act",
    "hidden_dropout_prob",
    "hidden_size",
    "initializer_range",
    "intermediate_size",
    "max_position_embeddings",
    "num_attention_heads",
    "num_hidden_layers",
    "type_vocab_size",
    "vocab_size",
)
IGNORED_KEYS = ("bert.embeddings.position_ids",)


def legacy_key(name: str) -> str:
    """Hugging Face name of a legacy state-dict key: no ``module.`` prefix, gamma/beta -> weight/bias."""
    name = name.removeprefix("module.")
    if name.endswith(".gamma"):
        name = name[: -len("gamma")] + "weight"
    elif name.endswith(".beta"):
        name = name[: -len("beta")] + "bias"
    return name


def read_legacy_config(path: Path) -> dict[str, Any]:
    """The keys of ``bert_config.json`` a BertConfig needs (missing ones -> CheckpointError)."""
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{path} cannot be read as a BERT configuration: {exc}") from exc
    missing = [key for key in CONFIG_KEYS if key not in raw]
    if missing:
        raise CheckpointError(f"{path} lacks {', '.join(missing)}; is this a BERT configuration?")
    return {key: raw[key] for key in CONFIG_KEYS}


def read_legacy_state(path: Path) -> dict[str, Any]:
    """The renamed tensors of a legacy ``pytorch_model.bin`` (tensors only: weights_only=True)."""
    import torch

    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises UnpicklingError, RuntimeError, EOFError, ...
        raise CheckpointError(
            f"{path} is not a plain PyTorch state dict of tensors ({type(exc).__name__}: {exc}); "
            "notestream never unpickles arbitrary objects."
        ) from exc
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"{path} does not hold a state dict of tensors.")
    renamed: dict[str, Any] = {}
    for key, tensor in state.items():
        new = legacy_key(str(key))
        if new in renamed:
            raise CheckpointError(f"{path} holds two tensors that both map to {new}.")
        renamed[new] = tensor
    return renamed


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def import_legacy(
    src: str | Path,
    dst: str | Path,
    *,
    vocab: str | Path | None = None,
    new_head: bool = False,
    spec: ModelSpec | None = None,
) -> Path:
    """Convert an original ClinicalBERT release folder ``src`` into the model folder ``dst``.

    ``vocab``: a ``vocab.txt`` to use when ``src`` has none. ``spec``: the notestream.json to write
    (default: the reference defaults, with provenance). Returns ``dst``.
    """
    import torch
    from transformers import BertConfig, BertForSequenceClassification, BertTokenizer

    from notestream.models.checkpoint import save_model_folder

    folder = Path(src)
    if not folder.is_dir():
        raise CheckpointError(f"Legacy checkpoint folder {folder} does not exist.")
    missing = [name for name in (CONFIG_FILE, WEIGHTS_FILE) if not (folder / name).is_file()]
    if missing:
        raise CheckpointError(
            f"{folder} is not an original ClinicalBERT release: it lacks {' and '.join(missing)}."
        )
    vocab_path = folder / VOCAB_FILE if (folder / VOCAB_FILE).is_file() else None
    if vocab_path is None:
        if vocab is None:
            raise CheckpointError(
                f"{folder} has no vocab.txt, so it relies on the BERT-base uncased vocabulary, which cannot "
                "be downloaded here; pass that vocab.txt with --vocab PATH."
            )
        vocab_path = Path(vocab)
        if not vocab_path.is_file():
            raise CheckpointError(f"Vocabulary file {vocab_path} does not exist.")

    keys = read_legacy_config(folder / CONFIG_FILE)
    state = read_legacy_state(folder / WEIGHTS_FILE)
    dropped = [k for k in state if k.startswith(PRETRAINING_PREFIXES)]
    for key in dropped:
        del state[key]
    if dropped:
        log.info(
            "Dropped %d pre-training head tensors (cls.predictions / cls.seq_relationship).", len(dropped)
        )
    for key in IGNORED_KEYS:
        state.pop(key, None)

    head = state.get("classifier.weight")
    if head is None and not new_head:
        raise CheckpointError(
            f"{folder} has no classifier weights (a pre-training checkpoint?). Fine-tune it with "
            "`notestream train finetune`, or pass --new-head to import it with an untrained head."
        )
    num_labels = int(head.shape[0]) if head is not None else 1
    if num_labels not in (1, 2):
        raise CheckpointError(f"{folder} has a {num_labels}-label classifier; expected 1 or 2 labels.")
    config = BertConfig(**keys, layer_norm_eps=1e-12, num_labels=num_labels)  # type: ignore[call-arg]
    torch.manual_seed(0)
    model = BertForSequenceClassification(config)
    try:
        result = model.load_state_dict(state, strict=False)
    except RuntimeError as exc:
        raise CheckpointError(f"The weights in {folder} do not fit its bert_config.json: {exc}") from exc
    missing_keys = [k for k in result.missing_keys if not (new_head and k.startswith("classifier."))]
    if missing_keys or result.unexpected_keys:
        raise CheckpointError(
            f"{folder} does not match a BERT sequence classifier: missing {missing_keys or 'none'}, "
            f"unexpected {result.unexpected_keys or 'none'}."
        )
    if head is None:
        log.warning("Imported %s with a NEW, UNTRAINED classifier head: fine-tune before scoring.", folder)
    model.eval()

    tokenizer = BertTokenizer(vocab=str(vocab_path), do_lower_case=True)
    tokenizer.model_max_length = int(keys["max_position_embeddings"])
    if len(tokenizer) != int(keys["vocab_size"]):
        log.warning(
            "The vocabulary has %d tokens but the model expects %d; check that it belongs to this model.",
            len(tokenizer),
            keys["vocab_size"],
        )
    provenance = {
        "imported_from": str(folder.resolve()),
        "format": "clinicalbert-legacy",
        "weights_sha256": _sha256(folder / WEIGHTS_FILE),
        "dropped_pretraining_tensors": len(dropped),
        "new_head": head is None,
    }
    if spec is None:
        spec = ModelSpec(max_length=min(512, int(keys["max_position_embeddings"])), provenance=provenance)
    else:
        limit = min(spec.max_length, int(keys["max_position_embeddings"]))
        spec = spec.model_copy(update={"provenance": {**spec.provenance, **provenance}, "max_length": limit})
    return save_model_folder(model, tokenizer, spec, dst)
