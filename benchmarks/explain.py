"""What one explanation costs: seconds per chunk for each step of `notestream explain --text`. One JSON line.

With one small BERT (random weights; ``--layers`` x ``--hidden`` wide, ``--heads`` heads, a WordPiece
vocabulary trained on generated notes, maximum length ``--tokens``) and the first reference 318-word
chunk of generated notes (``tokens`` in the output: its WordPiece length, at most ``--tokens``):

- ``attention_s``: attention maps of every layer (an eager-attention copy of an sdpa model);
- ``integrated_gradients_s`` (``--steps`` steps, path refinement included), ``gradient_x_input_s``,
  ``rollout_s``: token importances;
- ``render_s``: every PNG, the HTML and the JSON of ``write_explanation``; ``png_kib``: their size;
- ``evidence_ms``: ranking an admission of 20 notes x 10 chunks from the in-memory store.

    python benchmarks/explain.py [--tokens 512] [--hidden 256] [--layers 4] [--heads 4] [--steps 32]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from notestream.models.build import build_small_bert, clinical_corpus  # noqa: E402
from notestream.models.checkpoint import load_model_folder  # noqa: E402
from notestream.models.explain import attention_maps, prepare_chunk, token_importance, write_explanation  # noqa: E402
from notestream.models.explain.importance import TokenImportance  # noqa: E402
from notestream.models.explain.report import TextExplanation  # noqa: E402
from notestream.models.spec import ModelSpec  # noqa: E402
from notestream.stream.evidence import admission_evidence  # noqa: E402
from notestream.stream.store import MemoryRiskStore  # noqa: E402

T = TypeVar("T")


def timed(fn: Callable[[], T]) -> tuple[T, float]:
    start = time.perf_counter()
    result = fn()
    return result, time.perf_counter() - start


async def evidence_seconds() -> float:
    store = MemoryRiskStore()
    rng = random.Random(0)
    for i in range(20):
        probs = [rng.random() for _ in range(10)]
        await store.apply_note(
            hadm_id=1, subject_id=1, note_id=str(i), revision=0, is_error=False, chunk_probs=probs
        )
    start = time.perf_counter()
    for _ in range(50):
        await admission_evidence(store, 1, c=2.0)
    return (time.perf_counter() - start) / 50


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=512)
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--steps", type=int, default=32)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        corpus = clinical_corpus(200, seed=0)
        spec = ModelSpec(max_length=args.tokens)
        folder = build_small_bert(
            Path(tmp) / "model",
            corpus,
            vocab_size=2000,
            hidden=args.hidden,
            layers=args.layers,
            heads=args.heads,
            max_length=args.tokens,
            spec=spec,
        )
        loaded = load_model_folder(folder)  # sdpa, as served
        text = " ".join(corpus[:40])
        chunk = prepare_chunk(text, spec, loaded.tokenizer)
        maps, attention_s = timed(lambda: attention_maps(loaded.model, chunk.input_ids, chunk.tokens))
        figures: dict[str, float] = {}
        results: dict[str, TokenImportance] = {}
        for method in ("integrated_gradients", "gradient_x_input", "rollout"):
            start = time.perf_counter()
            results[method] = token_importance(
                loaded.model, chunk.input_ids, chunk.tokens, method=method, steps=args.steps
            )
            figures[f"{method}_s"] = time.perf_counter() - start
        explanation = TextExplanation(chunk=chunk, maps=maps, importance=results["integrated_gradients"])
        paths, render_s = timed(lambda: write_explanation(explanation, Path(tmp) / "out"))
        png_kib = sum(p.stat().st_size for p in paths if p.suffix == ".png") / 1024
    print(
        json.dumps(
            {
                "benchmark": "explain",
                "tokens": len(chunk.input_ids),
                "hidden": args.hidden,
                "layers": args.layers,
                "heads": args.heads,
                "steps": args.steps,
                "threads": torch.get_num_threads(),
                "attention_s": round(attention_s, 3),
                **{k: round(v, 3) for k, v in figures.items()},
                "ig_delta": round(float(results["integrated_gradients"].delta or 0.0), 5),
                "render_s": round(render_s, 3),
                "png_kib": round(png_kib, 1),
                "evidence_ms": round(asyncio.run(evidence_seconds()) * 1000, 3),
            }
        )
    )


if __name__ == "__main__":
    main()
