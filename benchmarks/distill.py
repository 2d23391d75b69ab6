"""Teacher vs distilled students: AUROC / AUPRC with confidence intervals and CPU chunks/s. One JSON line.

The teacher is the demo's model (:func:`notestream.training.quickstart.quick_model`: a synthetic MIMIC-III cohort,
the 72-hour early-notes readmission task, a small BERT fine-tuned on it); the students are distilled
from it on the same prepared ``train.csv`` (``notestream train distill``) and scored on the held-out
``test.csv`` at its natural prevalence, at the admission level (the reference aggregation).

On this CPU-only machine the teacher is the demo's 2 x 64 BERT, not BERT-base, so the students are the
ClinicalNoteBERT shapes scaled to it: ``small`` = half the teacher's layers at its width, initialised
from its layers (6 of 12 for BERT-base); ``tiny`` = a third of its layers (at least one) at 312/768 of
its width (4 x 312 for BERT-base), initialised at random.

Keys: ``student_speedup[size]`` (student chunks/s over the teacher's, same chunks, interleaved rounds,
best of each), ``student_auroc_delta[size]`` (student AUROC - teacher AUROC, with a paired bootstrap
95% interval), and per model ``auroc``/``auprc`` with bootstrap 95% intervals. Writes
``benchmarks/results/distill.{json,png}``.

    python benchmarks/distill.py [--patients 400] [--steps 400] [--bootstrap 1000]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

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
    best = dict.fromkeys(classifiers, 0.0)
    for clf in classifiers.values():
        clf.predict_ids(ids[:8])  # warm up
    for _ in range(rounds):
        for k, clf in classifiers.items():
            start = time.perf_counter()
            clf.predict_ids(ids)
            best[k] = max(best[k], len(ids) / (time.perf_counter() - start))
    return {k: round(v, 1) for k, v in best.items()}


def main(patients: int, steps: int, n_boot: int, rounds: int) -> dict[str, Any]:
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
        "student_speedup": {k: round(rates[k] / rates["teacher"], 2) for k in shapes},
        "student_auroc_delta": {k: quality[k]["auroc_delta"] for k in shapes},
        "student_auroc_delta_ci95": {k: quality[k]["auroc_delta_ci95"] for k in shapes},
    }


def plot(result: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    models = result["models"]
    names = list(models)
    fig, (left, right) = plt.subplots(1, 2, figsize=(9, 3.5))
    left.bar(names, [models[k]["chunks_per_s"] for k in names])
    left.set_ylabel("chunks/s (CPU)")
    aurocs = [models[k]["auroc"] for k in names]
    errs = np.array(
        [
            [a - models[k]["auroc_ci95"][0], models[k]["auroc_ci95"][1] - a]
            for k, a in zip(names, aurocs, strict=True)
        ]
    )
    right.bar(names, aurocs, yerr=errs.T, capsize=4)
    right.set_ylabel("admission AUROC (95% CI)")
    right.set_ylim(0.5, 1.0)
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
    args = parser.parse_args()
    out = main(args.patients, args.steps, args.bootstrap, args.rounds)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "distill.json").write_text(json.dumps(out, indent=2) + "\n")
    plot(out, RESULTS / "distill.png")
    print(json.dumps(out))
