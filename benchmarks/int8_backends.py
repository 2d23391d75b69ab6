"""Which int8 backend serves BERT-base fastest on this CPU: torch or ONNX Runtime. One JSON line.

``notestream model optimize --int8`` quantizes with torch (dynamic int8 of the linear layers, at load).
The alternative the design names is ONNX Runtime (what optimum drives): export the float model to
ONNX, quantize it dynamically (``onnxruntime.quantization.quantize_dynamic``, int8 weights), optionally
after ORT's transformer fusions (attention, layer norm, GELU: ``onnxruntime.transformers.optimizer``).
This script times them all on the same BERT-base folder (12 x 768, random weights, a vocabulary
trained on generated text) and the same chunks of exactly 512 tokens, one thread each, one chunk per
call (dynamic int8 quantizes activations per call, so a batch would make a chunk's probability depend
on its batch-mates; see :mod:`notestream.models.quantize`), interleaved rounds:

- ``chunks_per_s[backend]``: best round; ``vs_torch_float[backend]``: median of per-round ratios;
- ``max_abs_prob_diff[backend]``: against torch float on the same chunks.

ONNX Runtime is not a notestream dependency; install it to run this (``pip install onnxruntime onnx``).
Writes ``benchmarks/results/int8_backends.json``.

    python benchmarks/int8_backends.py [--chunks 8] [--rounds 3]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import tempfile
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

Scorer = Callable[[list[list[int]]], np.ndarray]


def onnx_files(folder: Path, work: Path) -> dict[str, Path]:
    """The float model exported to ONNX, its dynamic-int8 copy, and the int8 copy of its fused graph."""
    import onnx
    import torch
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from onnxruntime.transformers.optimizer import optimize_model

    from notestream.models.checkpoint import load_model_folder

    model = load_model_folder(folder).model.eval()
    config = model.config
    ids = torch.ones(1, 16, dtype=torch.long)
    plain = work / "model.onnx"
    axes = {"batch": 0, "tokens": 1}
    with torch.inference_mode():
        torch.onnx.export(
            model,
            (ids, torch.ones_like(ids)),
            str(plain),
            input_names=["input_ids", "attention_mask"],
            output_names=["logits"],
            dynamic_axes={
                "input_ids": {v: k for k, v in axes.items()},
                "attention_mask": {v: k for k, v in axes.items()},
                "logits": {0: "batch"},
            },
            dynamo=False,
        )
    int8 = work / "model.int8.onnx"
    quantize_dynamic(str(plain), str(int8), weight_type=QuantType.QInt8)
    fused = work / "model.fused.onnx"
    optimize_model(
        str(plain), model_type="bert", num_heads=config.num_attention_heads, hidden_size=config.hidden_size
    ).save_model_to_file(str(fused))
    fused_int8 = work / "model.fused.int8.onnx"
    quantize_dynamic(
        str(fused),
        str(fused_int8),
        weight_type=QuantType.QInt8,
        extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT},  # the fused ops carry no type info
    )
    return {"ort_float": plain, "ort_int8": int8, "ort_fused_int8": fused_int8}


def ort_scorer(path: Path) -> Scorer:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = options.inter_op_num_threads = 1
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])

    def score(ids: list[list[int]]) -> np.ndarray:
        logits = []
        for chunk in ids:
            row = np.array([chunk], dtype=np.int64)
            logits.append(session.run(None, {"input_ids": row, "attention_mask": np.ones_like(row)})[0][0, 0])
        return np.asarray(1.0 / (1.0 + np.exp(-np.asarray(logits, dtype=np.float64))))

    return score


def main(chunks: int, rounds: int) -> dict[str, Any]:
    import torch
    from bert_base import bert_base_folder, interleaved_rates, median_ratio
    from engine import chunks_of_512_tokens

    from notestream.models.checkpoint import load_model_folder
    from notestream.models.classifier import ChunkClassifier
    from notestream.models.optimize import optimize_folder

    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        folder = bert_base_folder(work / "bert-base")
        torch_float = ChunkClassifier(load_model_folder(folder), "cpu", max_batch_size=chunks)
        torch_int8 = ChunkClassifier(load_model_folder(optimize_folder(folder, work / "int8")), "cpu")
        scorers: dict[str, Scorer] = {
            "torch_float": torch_float.predict_ids,
            "torch_int8": torch_int8.predict_ids,
            **{k: ort_scorer(p) for k, p in onnx_files(folder, work).items()},
        }
        ids = chunks_of_512_tokens(torch_float.encode, chunks)
        probs = {k: np.asarray(score(ids[:2]), dtype=np.float64) for k, score in scorers.items()}  # warm-up
        rates = interleaved_rates({k: partial(score, ids) for k, score in scorers.items()}, len(ids), rounds)
    import onnxruntime

    return {
        "benchmark": "int8_backends",
        "config": "bert-base",
        "tokens_per_chunk": 512,
        "chunks": chunks,
        "rounds": rounds,
        "threads": 1,
        "torch": torch.__version__,
        "onnxruntime": onnxruntime.__version__,
        "chunks_per_s": {k: round(max(v), 3) for k, v in rates.items()},
        "vs_torch_float": {k: round(median_ratio(rates, k, "torch_float"), 2) for k in rates},
        "vs_torch_float_rounds": {
            k: [round(a / f, 2) for a, f in zip(v, rates["torch_float"], strict=True)]
            for k, v in rates.items()
        },
        "max_abs_prob_diff": {k: float(np.max(np.abs(p - probs["torch_float"]))) for k, p in probs.items()},
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--chunks", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    with contextlib.redirect_stdout(sys.stderr):  # exporter and quantizer chatter; stdout keeps one line
        out = main(args.chunks, args.rounds)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "int8_backends.json").write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps(out))
