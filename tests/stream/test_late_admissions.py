"""Late admissions through a worker process: notes that come before their admit count once the admit
arrives; a note whose admission never comes ends as an ``admission_unknown`` dead letter."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from notestream.core.settings import Settings
from notestream.core.topics import ADMISSIONS, NOTES, NOTES_DLQ, RISK_UPDATES
from notestream.stream.events import DeadLetter, admission_key
from tests.fixtures.kafka import WorkerProcess, produce, read_topic
from tests.stream.feed import feed, final_updates

pytestmark = pytest.mark.slow


def hours_window_model(tiny_model_dir: Path, folder: Path) -> Path:
    """A copy of the tiny model whose window is the first 48 hours (it needs each admit time)."""
    out = Path(shutil.copytree(tiny_model_dir, folder / "model"))
    spec = json.loads((out / "notestream.json").read_text())
    spec["window"] = {"kind": "hours", "value": 48}
    (out / "notestream.json").write_text(json.dumps(spec))
    return out


def test_notes_wait_for_a_late_admit_and_orphans_are_dead_lettered(
    kafka_settings: Settings,
    tiny_model_dir: Path,
    tmp_path: Path,
    start_worker: Callable[..., WorkerProcess],
) -> None:
    settings = kafka_settings.model_copy(
        update={
            "store": f"memory://{tmp_path / 'store.jsonl'}",
            "model_dir": hours_window_model(tiny_model_dir, tmp_path),
            "admission_wait_s": 12.0,  # long enough for the admit below to come within it
        }
    )
    admissions, notes = feed(3, 3, seed=21)
    late, known, orphan = admissions
    by = {a.hadm_id: [n for n in notes if n.hadm_id == a.hadm_id] for a in admissions}
    produce(settings, ADMISSIONS, [(admission_key(known.hadm_id), known.to_bytes())])
    produce(settings, NOTES, [(admission_key(n.hadm_id), n.to_bytes()) for n in notes])
    worker = start_worker(settings)

    def alive() -> bool:
        return worker.proc.poll() is None

    def scored(msgs: list[Any], hadm: int | str) -> bool:
        last = final_updates(msgs)
        return hadm in last and last[hadm].n_notes == len(by[hadm])

    # the known admission's notes flow while the others wait
    read_topic(settings, RISK_UPDATES, until=lambda m: scored(m, known.hadm_id), timeout_s=120, alive=alive)
    # the admit comes 10 minutes (event time) after the notes, within the wait
    lag = max(n.produced_at for n in by[late.hadm_id]) + timedelta(minutes=10)
    admit = late.model_copy(update={"produced_at": lag})
    produce(settings, ADMISSIONS, [(admission_key(late.hadm_id), admit.to_bytes())])
    updates = read_topic(
        settings, RISK_UPDATES, until=lambda m: scored(m, late.hadm_id), timeout_s=120, alive=alive
    )
    assert final_updates(updates)[late.hadm_id].n_notes == len(by[late.hadm_id])  # each note once
    letters = read_topic(settings, NOTES_DLQ, until=lambda m: len(m) >= len(by[orphan.hadm_id]), alive=alive)
    dead = [DeadLetter.from_bytes(m.value()) for m in letters]
    assert {d.reason for d in dead} == {"admission_unknown"}
    assert sorted(d.offset for d in dead if d.offset is not None) == sorted(
        m.offset()
        for m in read_topic(settings, NOTES, until=lambda m: len(m) >= len(notes))
        if m.key() == admission_key(orphan.hadm_id)
    )
    assert all(d.original == b"" and d.key == admission_key(orphan.hadm_id) for d in dead)  # no text held
    assert orphan.hadm_id not in final_updates(updates)
    assert "Traceback" not in worker.output()
