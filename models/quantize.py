"""Quantized CPU serving: a model folder that says ``quantization: int8-dynamic`` in its notestream.json.

The folder keeps the float weights (safetensors, as every model folder) and the flag; the loader
(:func:`notestream.models.checkpoint.load_model_folder`) quantizes the linear layers at load time with
torch's dynamic int8 quantization (int8 weights, activations quantized per batch on the fly). Nothing
quantized is ever serialized, so loading stays pickle-free and the folder runs with any torch build
that has a quantized CPU engine. The flag enters the folder's fingerprint
(:mod:`notestream.models.fingerprint`): an int8 folder is another model than its float source, and a
store bound to one refuses the other.

Dynamic int8 runs on CPU only; a folder flagged int8 refuses a CUDA device. Why torch rather than ONNX
Runtime, and how to deploy it: docs/operations.md (CPU-only nodes).

>>> QUANTIZATIONS
('none', 'int8-dynamic')
"""

from __future__ import annotations

import warnings
from typing import TypeVar, cast

from notestream.models.errors import CheckpointError

M = TypeVar("M")
QUANTIZATIONS = ("none", "int8-dynamic")


def quantize_for_device(model: M, quantization: str, device: str) -> M:
    """``model`` ready to serve as its folder asks: unchanged for ``none``, dynamic int8 linear layers
    for ``int8-dynamic`` (CPU only)."""
    if quantization == "none":
        return model
    if quantization != "int8-dynamic":
        raise CheckpointError(
            f"Unknown quantization {quantization!r} in notestream.json; use one of {', '.join(QUANTIZATIONS)}."
        )
    if not str(device).startswith("cpu"):
        raise CheckpointError(
            f"This model folder is quantized (int8-dynamic), which runs on CPU only, not on {device}; "
            "serve its float source folder on GPUs (bf16)."
        )
    import torch

    engines = torch.backends.quantized.supported_engines
    if not any(name in engines for name in ("x86", "fbgemm", "qnnpack")):
        raise CheckpointError(f"This torch build has no quantized CPU engine (it has {engines}).")
    with warnings.catch_warnings():
        # torch announces the move of eager-mode quantization to torchao; the torch this project pins
        # still ships it, and a torch without it fails here with a clear error
        warnings.filterwarnings("ignore", category=DeprecationWarning, message=".*torch.ao.quantization")
        warnings.filterwarnings("ignore", category=UserWarning, message=".*quantized tensor creation")
        try:
            from torch.ao.quantization import quantize_dynamic
        except ImportError as exc:
            raise CheckpointError(
                f"This torch ({torch.__version__}) has no dynamic int8 quantization; serve the float folder."
            ) from exc
        return cast(M, quantize_dynamic(model, {torch.nn.Linear}, dtype=torch.qint8))
