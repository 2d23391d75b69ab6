"""Offline scoring: notes -> per-admission scores, through the engine, and `notestream score`."""

from __future__ import annotations

import csv
import shutil
from collections.abc import Sequence
from dataclasses import replace
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from typer.testing import CliRunner

from notestream.cli import _mount, app
from notestream.models.aggregate import admission_score
from notestream.models.build import clinical_corpus
from notestream.models.checkpoint import load_model_folder
from notestream.models.classifier import ChunkClassifier
from notestream.models.engine import InferenceEngine
from notestream.models.errors import ModelsError
from notestream.models.prep import note_chunks
from notestream.models.scoring import SCORE_COLUMNS, NoteRecord, score_notes, write_failures
from notestream.models.spec import ModelSpec, Window

ADMIT = {101: datetime(2150, 1, 1, 10, 0), 102: datetime(2150, 2, 1, 22, 0), 103: datetime(2150, 3, 1, 8, 0)}


@pytest.fixture(scope="module")
def notes() -> list[NoteRecord]:
    texts = clinical_corpus(12, seed=21, sentences=(10, 90))
    rows = []
    for i, text in enumerate(texts):
        hadm = [101, 102, 103][i % 3]
        when = ADMIT[hadm] + timedelta(hours=10 * i)
        category = "Discharge summary" if i % 4 == 0 else "Nursing"
        rows.append(NoteRecord(7 + hadm, hadm, category, when.date(), when, text, is_error=False))
    rows.append(NoteRecord(208, 101, "Nursing", date(2150, 1, 1), None, texts[0] + " error", is_error=True))
    rows.append(NoteRecord(208, None, "Radiology", date(2150, 1, 1), None, texts[1], is_error=False))
    rows.append(NoteRecord(209, 103, "Nursing", date(2150, 3, 1), None, "too short to chunk", is_error=False))
    return rows


def expected_scores(
    notes: list[NoteRecord], spec: ModelSpec, clf: ChunkClassifier
) -> dict[int, tuple[float, int, int]]:
    """The same computation written plainly: window, chunks per note, one batch predict, reference score."""
    per: dict[int, tuple[list[str], int]] = {}
    for n in notes:
        if n.is_error or n.hadm_id is None:
            continue
        if not spec.window.admits(
            admit=ADMIT[n.hadm_id], chart_time=n.chart_time, chart_date=n.chart_date, category=n.category
        ):
            continue
        chunks = note_chunks(n.text, spec)
        if chunks:
            texts, k = per.get(n.hadm_id, ([], 0))
            per[n.hadm_id] = (texts + chunks, k + 1)
    return {
        h: (admission_score(clf.predict(texts).tolist(), spec.c), len(texts), k)
        for h, (texts, k) in per.items()
    }


@pytest.mark.parametrize(
    "window",
    [Window(), Window(kind="discharge"), Window(kind="hours", value=60), Window(kind="days", value=2)],
)
async def test_scores_equal_the_plain_computation(
    tiny_model_dir: Path, notes: list[NoteRecord], window: Window
) -> None:
    clf = ChunkClassifier(load_model_folder(tiny_model_dir))
    spec = ModelSpec(window=window)
    seen: list[int] = []
    async with InferenceEngine(clf, max_batch_size=8, max_wait_ms=1) as engine:
        run = await score_notes(
            engine, notes, spec=spec, admit_times=ADMIT, notes_in_flight=3, on_note=seen.append
        )
    want = expected_scores(notes, spec, clf)
    assert {s.hadm_id for s in run.scores} == set(want)
    for s in run.scores:
        score, n_chunks, n_notes = want[s.hadm_id]
        assert s.score == pytest.approx(score, abs=1e-6)
        assert (s.n_chunks, s.n_notes, s.subject_id) == (n_chunks, n_notes, 7 + s.hadm_id)
        assert s.p_max <= 1
        assert s.p_mean <= s.p_max
    assert run.skipped["is_error"] == 1
    assert run.skipped["no_admission"] == 1
    assert len(seen) == run.notes_read == len(notes)
    assert sum(seen) == run.chunks


class FailsOnWord(ChunkClassifier):
    """The real classifier, whose batches fail when one of their chunks holds ``word``."""

    def __init__(self, loaded: Any, word: str) -> None:
        super().__init__(loaded)
        self.poison = self.tokenizer.convert_tokens_to_ids(word)
        self.failed_batches = 0

    def forward_ids(self, batch: Sequence[Sequence[int]]) -> np.ndarray:
        if any(self.poison in row for row in batch):
            self.failed_batches += 1
            raise RuntimeError("injected failure")
        return super().forward_ids(batch)


def unused_word(clf: ChunkClassifier, notes: list[NoteRecord]) -> str:
    """A whole-word vocabulary entry that none of ``notes`` uses."""
    used = {
        t for n in notes for chunk in note_chunks(n.text, ModelSpec()) for t in clf.tokenizer.tokenize(chunk)
    }
    vocab = clf.tokenizer.get_vocab()
    return next(w for w in sorted(vocab) if w.isalpha() and len(w) > 3 and w not in used)


async def test_a_failing_note_costs_only_its_admission(
    tiny_model_dir: Path, notes: list[NoteRecord], tmp_path: Path
) -> None:
    loaded = load_model_folder(tiny_model_dir)
    word = unused_word(ChunkClassifier(loaded), notes)
    clf = FailsOnWord(loaded, word)
    bad = NoteRecord(110, 102, "Nursing", date(2150, 2, 2), None, (notes[1].text or "") + f" {word} " * 3)
    spec = ModelSpec()
    # a long wait and many notes in flight: the bad note shares its first batch with good ones
    async with InferenceEngine(clf, max_batch_size=64, max_wait_ms=50) as engine:
        run = await score_notes(engine, [*notes, bad], spec=spec, notes_in_flight=32)
    assert clf.failed_batches >= 2, "the bad note failed, and failed again on its own"
    assert set(run.failed) == {102}
    assert (run.failed[102].notes_failed, run.failed[102].subject_id) == (1, 110)
    assert "injected failure" in run.failed[102].error
    assert run.skipped["inference_failed"] == 1
    want = expected_scores(notes, spec, ChunkClassifier(loaded))
    assert {s.hadm_id for s in run.scores} == set(want) - {102}, "the other admissions keep exact scores"
    for s in run.scores:
        assert s.score == pytest.approx(want[s.hadm_id][0], abs=1e-6)
    with write_failures(run.failed, tmp_path / "scores.failed.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert [(r["HADM_ID"], r["SUBJECT_ID"], r["notes_failed"]) for r in rows] == [("102", "110", "1")]
    assert word not in rows[0]["error"], "no note text in the failure report"


async def test_time_windows_need_admission_times(tiny_model_dir: Path, notes: list[NoteRecord]) -> None:
    clf = ChunkClassifier(load_model_folder(tiny_model_dir))
    async with InferenceEngine(clf) as engine:
        with pytest.raises(ModelsError, match="--admissions"):
            await score_notes(engine, notes, spec=ModelSpec(window=Window(kind="days", value=3)))


def write_mimic_iii(folder: Path, notes: list[NoteRecord]) -> tuple[Path, Path]:
    folder.mkdir()
    adm = folder / "ADMISSIONS.csv"
    with adm.open("w", newline="") as f:
        w = csv.writer(f, quoting=csv.QUOTE_MINIMAL)
        w.writerow(["ROW_ID", "SUBJECT_ID", "HADM_ID", "ADMITTIME", "DISCHTIME", "ADMISSION_TYPE"])
        for i, (h, t) in enumerate(ADMIT.items()):
            w.writerow([i, 7 + h, h, t.strftime("%Y-%m-%d %H:%M:%S"), "", "EMERGENCY"])
    ne = folder / "NOTEEVENTS.csv"
    with ne.open("w", newline="") as f:
        w = csv.writer(f, quoting=csv.QUOTE_NONNUMERIC)
        w.writerow(
            [
                "ROW_ID",
                "SUBJECT_ID",
                "HADM_ID",
                "CHARTDATE",
                "CHARTTIME",
                "STORETIME",
                "CATEGORY",
                "DESCRIPTION",
                "CGID",
                "ISERROR",
                "TEXT",
            ]
        )
        for i, n in enumerate(notes):
            w.writerow(
                [
                    i + 1,
                    n.subject_id,
                    n.hadm_id if n.hadm_id is not None else "",
                    n.chart_date.isoformat() if n.chart_date else "",
                    n.chart_time.strftime("%Y-%m-%d %H:%M:%S") if n.chart_time else "",
                    "",
                    n.category,
                    "Report",
                    "",
                    "1" if n.is_error else "",
                    (n.text or "").replace(". ", ".\n", 3),
                ]
            )
    return adm, ne


def test_notestream_score_writes_the_per_admission_csv(
    tiny_model_dir: Path, notes: list[NoteRecord], tmp_path: Path
) -> None:
    model = Path(shutil.copytree(tiny_model_dir, tmp_path / "model"))
    spec = ModelSpec(window=Window(kind="hours", value=60))
    spec.write(model)
    adm, ne = write_mimic_iii(tmp_path / "mimic", notes)
    out = tmp_path / "scores.csv"
    _mount()
    result = CliRunner().invoke(
        app,
        [
            "score",
            "--model",
            str(model),
            "--notes",
            str(ne),
            "--admissions",
            str(adm),
            "--out",
            str(out),
            "--devices",
            "cpu",
        ],
    )
    assert result.exit_code == 0, result.output
    with out.open() as f:
        rows = list(csv.DictReader(f))
    assert tuple(rows[0]) == SCORE_COLUMNS
    clf = ChunkClassifier(load_model_folder(model))
    multiline = [
        NoteRecord(
            n.subject_id,
            n.hadm_id,
            n.category,
            n.chart_date,
            n.chart_time,
            (n.text or "").replace(". ", ".\n", 3),
            n.is_error,
        )
        for n in notes
    ]
    want = expected_scores(multiline, spec, clf)
    assert {int(r["HADM_ID"]) for r in rows} == set(want)
    got = np.array([float(r["score"]) for r in rows])
    assert got == pytest.approx([want[int(r["HADM_ID"])][0] for r in rows], abs=1e-6)
    assert [int(r["n_chunks"]) for r in rows] == [want[int(r["HADM_ID"])][1] for r in rows]


def test_import_legacy_command_explains_a_missing_vocabulary(tmp_path: Path) -> None:
    src = tmp_path / "release"
    src.mkdir()
    (src / "bert_config.json").write_text("{}")
    (src / "pytorch_model.bin").write_bytes(b"")
    _mount()
    result = CliRunner().invoke(app, ["model", "import-legacy", str(src), str(tmp_path / "out")])
    assert result.exit_code != 0
    assert "--vocab" in str(result.exception)


def test_mimic_iv_note_files_are_read_with_their_categories(tmp_path: Path) -> None:
    from notestream.mimic.notes import read_admit_times, read_notes

    path = tmp_path / "discharge.csv"
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(
            ["note_id", "subject_id", "hadm_id", "note_type", "note_seq", "charttime", "storetime", "text"]
        )
        w.writerow(["10-DS-1", 10, 20, "DS", 1, "2180-01-02 10:00:00", "", "Name: ___\nline, two"])
        w.writerow(["10-AD-2", 10, 20, "AD", 2, "2180-01-03 00:00:00", "", "addendum"])
        w.writerow(["11-RR-1", 11, "", "RR", 1, "2180-02-01 08:30:00", "", "chest x-ray"])
    notes = list(read_notes(path))
    assert [n.category for n in notes] == ["Discharge summary", "Discharge summary", "Radiology"]
    assert [n.hadm_id for n in notes] == [20, 20, None]
    assert [n.note_id for n in notes] == ["10-DS-1", "10-AD-2", "11-RR-1"], "the ids the replay uses"
    assert notes[0].text == "Name: ___\nline, two"
    assert notes[0].chart_time == datetime(2180, 1, 2, 10, 0)
    assert notes[0].chart_date == date(2180, 1, 2)
    adm = tmp_path / "admissions.csv"
    adm.write_text("subject_id,hadm_id,admittime\n10,20,2180-01-01 09:00:00\n11,,2180-02-01 00:00:00\n")
    assert read_admit_times(adm) == {20: datetime(2180, 1, 1, 9, 0)}


async def test_an_engine_failure_surfaces_as_itself(tiny_model_dir: Path, notes: list[NoteRecord]) -> None:
    from notestream.models.errors import EngineClosed

    engine = InferenceEngine(ChunkClassifier(load_model_folder(tiny_model_dir)))  # never started
    with pytest.raises(EngineClosed, match="start"):
        await score_notes(engine, notes, spec=ModelSpec(), admit_times=ADMIT)


async def test_revisions_and_retractions_count_as_in_the_stream(
    tiny_model_dir: Path, notes: list[NoteRecord]
) -> None:
    """Offline scoring follows the ledger: a higher revision replaces its note, a late lower one and a
    duplicate change nothing, and a retraction removes its note."""
    loaded = load_model_folder(tiny_model_dir)
    spec = ModelSpec()
    good = [n for n in notes if n.hadm_id == 101 and not n.is_error]
    first, second = good[0], good[1]
    events = [
        replace(first, note_id="a", revision=0),
        replace(second, note_id="a", revision=2),  # the edited note replaces it
        replace(first, note_id="a", revision=1),  # stale: arrives late
        replace(second, note_id="a", revision=2),  # duplicate
        replace(good[2], note_id="b"),
        replace(good[2], note_id="b", is_error=True),  # retracted
    ]
    async with InferenceEngine(ChunkClassifier(loaded)) as engine:
        run = await score_notes(engine, events, spec=spec)
    want = expected_scores([replace(second, note_id="a")], spec, ChunkClassifier(loaded))
    assert [(s.hadm_id, s.n_notes) for s in run.scores] == [(101, 1)]
    assert run.scores[0].score == pytest.approx(want[101][0], abs=1e-6)
    assert (run.skipped["stale"], run.skipped["duplicate"]) == (1, 1)
