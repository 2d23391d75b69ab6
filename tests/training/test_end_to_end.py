"""synth -> prepare -> pretrain (a few steps) -> finetune -> evaluate, on a small synthetic cohort."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from notestream.cli import app
from notestream.models.spec import ModelSpec
from notestream.training.cli import register
from notestream.training.finetune import finetune
from notestream.training.pretrain import corpus_from_dataset, pretrain
from notestream.training.run_config import FinetuneConfig, PretrainConfig

pytestmark = pytest.mark.slow


def _run(args: list[str]) -> str:
    if not any(c.name == "train" for c in app.registered_groups):
        register(app)
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output + repr(result.exception)
    return result.stdout


def test_synth_prepare_pretrain_finetune_evaluate(tmp_path: Path) -> None:
    mimic, data, pre, model, report = (tmp_path / n for n in ("mimic", "data", "pre", "model", "report"))
    _run(
        [
            "synth",
            "--out",
            str(mimic),
            "--patients",
            "700",
            "--seed",
            "4",
            "--signal",
            "2",
            "--readmit-rate",
            "0.6",
            "--mean-admissions",
            "3",
            "--notes-scale",
            "0.2",
            "--words-scale",
            "0.3",
        ]
    )
    _run(
        [
            "train",
            "prepare",
            "--mimic-iii",
            str(mimic),
            "--notes",
            "early-3d",
            "--mode",
            "hours",
            "--chunk-words",
            "48",
            "--out",
            str(data),
        ]
    )
    manifest = json.loads((data / "manifest.json").read_text())
    assert manifest["counts"]["test"]["admissions"] >= 40

    # Pre-training sees no evaluation admission, and runs a few MLM + NSP steps.
    assert corpus_from_dataset(data, tmp_path / "corpus.txt") > 0
    held_out = set(pd.read_csv(data / "test.csv")["ID"]) | set(pd.read_csv(data / "val.csv")["ID"])
    kept = set(pd.read_csv(data / "chunks.csv")["ID"]) - held_out
    assert held_out
    assert kept
    pretrain(
        tmp_path / "corpus.txt",
        pre,
        config=PretrainConfig(
            max_steps=3,
            batch_size=8,
            vocab_size=1500,
            hidden=64,
            layers=2,
            heads=2,
            max_length=64,
            progress=False,
        ),
    )
    assert json.loads((pre / "pretrain.json").read_text())["steps"] == 3

    finetune(
        data / "train.csv",
        data / "val.csv",
        pre,
        model,
        config=FinetuneConfig(
            max_steps=90, batch_size=16, lr=2e-3, max_length=64, progress=False, logging_steps=1000
        ),
    )
    spec = ModelSpec.read(model)
    assert spec.window.kind == "hours"
    assert spec.threshold is not None
    assert spec.metrics["val"]["auroc"] is not None
    assert spec.provenance["data_manifest_hash"] == manifest["manifest_hash"]

    out = json.loads(
        _run(["train", "evaluate", "--model", str(model), "--data", str(data), "--out", str(report)])
    )
    assert out["model"]["auroc"] > 0.7, out
    assert out["baseline"]["auroc"] > 0.7, out
    written = json.loads((report / "report.json").read_text())
    assert written["baseline"]["name"].startswith("bag-of-words")
    assert (report / "roc.png").stat().st_size > 1000
    assert (report / "pr.png").stat().st_size > 1000

    # The chunk-score mode gives the same admission metrics from the scores alone.
    metrics = json.loads(
        _run(
            [
                "train",
                "evaluate",
                "--chunk-scores",
                str(report / "chunk_scores.csv"),
                "--out",
                str(tmp_path / "cs"),
            ]
        )
    )
    saved = json.loads((tmp_path / "cs" / "metrics.json").read_text())
    assert {"auroc", "auprc", "average_precision", "rp80"} <= set(saved)
    assert metrics["auroc"] == pytest.approx(out["model"]["auroc"])
