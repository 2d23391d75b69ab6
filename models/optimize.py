"""`notestream model optimize`: write a copy of a model folder that serves faster on CPU.

With ``--int8`` the copy keeps the float safetensors weights and tokenizer and says
``quantization: int8-dynamic`` in its notestream.json; :mod:`notestream.models.quantize` explains how the
loader serves it.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from notestream.models.checkpoint import check_model_folder, load_model_folder
from notestream.models.errors import CheckpointError
from notestream.models.fingerprint import model_fingerprint
from notestream.models.spec import ModelSpec

_SAFE_WEIGHTS = ("model.safetensors", "model.safetensors.index.json")
_SKIPPED = ("pytorch_model.bin", "notestream.json")


def optimize_folder(src: str | Path, dst: str | Path, *, int8: bool = True) -> Path:
    """Write ``dst``: ``src``'s configuration, float safetensors weights and tokenizer, with
    ``notestream.json`` saying ``quantization: int8-dynamic`` (and where it came from), then load it once
    to prove it serves. ``dst`` must not exist yet, or be empty.
    """
    if not int8:
        raise CheckpointError("Nothing to do: pass --int8 (dynamic int8 of the linear layers, CPU serving).")
    source = check_model_folder(src)
    if not any((source / name).is_file() for name in _SAFE_WEIGHTS):
        raise CheckpointError(
            f"{source} has no safetensors weights; only safetensors folders are optimized (no pickles)."
        )
    target = Path(dst)
    if target.exists() and (not target.is_dir() or any(target.iterdir())):
        raise CheckpointError(f"{target} already exists and is not an empty folder; choose a new one.")
    spec = ModelSpec.read(source)
    if spec.quantization != "none":
        raise CheckpointError(
            f"{source} is already quantized ({spec.quantization}); optimize its float source."
        )
    target.mkdir(parents=True, exist_ok=True)
    try:
        for item in sorted(source.iterdir()):
            if item.is_file() and not item.is_symlink() and item.name not in _SKIPPED:
                shutil.copy2(item, target / item.name)
        provenance = {**spec.provenance, "optimized_from": model_fingerprint(source)}
        spec.model_copy(update={"quantization": "int8-dynamic", "provenance": provenance}).write(target)
        load_model_folder(target, "cpu")
    except (OSError, CheckpointError) as exc:
        shutil.rmtree(target, ignore_errors=True)
        raise CheckpointError(f"Could not write the optimized model folder {target}: {exc}") from exc
    return target
