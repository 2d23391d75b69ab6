"""Regenerate the example pictures in docs/explain/ (synthetic text only, never a real note).

A tiny BERT is trained for a few seconds on generated clinical-sounding sentences in which one planted
word ("relapse") decides the label, so its explanations have something to find. Then:

- ``notestream explain --text``'s pictures for one generated sentence (attention of one head, all
  heads of the last layer, their mean, rollout, highlighted words);
- ``notestream explain --admission``'s picture for a generated admission of three notes, scored by
  the same model, held in the in-memory store and saved as a snapshot (a saved embedded run).

Run from the repository root: ``OMP_NUM_THREADS=2 python scripts/explain_examples.py [--out docs/explain]``.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import shutil
import tempfile
from pathlib import Path

import torch
from rich.progress import track

from notestream.models.build import build_small_bert, clinical_corpus
from notestream.models.checkpoint import load_model_folder
from notestream.models.classifier import ChunkClassifier
from notestream.models.explain import explain_text, write_explanation
from notestream.models.prep import note_chunks
from notestream.models.spec import Chunking, ModelSpec
from notestream.stream.evidence import admission_evidence, write_evidence
from notestream.stream.store import MemoryRiskStore

PLANT = "relapse"
EXAMPLE = "Patient was given lasix overnight. Family reports relapse of chest pain and will follow up."


def planted_texts(n: int, seed: int) -> tuple[list[str], list[int]]:
    rng = random.Random(seed)
    filler = " ".join(clinical_corpus(80, seed=seed)).lower().split()
    texts, labels = [], []
    for i in range(n):
        words = [rng.choice(filler) for _ in range(rng.randint(10, 22))]
        if i % 2:
            words.insert(rng.randrange(len(words) + 1), PLANT)
        texts.append(" ".join(words))
        labels.append(i % 2)
    return texts, labels


def train(folder: Path) -> Path:
    texts, labels = planted_texts(512, seed=0)
    spec = ModelSpec(max_length=64, chunking=Chunking(kind="words", size=24, min_tail=3))
    build_small_bert(
        folder,
        clinical_corpus(200, seed=0) + texts + [EXAMPLE],
        vocab_size=600,
        hidden=64,
        layers=2,
        heads=4,
        intermediate=128,
        max_length=64,
        seed=0,
        spec=spec,
    )
    loaded = load_model_folder(folder)
    model, tokenizer = loaded.model, loaded.tokenizer
    torch.manual_seed(0)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model.train()
    for _ in track(range(120), description="training the example model"):
        batch = torch.randint(0, len(texts), (32,)).tolist()
        encoded = tokenizer([texts[i] for i in batch], padding=True, return_tensors="pt")
        target = torch.tensor([0.9 * labels[i] + 0.05 for i in batch])  # smoothed: less saturated
        loss = torch.nn.functional.binary_cross_entropy_with_logits(model(**encoded).logits[:, 0], target)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()
    model.save_pretrained(folder)
    return folder


async def admission_snapshot(folder: Path, path: Path) -> MemoryRiskStore:
    loaded = load_model_folder(folder)
    classifier = ChunkClassifier(loaded, "cpu")
    rng = random.Random(7)
    store = MemoryRiskStore()
    for i, n_sentences in enumerate((9, 6, 12)):
        note = " ".join(clinical_corpus(1, seed=100 + i, sentences=(n_sentences, n_sentences)))
        if i != 1:  # the planted word lands in one chunk of notes 0 and 2
            words = note.split()
            words.insert(rng.randrange(len(words)), PLANT)
            note = " ".join(words)
        chunks = note_chunks(note, loaded.spec)
        probs = [float(p) for p in classifier.predict(chunks)]
        await store.apply_note(
            hadm_id=100001, subject_id=1, note_id=f"{3000 + i}", revision=0, is_error=False, chunk_probs=probs
        )
    store.snapshot(path)
    return store


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("docs/explain"))
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        folder = train(Path(tmp) / "model")
        loaded = load_model_folder(folder, attn_implementation="eager")
        result = explain_text(loaded.model, loaded.tokenizer, loaded.spec, EXAMPLE, steps=64)
        print(result.chunk.describe(), f"p = {result.maps.probability:.3f}")
        print("top words:", result.importance.top(5), "delta:", result.importance.delta)
        written = write_explanation(result, Path(tmp) / "text", layer=1, head=0)
        names = {
            "attention_layer1_head0.png": "attention_head.png",
            "attention_layer1_heads.png": "attention_heads.png",
            "attention_layer1_mean.png": "attention_mean.png",
            "attention_rollout.png": "attention_rollout.png",
            "importance.png": "importance.png",
            "importance.html": "importance.html",
        }
        for path in written:
            if path.name in names:
                shutil.copy(path, args.out / names[path.name])
        store = asyncio.run(admission_snapshot(folder, Path(tmp) / "run.json"))
        evidence = asyncio.run(admission_evidence(store, 100001, c=loaded.spec.c))
        for path in write_evidence(evidence, Path(tmp) / "evidence"):
            if path.suffix == ".png":
                shutil.copy(path, args.out / "evidence.png")
        for ch in evidence.chunks:
            print(f"note {ch.note_id} chunk {ch.chunk}: p = {ch.probability:.3f}, share {ch.share:.1%}")
    print(f"wrote the example pictures to {args.out}")


if __name__ == "__main__":
    main()
