"""Teacher vs distilled students: AUROC / AUPRC with confidence intervals and CPU chunks/s. One JSON line.

The teacher is the demo's model (:func:`notestream.training.quickstart.quick_model`: a synthetic MIMIC-III cohort,
the 72-hour early-notes readmission task, a small BERT fine-tuned on it); the students are distilled
from it on the same prepared ``train.csv`` (``notestream train distill``) and scored on the held-out
``test.csv`` at its natural prevalence, at the admission level (the reference aggregation).

On this CPU-only machine the teacher is the demo's 2 x 64 BERT, not BERT-base, so the students are the
ClinicalNoteBERT shapes scaled to it: ``small`` = half the teacher's layers at its width, initialised
from its layers (6 of 12 for BERT-base); ``tiny`` = a third of its layers (at least one) at 312/768 of
its width (4 x 312 for BERT-base), initialised at random.

Speed is a property of a model's shape, not of its weights, so the issue's shapes are also timed
as they are: a BERT-base teacher (12 x 768, 512 positions, random weights, a vocabulary trained on
generated text) is distilled by the same :func:`~notestream.training.distill.distill` into ``small``
(6 x 768, from its layers) and ``tiny`` (4 x 312) for a few steps, and the three folders are timed
on chunks of exactly 512 tokens, served as the worker serves them (``ChunkClassifier``, length-sorted
batches), in interleaved rounds. Their weights are not trained, so this part reports no accuracy.

Keys: ``student_speedup[size]`` (the BERT-base shapes at 512 tokens: student chunks/s over the
teacher's, median of the per-round ratios; the target is about these), ``student_auroc_delta[size]``
(the trained family: student AUROC - teacher AUROC, with a paired bootstrap 95% interval),
``trained_speedup[size]`` (the trained family's own speed ratio at its 96 tokens), per model
``auroc``/``auprc`` with bootstrap 95% intervals, and ``bert_base_shapes`` (parameters and chunks/s
of each shape). Writes ``benchmarks/results/distill.{json,png}``.

    python benchmarks/distill.py [--patients 400] [--steps 400] [--bootstrap 1000] [--device cpu]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import tempfile
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from bert_base import bert_base_folder, interleaved_rates, median_ratio  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"


def scaled_students(config: Any) -> dict[str, dict[str, int]]:
    layers, hidden, heads = config.num_hidden_layers, config.hidden_size, config.num_attention_heads
    tiny_hidden = max(heads * 8, round(hidden * 312 / 768 / heads) * heads)
    return {
        "small": {"layers": max(1, layers // 2), "hidden": hidden, "heads": heads},
        "tiny": {
            "layers": max(1, layers // 3),
            "hidden": tiny_hidden,
            "heads": heads,
            "intermediate": round(tiny_hidden * 1200 / 312),
        },
    }


def admission_frame(model_dir: Path, test: Any, c: float) -> Any:
    from notestream.training.evaluate import score_chunks
    from notestream.training.metrics import admission_scores

    return admission_scores(score_chunks(model_dir, test, device="cpu"), c=c)


def bootstrap(y: np.ndarray, scores: dict[str, np.ndarray], n: int, seed: int = 0) -> dict[str, Any]:
    """AUROC/AUPRC per model with 95% intervals, and each student's paired AUROC delta to the teacher."""
    from sklearn.metrics import average_precision_score, roc_auc_score

    rng = np.random.default_rng(seed)
    samples: dict[str, list[tuple[float, float]]] = {k: [] for k in scores}
    deltas: dict[str, list[float]] = {k: [] for k in scores if k != "teacher"}
    for _ in range(n):
        idx = rng.integers(0, len(y), len(y))
        if len(np.unique(y[idx])) < 2:
            continue
        aurocs = {k: roc_auc_score(y[idx], s[idx]) for k, s in scores.items()}
        for k, s in scores.items():
            samples[k].append((aurocs[k], average_precision_score(y[idx], s[idx])))
        for k in deltas:
            deltas[k].append(aurocs[k] - aurocs["teacher"])

    def ci(values: list[float]) -> list[float]:
        return [round(float(np.percentile(values, 2.5)), 4), round(float(np.percentile(values, 97.5)), 4)]

    out: dict[str, Any] = {}
    for k, s in scores.items():
        out[k] = {
            "auroc": round(float(roc_auc_score(y, s)), 4),
            "auroc_ci95": ci([a for a, _ in samples[k]]),
            "auprc": round(float(average_precision_score(y, s)), 4),
            "auprc_ci95": ci([p for _, p in samples[k]]),
        }
    for k, values in deltas.items():
        out[k]["auroc_delta"] = round(out[k]["auroc"] - out["teacher"]["auroc"], 4)
        out[k]["auroc_delta_ci95"] = ci(values)
    return out


def speeds(models: dict[str, Path], texts: list[str], rounds: int) -> dict[str, float]:
    from notestream.models.checkpoint import load_model_folder
    from notestream.models.classifier import ChunkClassifier

    classifiers = {
        k: ChunkClassifier(load_model_folder(p), "cpu", max_batch_size=32) for k, p in models.items()
    }
    ids = next(iter(classifiers.values())).encode(texts)  # one tokenizer: the students keep the teacher's
    for clf in classifiers.values():
        clf.predict_ids(ids[:8])  # warm up
    calls = {k: partial(clf.predict_ids, ids) for k, clf in classifiers.items()}
    return {k: round(max(v), 1) for k, v in interleaved_rates(calls, len(ids), rounds).items()}


def bert_base_shapes(
    work: Path, train_csv: Path, *, chunks: int, batch: int, rounds: int, device: str
) -> dict[str, dict[str, Any]]:
    """The issue's shapes timed as served: a BERT-base teacher and its ``small``/``tiny`` students.

    The students come out of :func:`distill` (a few steps on 64 of ``train_csv``'s chunks: enough to
    write the folders the worker would load); each folder is timed on ``chunks`` chunks of exactly 512
    tokens, interleaved, ``rounds`` times.
    """
    import pandas as pd
    from engine import chunks_of_512_tokens

    from notestream.models.checkpoint import load_model_folder
    from notestream.models.classifier import ChunkClassifier
    from notestream.training.chunk_files import read_chunks
    from notestream.training.distill import distill
    from notestream.training.run_config import DistillConfig

    teacher = bert_base_folder(work / "bert-base")
    frame = read_chunks(train_csv)
    few = pd.concat([frame[frame["Label"] == label].head(32) for label in (0, 1)])
    few_csv = work / "few.csv"
    few.to_csv(few_csv, index=False)
    folders = {"teacher": teacher}
    for size in ("small", "tiny"):
        cfg = DistillConfig(size=size, max_steps=2, batch_size=4, progress=False, eval_batch_size=16)
        folders[size] = distill(few_csv, None, teacher, work / f"bert-base-{size}", config=cfg)
    loaded = {k: load_model_folder(p) for k, p in folders.items()}
    classifiers = {k: ChunkClassifier(m, device, max_batch_size=batch) for k, m in loaded.items()}
    ids = chunks_of_512_tokens(classifiers["teacher"].encode, chunks)
    for clf in classifiers.values():
        clf.predict_ids(ids[:1])  # warm up
    rates = interleaved_rates(
        {k: partial(clf.predict_ids, ids) for k, clf in classifiers.items()}, len(ids), rounds
    )
    out: dict[str, dict[str, Any]] = {}
    for k, m in loaded.items():
        shape = m.model.config
        out[k] = {
            "shape": {
                "layers": shape.num_hidden_layers,
                "hidden": shape.hidden_size,
                "heads": shape.num_attention_heads,
                "intermediate": shape.intermediate_size,
            },
            "parameters": sum(p.numel() for p in m.model.parameters()),
            "chunks_per_s": round(max(rates[k]), 3),
        }
        if k != "teacher":
            out[k]["speedup"] = round(median_ratio(rates, k, "teacher"), 2)
            out[k]["speedup_rounds"] = [
                round(a / t, 2) for a, t in zip(rates[k], rates["teacher"], strict=True)
            ]
    return out


def main(
    patients: int, steps: int, n_boot: int, rounds: int, shape_chunks: int, shape_batch: int, device: str
) -> dict[str, Any]:
    from notestream.models.checkpoint import load_model_folder
    from notestream.models.spec import ModelSpec
    from notestream.training.chunk_files import read_chunks
    from notestream.training.distill import distill
    from notestream.training.quickstart import quick_model
    from notestream.training.run_config import DistillConfig

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        demo = quick_model(work / "demo", n_patients=patients, max_steps=steps)
        teacher = demo.model_dir
        config = load_model_folder(teacher).model.config
        shapes = scaled_students(config)
        models = {"teacher": teacher}
        for size, shape in shapes.items():
            cfg = DistillConfig(
                size=size,
                max_steps=steps,
                batch_size=32,
                lr=2e-3,
                progress=False,
                init_from_teacher=size == "small",
                **shape,
            )
            models[size] = distill(
                demo.data_dir / "train.csv",
                demo.data_dir / "val.csv",
                teacher,
                work / f"student-{size}",
                config=cfg,
            )
        test = read_chunks(demo.data_dir / "test.csv")
        c = ModelSpec.read(teacher).c
        frames = {k: admission_frame(p, test, c) for k, p in models.items()}
        y = frames["teacher"]["Label"].to_numpy()
        quality = bootstrap(y, {k: f["score"].to_numpy() for k, f in frames.items()}, n_boot)
        rates = speeds(models, test["TEXT"].astype(str).tolist(), rounds)
        params = {
            k: sum(p.numel() for p in load_model_folder(m).model.parameters()) for k, m in models.items()
        }
        shapes_at_512 = bert_base_shapes(
            work,
            demo.data_dir / "train.csv",
            chunks=shape_chunks,
            batch=shape_batch,
            rounds=rounds,
            device=device,
        )
    shape_of = {
        "teacher": {
            "layers": config.num_hidden_layers,
            "hidden": config.hidden_size,
            "heads": config.num_attention_heads,
        },
        **shapes,
    }
    per_model = {
        k: {"shape": shape_of[k], "parameters": params[k], "chunks_per_s": rates[k], **quality[k]}
        for k in models
    }
    return {
        "benchmark": "distill",
        "patients": patients,
        "steps": steps,
        "test_admissions": len(y),
        "test_positives": int(y.sum()),
        "threads": int(os.environ.get("OMP_NUM_THREADS", "0")) or None,
        "models": per_model,
        "device": device,
        "bert_base_shapes": {
            "tokens_per_chunk": 512,
            "chunks": shape_chunks,
            "batch": shape_batch,
            **shapes_at_512,
        },
        "student_speedup": {k: shapes_at_512[k]["speedup"] for k in shapes},
        "trained_speedup": {k: round(rates[k] / rates["teacher"], 2) for k in shapes},
        "student_auroc_delta": {k: quality[k]["auroc_delta"] for k in shapes},
        "student_auroc_delta_ci95": {k: quality[k]["auroc_delta_ci95"] for k in shapes},
    }


def plot(result: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    models = result["models"]
    names = list(models)
    base = {k: v for k, v in result["bert_base_shapes"].items() if isinstance(v, dict)}
    fig, (speed, trained, quality) = plt.subplots(1, 3, figsize=(12, 3.6))
    speed.bar(names, [base[k]["chunks_per_s"] for k in names])
    for x, k in enumerate(names):
        label = f"{base[k]['speedup']}x" if "speedup" in base[k] else "1x"
        speed.annotate(label, (x, base[k]["chunks_per_s"]), ha="center", va="bottom")
    speed.set_ylim(0, 1.15 * max(base[k]["chunks_per_s"] for k in names))
    speed.set_ylabel(f"chunks/s at 512 tokens ({result['device']})")
    speed.set_title("BERT-base shapes (12x768, 6x768, 4x312)", fontsize=9)
    trained.bar(names, [models[k]["chunks_per_s"] for k in names])
    trained.set_ylabel("chunks/s at 96 tokens (CPU)")
    trained.set_title("trained family (scaled shapes)", fontsize=9)
    aurocs = [models[k]["auroc"] for k in names]
    errs = np.array(
        [
            [a - models[k]["auroc_ci95"][0], models[k]["auroc_ci95"][1] - a]
            for k, a in zip(names, aurocs, strict=True)
        ]
    )
    quality.bar(names, aurocs, yerr=errs.T, capsize=4)
    quality.set_ylabel("admission AUROC (95% CI)")
    quality.set_title("trained family, held-out admissions", fontsize=9)
    quality.set_ylim(0.5, 1.0)
    fig.suptitle("Distilled students vs teacher")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--patients", type=int, default=400)
    parser.add_argument("--steps", type=int, default=400, help="Fine-tuning and distillation steps.")
    parser.add_argument("--bootstrap", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--shape-chunks", type=int, default=8, help="512-token chunks per BERT-base-shape round."
    )
    parser.add_argument("--device", default="cpu", help="Where the BERT-base shapes are timed (cpu, cuda:0).")
    parser.add_argument("--shape-batch", type=int, default=8, help="Batch size serving the BERT-base shapes.")
    parser.add_argument("--out", type=Path, default=RESULTS, help="Folder for distill.{json,png}.")
    args = parser.parse_args()
    with contextlib.redirect_stdout(sys.stderr):  # the trainer's log lines; stdout keeps one JSON line
        out = main(
            args.patients,
            args.steps,
            args.bootstrap,
            args.rounds,
            args.shape_chunks,
            args.shape_batch,
            args.device,
        )
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "distill.json").write_text(json.dumps(out, indent=2) + "\n")
    plot(out, args.out / "distill.png")
    print(json.dumps(out))
