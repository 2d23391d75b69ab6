"""A model folder's fingerprint: what decides the probabilities it gives, hashed.

Two folders with the same fingerprint give the same chunk probabilities for the same note: the same
weights, configuration and tokenizer, and the same ``notestream.json`` note handling (task, cleaning,
chunking, maximum length, window, and the quantization it is served with). What only changes how probabilities are *read* (the aggregation
constant ``c``, the decision threshold, stored metrics, provenance) is left out, so writing a threshold
into a served model does not make it a different model.

The streaming store records the fingerprint of the model whose probabilities it holds
(:meth:`notestream.stream.store.RiskStore.claim`), and a worker with another model refuses to mix its
probabilities in.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from notestream.models.checkpoint import WEIGHT_FILES, check_model_folder
from notestream.models.spec import ModelSpec

CONTENT_FILES = (
    "config.json",
    *WEIGHT_FILES,
    "tokenizer.json",
    "vocab.txt",
    "tokenizer_config.json",
    "special_tokens_map.json",
)
SPEC_FIELDS = {"task", "cleaning", "chunking", "max_length", "window"}
_BLOCK = 1 << 20


def _shards(folder: Path) -> list[str]:
    """The weight shards a ``model.safetensors.index.json`` names, sorted."""
    index = folder / "model.safetensors.index.json"
    if not index.is_file():
        return []
    weight_map = json.loads(index.read_text(encoding="utf-8")).get("weight_map", {})
    return sorted(set(weight_map.values()))


def model_fingerprint(folder: str | Path) -> str:
    """``<folder name>@<first 16 hex digits of a SHA-256>`` over the files and spec fields that decide
    the model's probabilities.

    >>> import tempfile
    >>> from notestream.models.spec import ModelSpec
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     d = Path(tmp) / "readmission-v1"
    ...     d.mkdir()
    ...     for name in ("config.json", "model.safetensors", "vocab.txt"):
    ...         _ = (d / name).write_text(name)
    ...     _ = ModelSpec().write(d)
    ...     first = model_fingerprint(d)
    ...     _ = ModelSpec(threshold=0.3).write(d)        # a new threshold: the same model
    ...     same = model_fingerprint(d)
    ...     _ = ModelSpec(cleaning="clinical").write(d)  # another cleaning: other probabilities
    ...     other = model_fingerprint(d)
    >>> first.startswith("readmission-v1@"), first == same, first == other
    (True, True, False)
    """
    path = check_model_folder(folder)
    digest = hashlib.sha256()
    for name in [*CONTENT_FILES, *_shards(path)]:
        file = path / name
        if not file.is_file():
            continue
        digest.update(f"{name}\0".encode())
        with file.open("rb") as fh:
            while block := fh.read(_BLOCK):
                digest.update(block)
        digest.update(b"\0")
    spec = ModelSpec.read(path)
    digest.update(json.dumps(spec.model_dump(mode="json", include=SPEC_FIELDS), sort_keys=True).encode())
    if spec.quantization != "none":  # only then, so that float folders keep their fingerprints
        digest.update(f"\0quantization={spec.quantization}".encode())
    return f"{path.resolve().name}@{digest.hexdigest()[:16]}"
