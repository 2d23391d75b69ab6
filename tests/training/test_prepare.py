"""notestream.training.prepare against a plain pandas transcription of the reference, plus splits and manifest."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from notestream.training.errors import CohortError
from notestream.training.mimic import Source
from notestream.training.prepare import PrepareConfig, prepare
from notestream.training.reference_pandas import reference_prepare
from notestream.training.synth import write_mimic_iii, write_mimic_iv


@pytest.fixture(scope="module")
def mimic_iii(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("prep_synth")
    write_mimic_iii(out, 400, seed=11, notes_scale=0.3, words_scale=0.5, readmit_rate=0.4)
    return out


@pytest.mark.parametrize("notes", ["discharge", "early-3d", "early-2d"])
def test_reference_mode_equals_pandas_reference(mimic_iii: Path, tmp_path: Path, notes: str) -> None:
    result = prepare(Source.open(mimic_iii=mimic_iii), tmp_path, PrepareConfig(notes=notes), progress=False)  # type: ignore[arg-type]
    expected = reference_prepare(mimic_iii, notes)
    for name, frame in expected.items():
        got = pd.read_csv(tmp_path / f"{name}.csv")
        assert len(got) == len(frame) > 0, name
        pd.testing.assert_frame_equal(got, frame, check_dtype=False)
    if notes == "early-2d":
        assert not (tmp_path / "train.csv").exists()
    cohort = pd.read_csv(tmp_path / "cohort.csv")
    assert list(cohort.columns) == ["HADM_ID", "SUBJECT_ID", "OUTPUT_LABEL", "DAYS_NEXT_ADMIT", "DURATION"]
    assert result.manifest["cohort"]["admissions"] == len(cohort)


def test_patient_split_has_no_shared_patients_and_manifest_hashes(mimic_iii: Path, tmp_path: Path) -> None:
    config = PrepareConfig(notes="early-3d", mode="hours", split="patient", seed=3)
    result = prepare(Source.open(mimic_iii=mimic_iii), tmp_path, config, progress=False)
    cohort = pd.read_csv(tmp_path / "cohort.csv").set_index("HADM_ID")
    subjects = {
        name: set(cohort.loc[pd.read_csv(tmp_path / f"{name}.csv")["ID"].unique(), "SUBJECT_ID"])
        for name in ("train", "val", "test")
    }
    assert not subjects["train"] & subjects["test"]
    assert not subjects["train"] & subjects["val"]
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert manifest["manifest_hash"] == result.manifest["manifest_hash"]
    assert manifest["spec"]["window"] == {"kind": "hours", "value": 72.0}
    again = prepare(Source.open(mimic_iii=mimic_iii), tmp_path / "again", config, progress=False)
    assert again.manifest["files"] == result.manifest["files"]  # deterministic outputs


def test_mimic_iv_and_cli(tmp_path: Path) -> None:
    from notestream.cli import app
    from notestream.training.cli import register

    if not any(g.name == "train" for g in app.registered_groups):
        register(app)
    runner = CliRunner()
    res = runner.invoke(
        app,
        [
            "synth",
            "--out",
            str(tmp_path / "iv"),
            "--format",
            "mimic-iv",
            "--patients",
            "200",
            "--readmit-rate",
            "0.5",
            "--notes-scale",
            "0.3",
            "--words-scale",
            "0.3",
        ],
    )
    assert res.exit_code == 0, res.output
    res = runner.invoke(
        app,
        [
            "train",
            "prepare",
            "--mimic-iv",
            str(tmp_path / "iv"),
            "--notes",
            "early-3d",
            "--mode",
            "hours",
            "--out",
            str(tmp_path / "out"),
        ],
    )
    assert res.exit_code == 0, res.output
    train = pd.read_csv(tmp_path / "out" / "train.csv")
    assert set(train.columns) == {"ID", "TEXT", "Label"}
    assert set(train["Label"]) == {0, 1}
    assert not train["TEXT"].str.contains("___").any()  # placeholders cleaned away ('__' pairs)


def test_write_mimic_iv_source_is_found(tmp_path: Path) -> None:
    write_mimic_iv(tmp_path, 20, seed=1, notes_scale=0.2)
    source = Source.open(mimic_iv=tmp_path)
    assert [p.name for p in source.notes] == ["discharge.csv.gz", "radiology.csv.gz"]


def test_baseline_command_reports_bag_of_words(mimic_iii: Path, tmp_path: Path) -> None:
    from notestream.cli import app
    from notestream.training.cli import register

    prepare(
        Source.open(mimic_iii=mimic_iii), tmp_path / "data", PrepareConfig(notes="discharge"), progress=False
    )
    if not any(g.name == "train" for g in app.registered_groups):
        register(app)
    res = CliRunner().invoke(
        app, ["train", "baseline", "--data", str(tmp_path / "data"), "--out", str(tmp_path / "bl")]
    )
    assert res.exit_code == 0, res.output
    report = json.loads((tmp_path / "bl" / "report.json").read_text())
    assert report["baseline"]["auroc"] > 0.6
    assert (tmp_path / "bl" / "roc.png").is_file()


@pytest.mark.parametrize("task", ["mortality", "prolonged_stay"])
def test_further_tasks_use_early_notes_of_admissions_still_in_hospital(
    mimic_iii: Path, tmp_path: Path, task: str
) -> None:
    config = PrepareConfig(task=task, notes="early-2d", mode="hours", split="patient")  # type: ignore[arg-type]
    result = prepare(Source.open(mimic_iii=mimic_iii), tmp_path, config, progress=False)
    cohort = pd.read_csv(tmp_path / "cohort.csv")
    assert (cohort["DURATION"] >= 2).all()  # the outcome is still unknown when the window closes
    assert result.manifest["spec"]["task"] == task
    assert 0 < cohort["OUTPUT_LABEL"].sum() < len(cohort)
    if task == "prolonged_stay":
        assert ((cohort["DURATION"] > 7) == (cohort["OUTPUT_LABEL"] == 1)).all()
    with pytest.raises(CohortError, match="early notes"):
        PrepareConfig(task=task, notes="discharge").window()  # type: ignore[arg-type]


def test_natural_prevalence_keeps_the_reference_parts_as_balanced_subsets(
    mimic_iii: Path, tmp_path: Path
) -> None:
    config = PrepareConfig(notes="discharge", balance=False)
    result = prepare(Source.open(mimic_iii=mimic_iii), tmp_path, config, progress=False)
    expected = reference_prepare(mimic_iii, "discharge")
    for name, reference in (("val_balanced", "val"), ("test_balanced", "test")):
        got = pd.read_csv(tmp_path / f"{name}.csv")
        pd.testing.assert_frame_equal(got, expected[reference], check_dtype=False)
    # this small cohort has too few unused negatives: some of the reference's extra training negatives
    # moved to val and test (a full MIMIC cohort has plenty; its training file stays the reference's)
    train = set(pd.read_csv(tmp_path / "train.csv")["ID"])
    assert train < set(expected["train"]["ID"])
    assert any("moved to" in note for note in result.manifest["split"]["notes"])
    cohort = pd.read_csv(tmp_path / "cohort.csv")
    prevalence = cohort["OUTPUT_LABEL"].mean()
    assert prevalence < 0.4  # the synthetic cohort is far from balanced
    counts = result.manifest["counts"]
    for name in ("val", "test"):
        labels = pd.read_csv(tmp_path / f"{name}.csv").groupby("ID")["Label"].min()
        balanced = set(pd.read_csv(tmp_path / f"{name}_balanced.csv")["ID"])
        assert balanced < set(labels.index)
        # the positives of the balanced part, and the cohort's share of negatives beside them
        assert labels.sum() == len(balanced) // 2
        assert abs(labels.mean() - prevalence) < 1.5 / len(labels) + 0.02
        assert counts[name]["prevalence"] == round(labels.mean(), 4)
        assert counts[f"{name}_balanced"]["prevalence"] == 0.5
    assert result.manifest["balanced"] is False
    demo = pd.read_csv(tmp_path / "demographics.csv")
    assert set(demo["HADM_ID"]) == set(cohort["HADM_ID"])
    assert set(demo["sex"]) == {"F", "M"}
    assert {"white", "black"} <= set(demo["ethnicity"])
    assert demo["insurance"].nunique() > 2
    assert set(demo["age_band"]) <= {"0-17", "18-44", "45-64", "65-79", "80+"}
    assert "demographics.csv" in result.manifest["files"]
    assert PrepareConfig(mode="hours").balanced is False
    assert PrepareConfig(mode="hours", balance=True).balanced is True


def test_prolonged_stay_and_mortality_work_with_the_default_split(mimic_iii: Path, tmp_path: Path) -> None:
    # prolonged stay over 3 days: positives outnumber negatives, which the reference split balances too
    config = PrepareConfig(task="prolonged_stay", notes="early-2d", los_days=3.0)
    result = prepare(Source.open(mimic_iii=mimic_iii), tmp_path / "los", config, progress=False)
    cohort = pd.read_csv(tmp_path / "los" / "cohort.csv")
    assert ((cohort["DURATION"] > 3) == (cohort["OUTPUT_LABEL"] == 1)).all()
    assert cohort["OUTPUT_LABEL"].mean() > 0.5
    assert result.manifest["spec"]["label"] == "hospital stay longer than 3 days"
    for name in ("train", "val", "test"):
        labels = pd.read_csv(tmp_path / "los" / f"{name}.csv").groupby("ID")["Label"].min()
        assert labels.mean() == pytest.approx(0.5, abs=0.15), name
    # mortality on 2-day notes is its own task: train and val files too (only readmission borrows 3-day's)
    prepare(
        Source.open(mimic_iii=mimic_iii),
        tmp_path / "mort",
        PrepareConfig(task="mortality", notes="early-2d"),
        progress=False,
    )
    assert all((tmp_path / "mort" / f"{n}.csv").is_file() for n in ("train", "val", "test"))
    # the reference mode joins an admission's early notes before chunking, and says so
    assert PrepareConfig(notes="early-3d").spec().notes_joined
    assert not PrepareConfig(notes="early-3d", mode="hours").spec().notes_joined
    assert not PrepareConfig(notes="discharge").spec().notes_joined


def test_token_window_datasets_chunk_as_the_model_is_served(
    mimic_iii: Path, tiny_model_dir: Path, tmp_path: Path
) -> None:
    from transformers import AutoTokenizer

    from notestream.models.prep import note_chunks
    from notestream.training.errors import TrainRunError
    from notestream.training.finetune import finetune
    from notestream.training.run_config import FinetuneConfig

    config = PrepareConfig(
        notes="early-3d",
        mode="hours",
        chunking="tokens",
        tokenizer=str(tiny_model_dir),
        max_length=64,
        stride=48,
    )
    result = prepare(Source.open(mimic_iii=mimic_iii), tmp_path, config, progress=False)
    spec = PrepareConfig(**{**config.__dict__}).spec()
    assert result.manifest["spec"]["chunking"]["kind"] == "tokens"
    assert result.manifest["spec"]["max_length"] == 64
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir, local_files_only=True)
    chunks = pd.read_csv(tmp_path / "chunks.csv")
    assert chunks.groupby("ID").size().max() > 1
    lengths = [len(tokenizer(t, add_special_tokens=False)["input_ids"]) for t in chunks["TEXT"].head(200)]
    assert max(lengths) <= 62 + 2  # a window may re-tokenize a little differently at its first token
    assert note_chunks(chunks["TEXT"].iloc[0], spec, tokenizer)  # the same function the stream uses
    with pytest.raises(TrainRunError, match="--max-length 64"):
        finetune(
            tmp_path / "train.csv",
            tmp_path / "val.csv",
            tiny_model_dir,
            tmp_path / "model",
            config=FinetuneConfig(max_length=128, progress=False),
        )
    with pytest.raises(CohortError, match="--tokenizer"):
        prepare(
            Source.open(mimic_iii=mimic_iii), tmp_path / "x", PrepareConfig(chunking="tokens"), progress=False
        )
