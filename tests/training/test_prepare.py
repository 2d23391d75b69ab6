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
    res = runner.invoke(app, ["synth", "--out", str(tmp_path / "iv"), "--format", "mimic-iv", "--patients",
                              "200", "--readmit-rate", "0.5", "--notes-scale", "0.3", "--words-scale", "0.3"])  # fmt: skip
    assert res.exit_code == 0, res.output
    res = runner.invoke(app, ["train", "prepare", "--mimic-iv", str(tmp_path / "iv"), "--notes", "early-3d",
                              "--mode", "hours", "--out", str(tmp_path / "out")])  # fmt: skip
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
