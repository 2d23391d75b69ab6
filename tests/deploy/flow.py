"""The whole flow, shared by the deploy integration tests: a synthetic MIMIC-III cohort written in the
real file format, replayed by :func:`notestream.stream.replay.replay` into Kafka, scored by worker processes into
Redis, and the final risk update of every admission compared with the offline score of its notes.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Collection
from pathlib import Path
from typing import Any

import pytest

from notestream.core.settings import Settings
from notestream.core.topics import RISK_UPDATES
from notestream.stream.events import NoteEvent, RiskUpdate
from notestream.stream.replay import ReplayCounts, ReplaySource, iter_events, replay
from tests.fixtures.kafka import read_topic
from tests.stream.feed import OfflineScorer, final_updates


def synthetic_cohort(folder: Path, n_patients: int = 5, seed: int = 7) -> ReplaySource:
    """ADMISSIONS and NOTEEVENTS of a small synthetic cohort, written as MIMIC-III files."""
    from notestream.training.synth import write_mimic_iii

    write_mimic_iii(folder, n_patients=n_patients, seed=seed, notes_scale=0.3, words_scale=0.3)
    return ReplaySource.mimic_iii(folder)


def cohort_notes(source: ReplaySource) -> list[NoteEvent]:
    """The notes the replay will send, in order."""
    return [event for _, _, _, event in iter_events(source) if isinstance(event, NoteEvent)]


def expected_scores(source: ReplaySource, model_dir: Path) -> dict[int, float]:
    """Offline score per admission, of the notes inside the model's window (admissions with a chunk)."""
    scores = OfflineScorer(model_dir).scores(cohort_notes(source))
    return {hadm: score for hadm, score in scores.items() if score is not None}


def run_replay(
    settings: Settings, source: ReplaySource, hadm_ids: Collection[int] | None = None, **filters: Any
) -> ReplayCounts:
    return asyncio.run(replay(settings, source, hadm_ids=hadm_ids, **filters))


def await_final_scores(
    settings: Settings,
    expected: dict[int, float],
    *,
    timeout_s: float,
    alive: Callable[[], bool] | None = None,
) -> dict[int, RiskUpdate]:
    """Read risk-updates until every expected admission's last update has its offline score."""

    def done(messages: list[Any]) -> bool:
        last = final_updates(messages)
        return all(
            h in last and last[h].score == pytest.approx(score, abs=1e-6) for h, score in expected.items()
        )

    messages = read_topic(settings, RISK_UPDATES, until=done, timeout_s=timeout_s, alive=alive)
    return final_updates(messages)


def assert_matches_offline(last: dict[int, RiskUpdate], expected: dict[int, float]) -> None:
    missing = sorted(set(expected) - set(last))
    assert not missing, f"no risk update for admissions {missing}"
    for hadm, score in expected.items():
        assert last[hadm].score == pytest.approx(score, abs=1e-6), f"admission {hadm}"


def create_topics_module() -> Any:
    """deploy/create_topics.py (a script, not a package module), loaded by path."""
    import importlib.util
    import sys

    name = "notestream_deploy_create_topics"
    if name in sys.modules:
        return sys.modules[name]
    path = Path(__file__).resolve().parents[2] / "deploy" / "create_topics.py"
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module
