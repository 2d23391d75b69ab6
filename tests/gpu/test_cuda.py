"""The CUDA paths (marked ``gpu``; skipped where torch sees no CUDA device). Run by benchmarks/gpu.sh.

Classifier and engine on ``cuda:0`` in bf16 autocast against the float CPU model, one engine replica per
visible device, an overloaded engine on GPU, a failing batch isolated on GPU, and a few fine-tuning
steps with bf16. ``NOTESTREAM_TEST_DEVICE=cpu`` runs the same tests on CPU (the dry run of gpu.sh
checks their logic on a machine without a GPU).
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from notestream.models.build import clinical_corpus
from notestream.models.checkpoint import load_model_folder
from notestream.models.classifier import ChunkClassifier
from notestream.models.engine import InferenceEngine, resolve_devices
from notestream.models.errors import BatchFailed, EngineOverloaded
from notestream.models.prep import note_chunks
from notestream.models.spec import ModelSpec

DEVICE = os.environ.get("NOTESTREAM_TEST_DEVICE", "cuda:0")
pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(
        DEVICE.startswith("cuda") and not torch.cuda.is_available(),
        reason="needs a CUDA device (benchmarks/gpu.sh)",
    ),
]


@pytest.fixture(scope="module")
def chunks() -> list[str]:
    return [c for n in clinical_corpus(8, seed=3, sentences=(20, 80)) for c in note_chunks(n, ModelSpec())]


def test_the_classifier_runs_on_cuda_in_bf16_close_to_cpu_float(
    tiny_model_dir: Path, chunks: list[str]
) -> None:
    gpu = ChunkClassifier(load_model_folder(tiny_model_dir, DEVICE), DEVICE)
    assert gpu.bf16 == (DEVICE.startswith("cuda") and torch.cuda.is_bf16_supported())
    cpu = ChunkClassifier(load_model_folder(tiny_model_dir), "cpu")
    p_gpu, p_cpu = gpu.predict(chunks), cpu.predict(chunks)
    assert np.all(np.isfinite(p_gpu))
    assert float(np.max(np.abs(p_gpu - p_cpu))) < 0.02


def test_the_engine_starts_one_replica_per_visible_device(tiny_model_dir: Path, chunks: list[str]) -> None:
    async def run() -> tuple[list[float], dict[str, object], list[str]]:
        async with InferenceEngine(tiny_model_dir, devices=["auto"]) as engine:
            probs = await asyncio.gather(*(engine.score([c]) for c in chunks))
            return [p[0] for p in probs], engine.stats(), [str(c.device) for c in engine.classifiers]

    probs, stats, devices = asyncio.run(run())
    assert devices == resolve_devices(["auto"])
    assert devices[0] == ("cuda:0" if DEVICE.startswith("cuda") else "cpu")
    assert stats["workers"] == len(devices)
    assert len(probs) == len(chunks)
    assert all(0.0 <= p <= 1.0 for p in probs)


def test_an_overloaded_engine_on_gpu_says_so(tiny_model_dir: Path, chunks: list[str]) -> None:
    async def run() -> None:
        engine = InferenceEngine(tiny_model_dir, devices=[DEVICE], queue_size=2, overload_timeout_s=0.0)
        async with engine:
            await asyncio.gather(*(engine.score(chunks) for _ in range(20)))

    with pytest.raises(EngineOverloaded):
        asyncio.run(run())


class _FailsOnMarker(ChunkClassifier):
    """Fails any batch holding a chunk of exactly 7 tokens (a planted poison), like a real CUDA error."""

    def forward_ids(self, batch):  # type: ignore[no-untyped-def]
        if any(len(ids) == 7 for ids in batch):
            raise RuntimeError("CUDA error: planted failure")
        return super().forward_ids(batch)


def test_a_failing_batch_on_gpu_fails_only_its_requests(tiny_model_dir: Path, chunks: list[str]) -> None:
    clf = _FailsOnMarker(load_model_folder(tiny_model_dir, DEVICE), DEVICE)
    poison = [clf.tokenizer.cls_token_id, 5, 6, 7, 8, 9, clf.tokenizer.sep_token_id]

    async def run() -> tuple[list[float], BaseException | None]:
        async with InferenceEngine([clf]) as engine:
            good = await engine.score_ids(clf.encode(chunks[:2]), isolated=True)
            try:
                await engine.score_ids([poison], isolated=True)
            except BatchFailed as exc:
                return good + await engine.score_ids(clf.encode(chunks[2:4]), isolated=True), exc
            return good, None

    probs, error = asyncio.run(run())
    assert isinstance(error, BatchFailed)
    assert len(probs) == 4  # the engine kept serving after the failed batch


def test_fine_tuning_a_few_steps_in_bf16(tmp_path: Path) -> None:
    from notestream.models.build import build_small_bert
    from notestream.training.finetune import finetune
    from notestream.training.run_config import FinetuneConfig

    rows = [
        (
            100 + i // 2,
            " ".join(["dialysis", "missed", "alone"][(i + k) % 3] for k in range(10))
            if i % 2
            else " ".join(["stable", "home", "family"][(i + k) % 3] for k in range(10)),
            i % 2,
        )
        for i in range(64)
    ]
    pd.DataFrame(rows, columns=["ID", "TEXT", "Label"]).to_csv(tmp_path / "train.csv", index=False)
    build_small_bert(
        tmp_path / "base", [r[1] for r in rows], vocab_size=200, hidden=32, layers=1, heads=2, max_length=32
    )
    cfg = FinetuneConfig(
        max_steps=6, batch_size=16, lr=1e-3, max_length=32, bf16=DEVICE.startswith("cuda"), progress=False
    )
    out = finetune(tmp_path / "train.csv", None, tmp_path / "base", tmp_path / "model", config=cfg)
    assert ModelSpec.read(out).provenance["finetune"]["bf16"] is DEVICE.startswith("cuda")
    assert ModelSpec.read(out).provenance["steps"] == 6
