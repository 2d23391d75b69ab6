"""`train evaluate` at natural prevalence: CIs, calibrator, alert policy, and the one calibrated risk
that the worker's updates, `notestream score` and the stored calibrator agree on."""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import given
from hypothesis import strategies as st

from notestream.models.calibration import Calibrator, calibrated_risk, fit_calibrator
from notestream.models.engine import InferenceEngine
from notestream.models.scoring import NoteRecord, score_notes
from notestream.models.spec import SPEC_FILE, ModelSpec
from notestream.stream.events import NoteEvent
from notestream.stream.pipeline import Pipeline
from notestream.stream.store import MemoryRiskStore
from notestream.training.evaluate import evaluate_model
from notestream.training.metrics import bootstrap_ci, calibration_metrics, choose_threshold, operating_points


@given(
    st.lists(st.tuples(st.integers(0, 1), st.floats(0, 1)), min_size=2, max_size=80).filter(
        lambda pairs: len({y for y, _ in pairs}) == 2
    ),
    st.floats(0.05, 1.0),
    st.floats(1.0, 100.0),
)
def test_policies_meet_their_targets_on_the_data_they_are_chosen_on(
    pairs: list[tuple[int, float]], share: float, budget: float
) -> None:
    y = np.array([p[0] for p in pairs])
    s = np.array([p[1] for p in pairs])
    points = operating_points(y, s)
    sens = choose_threshold(y, s, "sensitivity", share)
    assert sens.recall is not None
    assert sens.recall >= share
    # no higher threshold reaches the recall: it is the fewest alerts that do
    assert (points.loc[points["threshold"] > sens.threshold, "recall"] < share).all()
    spent = choose_threshold(y, s, "budget", budget)
    if spent.met:
        assert spent.alerts_per_100 <= budget
        assert (points.loc[points["threshold"] < spent.threshold, "alerts_per_100"] > budget).all()
    precise = choose_threshold(y, s, "precision", share)
    if precise.met:
        assert precise.precision is not None
        assert precise.precision >= share
    else:
        assert (points["precision"] < share).all()
    flagged = s >= sens.threshold
    assert sens.alerts_per_100 == pytest.approx(100 * flagged.mean())
    assert sens.recall == pytest.approx(flagged[y == 1].mean())


def test_calibration_fixes_a_score_that_overstates_risk() -> None:
    rng = np.random.default_rng(3)
    score = rng.random(1500)
    y = (rng.random(1500) < 0.3 * score**2).astype(int)  # ~10% prevalence; the score says ~50%
    raw = calibration_metrics(y, score)
    for method in ("isotonic", "platt"):
        cal = fit_calibrator(y, score, method=method)  # type: ignore[arg-type]
        fitted = calibration_metrics(y, cal.apply_many(score))
        assert fitted["ece"] < raw["ece"] / 5
        assert fitted["brier"] < raw["brier"]
        # stored as plain JSON numbers and read back to the same map
        again = Calibrator.model_validate(json.loads(cal.model_dump_json()))
        assert again.apply_many(score) == pytest.approx(cal.apply_many(score))
    low, high = bootstrap_ci(y, score, n_boot=30)["auroc"]  # type: ignore[misc]
    assert low < high


def _chunks(texts: list[str], n_admissions: int, positives: int, seed: int) -> pd.DataFrame:
    rng = random.Random(seed)
    rows = []
    for hadm in range(n_admissions):
        for _ in range(rng.randint(1, 3)):
            rows.append({"ID": 1000 + hadm, "TEXT": rng.choice(texts), "Label": int(hadm < positives)})
    return pd.DataFrame(rows)


async def test_evaluate_writes_calibrator_policy_and_cis_and_everyone_applies_one_risk(
    tiny_model_dir: Path, tiny_corpus: list[str], tmp_path: Path
) -> None:
    model = Path(shutil.copytree(tiny_model_dir, tmp_path / "model"))
    texts = [t for t in tiny_corpus if len(t.split()) > 15]
    val, test = tmp_path / "val.csv", tmp_path / "test.csv"
    _chunks(texts, 64, 8, seed=1).to_csv(val, index=False)  # 12.5% prevalence
    test_chunks = _chunks(texts, 50, 5, seed=2)
    test_chunks.to_csv(test, index=False)
    balanced_ids = list(range(1000, 1010))  # the 5 positives and 5 negatives
    test_chunks[test_chunks["ID"].isin(balanced_ids)].to_csv(tmp_path / "test_balanced.csv", index=False)
    demographics = tmp_path / "demographics.csv"
    ids = sorted(set(test_chunks["ID"]))
    pd.DataFrame(
        {
            "HADM_ID": ids,
            "sex": ["F" if i % 2 else "M" for i in ids],
            "age_band": "45-64",
            "insurance": "Medicare",
            "ethnicity": "white",
        }
    ).to_csv(demographics, index=False)
    report = evaluate_model(
        model,
        test,
        tmp_path / "report",
        val_csv=val,
        balanced_test_csv=tmp_path / "test_balanced.csv",
        balanced=False,
        policy="budget",
        target=20,
        n_boot=50,
        batch_size=16,
        demographics_csv=demographics,
    )

    stored = json.loads((model / SPEC_FILE).read_text())
    assert stored["calibration"]["method"] == "isotonic"
    assert all(isinstance(v, float) for v in stored["calibration"]["x"] + stored["calibration"]["y"])
    assert stored["calibration"]["fitted_on"]["n"] == 64
    policy = stored["alert_policy"]
    assert (policy["kind"], policy["target"], policy["n"]) == ("budget", 20, 64)
    assert policy["alerts_per_100"] <= 20
    assert stored["threshold"] == policy["threshold"]
    model_metrics = report["model"]
    assert (model_metrics["n"], model_metrics["prevalence"]) == (50, 0.1)
    assert report["model_balanced"]["n"] == 10
    assert report["model_balanced"]["prevalence"] == 0.5
    for name in ("auroc", "auprc", "average_precision", "rp80"):
        low, high = model_metrics["ci"][name]
        assert low <= high
    assert {"brier", "ece", "bins"} <= set(model_metrics["calibration"])
    assert model_metrics["at_threshold"]["alerts_per_100"] is not None
    assert (tmp_path / "report" / "reliability.png").stat().st_size > 1000
    sexes = report["subgroups"]["groups"]["sex"]
    assert (sexes["F"]["n"], sexes["M"]["n"]) == (25, 25)
    assert sexes["F"]["prevalence"] + sexes["M"]["prevalence"] == pytest.approx(0.2)
    assert "ci" in sexes["F"]
    assert (tmp_path / "report" / "subgroups.png").stat().st_size > 1000

    # one calibrated risk: the worker's update, `notestream score` and the spec's calibrator agree
    spec = ModelSpec.read(model)
    engine = InferenceEngine(model, devices=["cpu"], max_wait_ms=1.0)
    await engine.start()
    try:
        note = NoteEvent(note_id="1", subject_id=7, hadm_id=5, text=texts[0], category="Nursing")
        [update] = (await Pipeline(engine, MemoryRiskStore(), spec, model="model").process([note])).updates
        run = await score_notes(
            engine,
            [
                NoteRecord(
                    subject_id=7,
                    hadm_id=5,
                    category="Nursing",
                    chart_date=None,
                    chart_time=None,
                    text=texts[0],
                )
            ],
        )
    finally:
        await engine.close()
    assert update.risk is not None
    assert update.risk == calibrated_risk(spec.calibration, update.score)
    assert run.scores[0].risk == pytest.approx(update.risk)
    assert run.scores[0].score == pytest.approx(update.score)
    # and the model card says all of it
    from typer.testing import CliRunner

    from notestream.models.cli import model_app

    result = CliRunner().invoke(model_app, ["card", str(model), "--report", str(tmp_path / "report")])
    assert result.exit_code == 0, result.output
    card = (model / "MODEL_CARD.md").read_text()
    auroc = model_metrics["auroc"]
    low, high = model_metrics["ci"]["auroc"]
    assert f"| test (natural prevalence) | 50 | 0.100 | {auroc:.3f} ({low:.3f}-{high:.3f}) |" in card
    assert "| sex | F | 25 |" in card
    assert "at most 20 alerts per 100 admissions" in card
    assert "not a diagnostic device" in card
    assert "isotonic calibrator" in card
