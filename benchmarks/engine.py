"""Engine throughput against the bare model, padding efficiency, and batching gain. One JSON line.

For each config (``tiny``: 2 layers x 128 wide; ``bert-base``: 12 x 768, random weights, a WordPiece
vocabulary trained on generated text) the same realistic chunks (318-word reference chunks of generated
notes of varied length, with their shorter tails) are scored four ways:

- ``bare``: ChunkClassifier.predict_ids on the pre-tokenized chunks (globally length-sorted batches of
  ``batch_size``): the best a single caller can do.
- ``engine``: the same pre-tokenized chunks through :class:`InferenceEngine` from ``callers``
  concurrent callers, one request per note. ``engine_vs_bare`` = engine chunks/s / bare chunks/s.
- ``engine_text``: the same through ``engine.score(texts)``, tokenization included.
- ``engine_vs_bare_cpu_time``: the same ratio in process CPU seconds, steadier on a shared machine.
- ``single``: one chunk per forward. ``batched_vs_single`` = engine chunks/s / single chunks/s.

Ratios are medians over interleaved rounds (bare, engine, engine_text), each taken between neighbours
in time; the throughputs are the best round. ``engine_busy_fraction`` is the share of the engine run's
wall time its worker spent in forward passes (1.0: the engine never left the model idle).
``padding_efficiency`` = real tokens / tokens computed, from the engine's counters;
``sorted_padding_efficiency`` is the ceiling: all chunks sorted by length up front.

With ``--int8``, instead: the dynamic-int8 folder (``notestream model optimize --int8``) against its
float source. Speed on BERT-base (random weights) at exactly 512 tokens per chunk, each served as the
classifier serves it (float: length-sorted batches of ``--batch-size``; int8: chunk by chunk, see
:mod:`notestream.models.quantize`), interleaved rounds: ``float_chunks_per_s``, ``int8_chunks_per_s`` (best round)
and ``int8_vs_float`` (median of the per-round ratios; target >= 2). Accuracy on the demo's model and
held-out admissions (:func:`notestream.training.quickstart.quick_model`, scored offline as the demo does):
``max_abs_chunk_prob_diff``, AUROC of the admission scores with each and their difference (target
|diff| <= 0.005). Writes ``benchmarks/results/engine_int8.{json,png}``.

    python benchmarks/engine.py [--configs tiny,bert-base] [--chunks 64] [--max-seconds 120]
        [--corpus shared/data/physionet_deid_nursing_notes/id.text --vocab-size 30522]
    python benchmarks/engine.py --int8 [--chunks 8] [--rounds 2] [--patients 300]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bert_base import BERT_BASE, bert_base_folder, interleaved_rates, median_ratio

CONFIGS: dict[str, dict[str, Any]] = {
    "tiny": {"hidden": 128, "layers": 2, "heads": 2, "intermediate": 512},
    "bert-base": BERT_BASE,
}


def read_corpus(path: Path | None) -> list[str] | None:
    """Notes of a PhysioNet deid ``id.text`` file (``START_OF_RECORD=..||||..||||`` records), or None."""
    if path is None:
        return None
    raw = path.read_text(encoding="utf-8", errors="replace")
    notes = [part.split("||||", 2)[-1] for part in raw.split("START_OF_RECORD=")[1:]]
    return [note.replace("||||END_OF_RECORD", "").strip() for note in notes if note.strip()]


def note_chunk_ids(
    encode: Callable[[list[str]], list[list[int]]], n_chunks: int, seed: int, corpus: list[str] | None = None
) -> list[list[list[int]]]:
    """Token ids of reference chunks, grouped per note, until ``n_chunks`` chunks are collected."""
    from notestream.models.build import clinical_corpus
    from notestream.models.prep import note_chunks
    from notestream.models.spec import ModelSpec

    notes, total, i = [], 0, 0
    while total < n_chunks:
        texts = (
            corpus[i * 32 : (i + 1) * 32]
            if corpus
            else clinical_corpus(32, seed=seed + i, sentences=(10, 260))
        )
        if not texts:
            break
        for text in texts:
            chunks = note_chunks(text, ModelSpec())[: n_chunks - total]
            if chunks:
                notes.append(encode(chunks))
                total += len(chunks)
            if total >= n_chunks:
                break
        i += 1
    return notes


def sorted_efficiency(lengths: list[int], batch_size: int) -> float:
    """Padding efficiency of one caller that sorts all chunks by length first: the ceiling."""
    from notestream.models.batching import plan_batches

    batches = plan_batches(lengths, max_batch_size=batch_size, max_batch_tokens=batch_size * 512)
    padded = sum(max(lengths[i] for i in b) * len(b) for b in batches)
    return sum(lengths) / padded


def timed(fn, *args, warm=None):  # type: ignore[no-untyped-def]
    """Run ``fn`` in a fresh thread and time it: the engine runs its forwards in a spawned thread too,
    so both sides see the same threading (on a busy machine the main thread behaved differently)."""

    def run():  # type: ignore[no-untyped-def]
        if warm is not None:
            warm()  # the same per-thread warm-up the engine's workers do at start
        start, cpu = time.perf_counter(), time.process_time()  # process-wide CPU seconds
        out = fn(*args)
        return out, time.perf_counter() - start, time.process_time() - cpu

    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(run).result()


async def through_engine(clf, notes, *, batch_size: int, callers: int, texts=None):  # type: ignore[no-untyped-def]
    from notestream.models.engine import InferenceEngine

    engine = InferenceEngine(
        clf, max_batch_size=batch_size, max_batch_tokens=batch_size * 512, max_wait_ms=5, queue_size=8192
    )
    async with engine:
        queue: asyncio.Queue[int] = asyncio.Queue()
        for i in range(len(notes)):
            queue.put_nowait(i)

        async def caller() -> None:
            while not queue.empty():
                i = queue.get_nowait()
                if texts is None:
                    await engine.score_ids(notes[i])
                else:
                    await engine.score(texts[i])

        start, cpu = time.perf_counter(), time.process_time()
        await asyncio.gather(*(caller() for _ in range(callers)))
        elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu
        return elapsed, cpu, engine.stats()


def bench_config(
    name: str,
    n_chunks: int,
    batch_size: int,
    callers: int,
    max_seconds: float,
    rounds: int,
    corpus: list[str] | None = None,
    vocab_size: int = 8000,
    device: str = "cpu",
) -> dict:  # type: ignore[type-arg]
    import torch

    from notestream.models.build import build_small_bert, clinical_corpus
    from notestream.models.checkpoint import load_model_folder
    from notestream.models.classifier import ChunkClassifier

    with tempfile.TemporaryDirectory() as tmp:
        folder = build_small_bert(
            Path(tmp) / name,
            corpus if corpus else clinical_corpus(400, seed=1),
            vocab_size=vocab_size,
            **CONFIGS[name],
        )
        clf = ChunkClassifier(
            load_model_folder(folder, device),
            device,
            max_batch_size=batch_size,
            max_batch_tokens=batch_size * 512,
        )
    notes = note_chunk_ids(clf.encode, n_chunks, seed=100, corpus=corpus)
    flat = [ids for note in notes for ids in note]
    tokenizer = clf.tokenizer
    texts = [[tokenizer.decode(ids[1:-1]) for ids in note] for note in notes]
    timed(clf.predict_ids, flat[: min(8, len(flat))])  # warm-up

    bare_s = engine_s = engine_text_s = float("inf")
    stats: dict = {}  # type: ignore[type-arg]
    ratios: dict[str, list[float]] = {"wall": [], "cpu": [], "text": [], "busy": []}
    for _ in range(rounds):  # interleaved rounds: the machine is shared and noisy, so each ratio is
        # taken between neighbours in time and the median over rounds is reported
        _, bare_wall, bare_cpu = timed(clf.predict_ids, flat, warm=clf.warm_up)
        wall, cpu, round_stats = asyncio.run(
            through_engine(clf, notes, batch_size=batch_size, callers=callers)
        )
        text_s, _, _ = asyncio.run(
            through_engine(clf, notes, batch_size=batch_size, callers=callers, texts=texts)
        )
        ratios["wall"].append(bare_wall / wall)
        ratios["cpu"].append(bare_cpu / cpu)
        ratios["text"].append(bare_wall / text_s)
        ratios["busy"].append(round_stats["busy_s"] / wall)
        bare_s, engine_text_s = min(bare_s, bare_wall), min(engine_text_s, text_s)
        if wall < engine_s:
            engine_s, stats = wall, round_stats
    deadline = time.perf_counter() + max_seconds / 4

    def one_at_a_time() -> int:  # one chunk per forward, capped in time
        done = 0
        for ids in flat[:64]:
            clf.forward_ids([ids])
            done += 1
            if time.perf_counter() > deadline and done >= 4:
                break
        return done

    single_n, single_s, _ = timed(one_at_a_time, warm=clf.warm_up)
    n = len(flat)
    lengths = [len(x) for x in flat]
    result = {
        "config": name,
        "params_m": round(sum(p.numel() for p in clf.model.parameters()) / 1e6, 1),
        "device": str(clf.device),
        "dtype": "bf16" if clf.bf16 else "fp32",
        "torch_threads": torch.get_num_threads(),
        "batch_size": batch_size,
        "callers": callers,
        "rounds": rounds,
        "text": "physionet-deid-nursing" if corpus else "generated",
        "vocab": len(clf.tokenizer),
        "chunks": n,
        "notes": len(notes),
        "mean_tokens": round(sum(lengths) / n, 1),
        "share_full_512": round(sum(1 for x in lengths if x == 512) / n, 3),
        "bare_chunks_per_s": round(n / bare_s, 2),
        "engine_chunks_per_s": round(n / engine_s, 2),
        "engine_text_chunks_per_s": round(n / engine_text_s, 2),
        "single_chunks_per_s": round(single_n / single_s, 2),
        "engine_vs_bare": round(statistics.median(ratios["wall"]), 3),
        "engine_text_vs_bare": round(statistics.median(ratios["text"]), 3),
        "engine_vs_bare_cpu_time": round(statistics.median(ratios["cpu"]), 3),
        "engine_vs_bare_rounds": [round(r, 2) for r in ratios["wall"]],
        "engine_busy_fraction": round(statistics.median(ratios["busy"]), 3),
        "batched_vs_single": round((n / engine_s) / (single_n / single_s), 3),
        "padding_efficiency": round(stats["padding_efficiency"], 3),
        "sorted_padding_efficiency": round(sorted_efficiency(lengths, batch_size), 3),
        "engine_batches": stats["batches"],
    }
    return result


def chunks_of_512_tokens(encode: Callable[[list[str]], list[list[int]]], n: int) -> list[list[int]]:
    """``n`` chunks of generated notes, each exactly 512 tokens with [CLS]/[SEP] (600 words, truncated)."""
    from notestream.models.build import clinical_corpus

    words = " ".join(clinical_corpus(4 * n, seed=21, sentences=(40, 120))).split()
    texts = [" ".join(words[i * 600 : (i + 1) * 600]) for i in range(n)]
    ids = encode(texts)
    if len(ids) < n or any(len(x) != 512 for x in ids):
        raise SystemExit("The generated text ran out before n chunks of 512 tokens; lower --chunks.")
    return ids


def int8_speed(work: Path, n: int, batch_size: int, rounds: int, vocab_size: int) -> dict[str, Any]:
    from notestream.models.checkpoint import load_model_folder
    from notestream.models.classifier import ChunkClassifier
    from notestream.models.optimize import optimize_folder

    model = bert_base_folder(work / "bert-base", vocab_size=vocab_size)
    int8 = optimize_folder(model, work / "bert-base-int8")
    plain = ChunkClassifier(load_model_folder(model), "cpu", max_batch_size=batch_size)
    quant = ChunkClassifier(load_model_folder(int8), "cpu", max_batch_size=batch_size)
    ids = chunks_of_512_tokens(plain.encode, n)
    plain.predict_ids(ids[:1])  # warm up
    quant.predict_ids(ids[:1])
    probs: dict[str, np.ndarray] = {}  # each round's (the same every round: both are deterministic)
    rates = interleaved_rates(
        {
            "float": lambda: probs.__setitem__("float", plain.predict_ids(ids)),
            "int8": lambda: probs.__setitem__("int8", quant.predict_ids(ids)),
        },
        items=n,
        rounds=rounds,
    )
    ratios = [q / f for f, q in zip(rates["float"], rates["int8"], strict=True)]
    diffs = float(np.max(np.abs(probs["float"] - probs["int8"])))
    return {
        "config": "bert-base",
        "tokens_per_chunk": 512,
        "chunks": n,
        "rounds": rounds,
        "float_chunks_per_s": round(max(rates["float"]), 3),
        "int8_chunks_per_s": round(max(rates["int8"]), 3),
        "int8_vs_float": round(median_ratio(rates, "int8", "float"), 2),
        "int8_vs_float_rounds": [round(r, 2) for r in ratios],
        "max_abs_chunk_prob_diff_random_weights": round(diffs, 5),
    }


def int8_accuracy(work: Path, patients: int) -> dict[str, Any]:
    from sklearn.metrics import roc_auc_score

    from notestream.cli.demo import held_out, offline_scores, plan_feed
    from notestream.models.optimize import optimize_folder
    from notestream.training.quickstart import quick_model

    demo = quick_model(work / "demo", n_patients=patients)
    int8 = optimize_folder(demo.model_dir, work / "demo-int8")
    labels = held_out(demo.data_dir)
    feed = plan_feed(demo.mimic_dir, demo.model_dir, labels)
    plain = asyncio.run(offline_scores(demo.model_dir, feed))
    quant = asyncio.run(offline_scores(int8, feed))
    scored = [h for h, s in plain.scores.items() if s is not None]
    y = [labels[h] for h in scored]
    auroc_f = float(roc_auc_score(y, [plain.scores[h] for h in scored]))
    auroc_q = float(roc_auc_score(y, [quant.scores[h] for h in scored]))
    diff = np.abs(np.asarray(plain.chunk_probs) - np.asarray(quant.chunk_probs))
    return {
        "held_out_admissions": len(scored),
        "positives": int(sum(y)),
        "chunks": len(plain.chunk_probs),
        "max_abs_chunk_prob_diff": round(float(diff.max()), 5),
        "mean_abs_chunk_prob_diff": round(float(diff.mean()), 5),
        "auroc_float": round(auroc_f, 4),
        "auroc_int8": round(auroc_q, 4),
        "auroc_diff": round(auroc_q - auroc_f, 4),
    }


def int8_main(args: argparse.Namespace) -> None:
    import matplotlib

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        speed = int8_speed(work, args.chunks or 8, args.batch_size, args.rounds or 2, args.vocab_size)
        accuracy = int8_accuracy(work, args.patients)
    line = {"benchmark": "engine_int8", "threads": args.threads, **speed, "accuracy": accuracy}
    print(json.dumps(line))
    results = Path(__file__).resolve().parent / "results"
    results.mkdir(parents=True, exist_ok=True)
    (results / "engine_int8.json").write_text(json.dumps(line, indent=2) + "\n")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.5))
    ax.bar(["float32", "int8 dynamic"], [speed["float_chunks_per_s"], speed["int8_chunks_per_s"]])
    ax.set_ylabel("chunks/s (CPU, 512 tokens)")
    ax.set_title(f"BERT-base on CPU: int8 {speed['int8_vs_float']}x, AUROC diff {accuracy['auroc_diff']:+g}")
    fig.tight_layout()
    fig.savefig(results / "engine_int8.png", dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", default="tiny,bert-base")
    parser.add_argument(
        "--chunks", type=int, default=0, help="Chunks per config (default: 512 tiny, 64 bert-base)."
    )
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--callers", type=int, default=32)
    parser.add_argument(
        "--rounds", type=int, default=0, help="Best-of rounds (default: 3 tiny, 2 bert-base)."
    )
    parser.add_argument("--max-seconds", type=float, default=240.0, help="Rough time cap per config.")
    parser.add_argument(
        "--corpus",
        type=Path,
        default=None,
        help="PhysioNet deid id.text: real nursing notes for vocab and chunks.",
    )
    parser.add_argument("--vocab-size", type=int, default=8000, help="WordPiece vocabulary size to train.")
    parser.add_argument(
        "--threads",
        type=int,
        default=int(os.environ.get("OMP_NUM_THREADS", "1")),
        help="Torch threads (default $OMP_NUM_THREADS, else 1). On a shared, busy CPU a multi-threaded "
        "forward waits at every parallel region for its sibling thread to be scheduled, a fixed cost per "
        "forward that penalises more-but-smaller batches: compare batching policies with 1 thread.",
    )
    parser.add_argument("--out", type=Path, default=None, help="Also write engine.json and engine.png here.")
    parser.add_argument(
        "--device", default="cpu", help="Device of the engine runs, e.g. cuda:0 (bf16 there)."
    )
    parser.add_argument("--int8", action="store_true", help="Only the int8-vs-float report (see above).")
    parser.add_argument(
        "--patients", type=int, default=300, help="Demo cohort size of the int8 accuracy run."
    )
    args = parser.parse_args()
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import torch

    torch.set_num_threads(args.threads)
    if args.int8:
        int8_main(args)
        return
    corpus = read_corpus(args.corpus)
    results = []
    for name in args.configs.split(","):
        n = args.chunks or (256 if name == "tiny" else 64)
        rounds = args.rounds or (5 if name == "tiny" else 2)
        results.append(
            bench_config(
                name,
                n,
                args.batch_size,
                args.callers,
                args.max_seconds,
                rounds,
                corpus,
                args.vocab_size,
                args.device,
            )
        )
    line = {
        "benchmark": "engine",
        "targets_cpu": {"engine_vs_bare": 0.9, "padding_efficiency": 0.9},
        "gpu": torch.cuda.is_available(),
        "results": results,
    }
    print(json.dumps(line))
    if args.out is not None:
        write_report(line, args.out)


def write_report(line: dict, out: Path) -> None:  # type: ignore[type-arg]
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out.mkdir(parents=True, exist_ok=True)
    (out / "engine.json").write_text(json.dumps(line, indent=2) + "\n")
    figures = [
        "engine_vs_bare",
        "engine_vs_bare_cpu_time",
        "engine_text_vs_bare",
        "padding_efficiency",
        "batched_vs_single",
    ]
    fig, axes = plt.subplots(1, len(line["results"]), figsize=(6 * len(line["results"]), 3.8), squeeze=False)
    for ax, res in zip(axes[0], line["results"], strict=True):
        ax.bar(figures, [res[f] for f in figures])
        ax.axhline(0.9, color="grey", linestyle="--", linewidth=1)
        ax.set_title(f"{res['config']} on {res['device']} (batch {res['batch_size']})")
        ax.tick_params(axis="x", rotation=20)
    fig.tight_layout()
    fig.savefig(out / "engine.png", dpi=120)


if __name__ == "__main__":
    main()
