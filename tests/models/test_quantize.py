"""`notestream model optimize --int8`: a folder of float weights + a flag, quantized at load, CPU only."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from notestream.cli import _mount, app
from notestream.models.build import clinical_corpus
from notestream.models.checkpoint import load_model_folder
from notestream.models.classifier import ChunkClassifier
from notestream.models.engine import InferenceEngine
from notestream.models.errors import CheckpointError
from notestream.models.fingerprint import model_fingerprint
from notestream.models.optimize import optimize_folder
from notestream.models.prep import note_chunks
from notestream.models.spec import ModelSpec


@pytest.fixture(scope="module")
def int8_dir(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return optimize_folder(tiny_model_dir, tmp_path_factory.mktemp("int8") / "model-int8")


@pytest.fixture(scope="module")
def chunks() -> list[str]:
    return [
        c for note in clinical_corpus(6, seed=11, sentences=(20, 60)) for c in note_chunks(note, ModelSpec())
    ]


def test_the_folder_holds_float_safetensors_and_the_flag(tiny_model_dir: Path, int8_dir: Path) -> None:
    assert ModelSpec.read(int8_dir).quantization == "int8-dynamic"
    assert ModelSpec.read(tiny_model_dir).quantization == "none"
    names = {p.name for p in int8_dir.iterdir()}
    assert "model.safetensors" in names
    assert not names & {"pytorch_model.bin", "model.pt", "model.pkl"}
    assert (int8_dir / "model.safetensors").read_bytes() == (
        tiny_model_dir / "model.safetensors"
    ).read_bytes()
    provenance = json.loads((int8_dir / "notestream.json").read_text())["provenance"]
    assert provenance["optimized_from"] == model_fingerprint(tiny_model_dir)


def test_its_fingerprint_differs_from_the_float_model(tiny_model_dir: Path, int8_dir: Path) -> None:
    float_print, int8_print = model_fingerprint(tiny_model_dir), model_fingerprint(int8_dir)
    assert float_print.split("@")[1] != int8_print.split("@")[1]


def test_loading_quantizes_the_linear_layers_and_keeps_the_probabilities(
    tiny_model_dir: Path, int8_dir: Path, chunks: list[str]
) -> None:
    from torch.ao.nn.quantized.dynamic import Linear as DynamicLinear

    quantized = load_model_folder(int8_dir)
    kinds = {type(m) for m in quantized.model.modules()}
    assert DynamicLinear in kinds
    plain = load_model_folder(tiny_model_dir)
    assert DynamicLinear not in {type(m) for m in plain.model.modules()}
    p_int8 = ChunkClassifier(quantized, "cpu").predict(chunks)
    p_float = ChunkClassifier(plain, "cpu").predict(chunks)
    assert np.all(np.isfinite(p_int8))
    assert not np.array_equal(p_int8, p_float)  # really another computation
    assert float(np.max(np.abs(p_int8 - p_float))) < 0.02


def test_the_engine_serves_it_unchanged(int8_dir: Path, chunks: list[str]) -> None:
    async def run() -> list[float]:
        async with InferenceEngine(int8_dir, devices=["cpu"]) as engine:
            return await engine.score(chunks)

    probs = asyncio.run(run())
    direct = ChunkClassifier(load_model_folder(int8_dir), "cpu").predict(chunks)
    # each chunk runs alone (dynamic int8 would scale a batch's activations together): the engine's
    # batches give exactly what one-by-one prediction gives
    assert probs == direct.tolist()


def test_a_gpu_is_refused_with_a_clear_error(int8_dir: Path) -> None:
    with pytest.raises(CheckpointError, match="CPU only"):
        load_model_folder(int8_dir, "cuda:0")


def test_optimize_refuses_a_used_folder_and_a_quantized_source(int8_dir: Path, tiny_model_dir: Path) -> None:
    with pytest.raises(CheckpointError, match="already exists"):
        optimize_folder(tiny_model_dir, int8_dir)
    with pytest.raises(CheckpointError, match="already quantized"):
        optimize_folder(int8_dir, int8_dir.parent / "again")


def test_the_cli_writes_the_folder(tiny_model_dir: Path, tmp_path: Path) -> None:
    _mount()
    out = tmp_path / "cli-int8"
    result = CliRunner().invoke(app, ["model", "optimize", str(tiny_model_dir), str(out), "--int8"])
    assert result.exit_code == 0, result.output
    line = json.loads(result.stdout.strip().splitlines()[-1])
    assert line["quantization"] == "int8-dynamic"
    assert line["fingerprint"] == model_fingerprint(out)
    assert ModelSpec.read(out).quantization == "int8-dynamic"


def test_explain_text_runs_on_the_float_weights_of_an_int8_folder(int8_dir: Path, tmp_path: Path) -> None:
    note = tmp_path / "note.txt"
    note.write_text(clinical_corpus(1, seed=4, sentences=(20, 40))[0], encoding="utf-8")
    _mount()
    result = CliRunner().invoke(
        app,
        [
            "explain",
            "--model",
            str(int8_dir),
            "--text",
            str(note),
            "--json",
            "--steps",
            "4",
            "--device",
            "cpu",
        ],
    )
    assert result.exit_code == 0, result.output
    assert "importance" in result.stdout or "weights" in result.stdout
